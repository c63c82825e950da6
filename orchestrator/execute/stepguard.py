"""No step outlives its run: every ansible-playbook a run starts dies with the run.

ansible-runner starts `ansible-playbook` in a pty session of its own, so a crash of the
orchestrator (the OOM killer, a lost terminal, SIGKILL) would leave the step running on,
changing hosts while the next run re-probes them and acts. So the executor puts a guard in
front of it on PATH: a small program that makes itself the step's subreaper, asks the kernel
to signal it when the orchestrator dies (PR_SET_PDEATHSIG, and a once-a-second check of its
parent as a second line), and then kills every process of the step. It does the same when the
orchestrator stays stopped (Ctrl-Z, SIGSTOP) for STOPPED_LIMIT_S: a stopped run renews no
lease, and its step must end before the lease expires and another operator takes the hosts.
It records itself in a registry, so that a later run on this machine that finds a dead run's
step still alive (its guard could not act) ends it, and says so, before it re-probes the
hosts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core import procs
from orchestrator.core.errors import ExecutionError

# A step of an orchestrator stopped this long is ended: below half of a lease's life (30 s),
# after which renewals count as failed.
STOPPED_LIMIT_S = 10.0

# The guard, self-contained (standard library only): it must start fast and need nothing of
# ours, so the tree-ending functions of core.procs are written into it (`{procs}`). It runs
# as `ansible-playbook`; the real one is named in its environment.
_GUARD = r'''#!{python}
"""avmigrate's step guard: runs ansible-playbook and ends its whole tree if avmigrate dies."""
{procs}
import ctypes, json, os, signal, sys, threading, time

real = os.environ.pop("AVMIGRATE_REAL_ANSIBLE_PLAYBOOK")
registry = os.environ.pop("AVMIGRATE_STEP_REGISTRY")
owner, owner_start = (int(x) for x in os.environ.pop("AVMIGRATE_STEP_OWNER").split(":"))
state = os.environ.pop("AVMIGRATE_STEP_STATE", "")
machine = os.environ.pop("AVMIGRATE_STEP_MACHINE", "")
step = os.environ.pop("AVMIGRATE_STEP_NAME", "")
me = os.getpid()
record = os.path.join(registry, f"{{me}}.json")
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of the step stay below us
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: told when avmigrate dies


def started(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def end(*_):
    kill_below(me)  # procs.script_source()'s, as every tree avmigrate ends
    try:
        os.unlink(record)
    except OSError:
        pass
    os._exit(137)


def orphaned():
    return os.getppid() != owner or started(owner) not in (0, owner_start)


signal.signal(signal.SIGTERM, end)
if orphaned():
    end()
info = {{"pid": me, "start": started(me), "owner": owner, "owner_start": owner_start,
        "state": state, "machine": machine, "step": step, "child": 0, "child_start": 0}}
os.makedirs(registry, mode=0o700, exist_ok=True)
with open(record + ".tmp", "w") as fh:
    json.dump(info, fh)
os.replace(record + ".tmp", record)
child = os.fork()
if child == 0:
    os.execv(real, [real, *sys.argv[1:]])
info.update(child=child, child_start=started(child))
with open(record + ".tmp", "w") as fh:
    json.dump(info, fh)
os.replace(record + ".tmp", record)


def stopped():
    try:
        with open(f"/proc/{{owner}}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def watch():
    since = None
    while True:
        time.sleep(1)
        if orphaned():
            end()
        # An orchestrator stopped (Ctrl-Z, SIGSTOP) renews no lease: end its step before the
        # lease could expire and another operator take these hosts.
        if not stopped():
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since > {stopped_limit}:
            end()


threading.Thread(target=watch, daemon=True).start()
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        status = 0
        break
    if pid == child:
        break
try:
    os.unlink(record)
except OSError:
    pass
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
'''


def run_dir() -> Path:
    """Where this user's runs keep their guard and step registry, private to the user, and
    the same for every session of the user (root: /run/avmigrate, gone at reboot as the
    processes it names are; other users: under their home directory, since XDG_RUNTIME_DIR
    differs between cron, ssh and su sessions and is removed at the user's last logout).
    Registry entries name their machine's boot, so those of an earlier boot are judged dead."""
    given = os.environ.get("AVMIGRATE_RUN_DIR")
    if given:
        base = Path(given)
    elif os.geteuid() == 0:
        base = Path("/run/avmigrate")
    else:
        base = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "avmigrate" / "run"
    return _private(base)


def _private(path: Path) -> Path:
    """`path`, a directory of this user's that nobody else may write (made if missing): the
    guard run from it is handed the run's secrets, and its registry decides what is killed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ExecutionError(f"{path} is not a private directory of this user (a symlink, "
                             "another owner, or open to others); remove it and run again")
    return path


def registry() -> Path:
    return _private(run_dir() / "steps")


def state_key(state: str) -> str:
    """One state, however it is named: an absolute file path, or a URL without password."""
    if "://" in state:
        import re  # noqa: PLC0415

        text = re.sub(r"(://[^:/@]*):[^@]*@", r"\1@", state)
    else:
        text = str(Path(state).resolve())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Guard:
    """The guard program on PATH, and what each step's environment tells it."""

    bindir: Path
    state: str

    @classmethod
    def install(cls, state: str) -> Guard:
        text = _GUARD.format(python=sys.executable, stopped_limit=STOPPED_LIMIT_S,
                             procs=procs.script_source())
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        bindir = _private(run_dir() / f"guard-{digest}")
        # Written afresh every time (atomically): what runs is always our own text.
        tmp = bindir / f".ansible-playbook.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        tmp.replace(bindir / "ansible-playbook")
        return cls(bindir, state)

    def ready(self) -> Guard:
        """This guard, or a new one if its program is gone (a directory cleaned up while the
        run went on): no step may start without its guard in front of it."""
        if (self.bindir / "ansible-playbook").is_file():
            return self
        return Guard.install(self.state)

    def env(self, real: str, step: str) -> dict[str, str]:
        me = os.getpid()
        return {
            "PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "AVMIGRATE_REAL_ANSIBLE_PLAYBOOK": real,
            "AVMIGRATE_STEP_REGISTRY": str(registry()),
            "AVMIGRATE_STEP_OWNER": f"{me}:{procs.start_ticks(me)}",
            "AVMIGRATE_STEP_STATE": self.state,
            "AVMIGRATE_STEP_MACHINE": procs.machine_identity(),
            "AVMIGRATE_STEP_NAME": step,
        }


def _kill_tree(pid: int, started: int) -> bool:
    """SIGKILL a process (if it is still the one that started then) and all below it."""
    if not procs.alive(pid, started):
        return False
    procs.kill_tree(pid)
    return True


def end_orphans(state: str, log: Callable[[str], None]) -> list[str]:
    """End the step processes dead runs of this state left on this machine; say which."""
    ended = []
    here = procs.machine_identity()
    for path in sorted(registry().glob("*.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            pid, start = int(info["pid"]), int(info["start"])
            child, child_start = int(info.get("child", 0)), int(info.get("child_start", 0))
            owner, owner_start = int(info["owner"]), int(info["owner_start"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if info.get("machine") != here or info.get("state") != state:
            continue
        if procs.alive(owner, owner_start):
            continue  # a live run's step
        killed = _kill_tree(pid, start)
        killed = (_kill_tree(child, child_start) if child else False) or killed
        if killed:
            what = (f"step {info.get('step') or '?'} (pid {child or pid}) of a dead run "
                    f"(pid {owner})")
            ended.append(what)
            log(f"ended {what}, still running, before re-probing its hosts")
        with contextlib.suppress(OSError):
            path.unlink()
    if ended:
        time.sleep(0.2)  # let the kernel reap them before their hosts are probed
    return ended
