"""Case 13 of issue 12: no step outlives its run.

Real processes: an orchestrator process runs a real step (ansible-runner, ansible-playbook, a
task that sleeps on this machine through Ansible's local connection), and is then killed with
SIGKILL, alone, as the OOM killer or a lost terminal would. No process of the step may live on.
If the step's guard itself could not act, the next run of the same state ends what is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core import procs

ORCHESTRATOR = '''
import dataclasses, sys
from pathlib import Path
from orchestrator.execute.executor import ExecConfig, RunnerExecutor, StepRequest
from orchestrator.core.models import InventoryHost
work, key = Path(sys.argv[1]), sys.argv[2]
fields = {f.name for f in dataclasses.fields(ExecConfig)}
config = ExecConfig(playbook_dir=work / "playbooks", artifacts_dir=work / "artifacts",
                    **({"state_key": key} if "state_key" in fields else {}))
host = InventoryHost("localhost", ("all",), {"ansible_connection": "local",
                                            "ansible_python_interpreter": sys.executable})
RunnerExecutor(config).run_step(StepRequest("sleep", "sleep.yml", (host,), {}, {}),
                                lambda result: print("result:", result.outcome.value,
                                                     result.message, flush=True))
'''


@pytest.fixture
def step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str, str]]:
    """A work directory with a playbook that sleeps for a marked number of seconds."""
    marker = f"777.{random.randrange(10**6):06d}"
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "sleep.yml").write_text(json.dumps([{
        "hosts": "all", "gather_facts": False,
        "tasks": [{"name": "Sleep", "ansible.builtin.command": {"argv": ["sleep", marker]},
                   "changed_when": False}]}]))
    run_dir = tmp_path / "run"
    monkeypatch.setenv("AVMIGRATE_RUN_DIR", str(run_dir))
    yield tmp_path, marker, f"teststate-{random.randrange(10**9)}"
    for pid in holding(marker, tmp_path):  # never leave one behind, whatever happened
        os.kill(pid, signal.SIGKILL)


def holding(marker: str, work: Path) -> list[int]:
    """Processes of the step: the sleeping task, and anything running our playbook."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd or str(work / "playbooks") in cmd:
            found.append(int(p.name))
    return found


def start(work: Path, key: str, out: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(work), key], env=env,
                            stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout:.0f}s")


def sleeping(marker: str) -> bool:
    return any(marker in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
               for p in holding(marker, Path("/nonexistent")) if Path(f"/proc/{p}").exists())


def test_a_step_dies_with_its_orchestrator_killed_alone(step: tuple[Path, str, str]) -> None:
    work, marker, key = step
    orchestrator = start(work, key)
    try:
        wait_for(lambda: sleeping(marker), 90, "the step's task did not start")
        assert holding(marker, work)
    finally:
        orchestrator.send_signal(signal.SIGKILL)  # the orchestrator alone, not its group
        orchestrator.wait(timeout=30)
    wait_for(lambda: not holding(marker, work), 10,
             "the step's processes outlived the orchestrator")


def test_a_step_of_a_stopped_orchestrator_ends_before_its_lease_could_expire(
        step: tuple[Path, str, str]) -> None:
    """Ctrl-Z or SIGSTOP: the orchestrator renews no lease while stopped, so its step must
    not go on changing hosts another operator may take over once the lease expired."""
    from orchestrator.execute import stepguard  # noqa: PLC0415

    work, marker, key = step
    orchestrator = start(work, key, subprocess.PIPE)
    try:
        wait_for(lambda: sleeping(marker), 90, "the step's task did not start")
        orchestrator.send_signal(signal.SIGSTOP)
        time.sleep(stepguard.STOPPED_LIMIT_S / 2)
        assert holding(marker, work), "the step ended long before its limit"
        wait_for(lambda: not holding(marker, work), stepguard.STOPPED_LIMIT_S + 5,
                 "the step of a stopped orchestrator went on")
        # Continued, the orchestrator finds the step ended: the host's outcome is unknown
        # (to be re-probed), not a failure that would say nothing was done.
        orchestrator.send_signal(signal.SIGCONT)
        out, _ = orchestrator.communicate(timeout=60)
        assert b"result: unknown" in out, out
    finally:
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.send_signal(signal.SIGCONT)
        orchestrator.wait(timeout=30)


def test_a_later_run_ends_a_step_its_guard_could_not(step: tuple[Path, str, str]) -> None:
    from orchestrator.execute import stepguard  # noqa: PLC0415

    work, marker, key = step
    orchestrator = start(work, key)
    try:
        wait_for(lambda: sleeping(marker), 90, "the step's task did not start")
        records = list(stepguard.registry().glob("*.json"))
        assert len(records) == 1, records
        info = json.loads(records[0].read_text())
        assert info["owner"] == orchestrator.pid and info["state"] == key
        assert info["child"] and procs.alive(info["child"], info["child_start"])
        os.kill(info["pid"], signal.SIGKILL)  # the guard is gone: it cannot act
    finally:
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait(timeout=30)
    time.sleep(2)
    assert sleeping(marker), "the step should still run: its guard was killed first"
    said: list[str] = []
    assert stepguard.end_orphans("another-state", said.append) == []  # not ours to end
    ended = stepguard.end_orphans(key, said.append)
    assert len(ended) == 1 and f"of a dead run (pid {orchestrator.pid})" in ended[0], said
    assert said and "before re-probing its hosts" in said[0]
    wait_for(lambda: not holding(marker, work), 10, "the orphaned step was not ended")
    assert not list(stepguard.registry().glob("*.json"))


def test_a_live_runs_step_is_left_alone(step: tuple[Path, str, str]) -> None:
    from orchestrator.execute import stepguard  # noqa: PLC0415

    work, marker, key = step
    orchestrator = start(work, key)
    try:
        wait_for(lambda: sleeping(marker), 90, "the step's task did not start")
        assert stepguard.end_orphans(key, lambda _m: None) == []
        assert sleeping(marker)
    finally:
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait(timeout=30)
    wait_for(lambda: not holding(marker, work), 10, "the step outlived its orchestrator")


def test_the_guard_passes_the_steps_exit_status_through(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.execute import stepguard  # noqa: PLC0415

    monkeypatch.setenv("AVMIGRATE_RUN_DIR", str(tmp_path / "run"))
    fake = tmp_path / "real-playbook"
    fake.write_text("#!/bin/sh\necho \"args: $*\"\nexit 3\n")
    fake.chmod(0o755)
    guard = stepguard.Guard.install("k")
    env = dict(os.environ) | guard.env(str(fake), "demo")
    done = subprocess.run(["ansible-playbook", "-i", "x", "play.yml"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 3
    assert done.stdout.strip() == "args: -i x play.yml"
    assert not list(stepguard.registry().glob("*.json"))  # it cleaned up after itself


def test_a_guard_directory_others_could_write_is_refused(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard runs as the operator and is handed the run's secrets: it is never taken from
    a directory another user could have planted it in."""
    from orchestrator.core.errors import ExecutionError  # noqa: PLC0415
    from orchestrator.execute import stepguard  # noqa: PLC0415

    shared = tmp_path / "run"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("AVMIGRATE_RUN_DIR", str(shared))
    with pytest.raises(ExecutionError, match="not a private directory"):
        stepguard.Guard.install("k")
    shared.chmod(0o700)
    planted = shared / "elsewhere"
    planted.mkdir()
    (shared / "steps").symlink_to(planted)
    with pytest.raises(ExecutionError, match="not a private directory"):
        stepguard.registry()
    guard = stepguard.Guard.install("k")
    program = guard.bindir / "ansible-playbook"
    program.write_text("#!/bin/sh\necho planted\n")
    assert "planted" not in stepguard.Guard.install("k").bindir.joinpath(
        "ansible-playbook").read_text()  # rewritten before every use


def test_a_guard_cleaned_away_mid_run_is_put_back_before_the_next_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.execute import stepguard  # noqa: PLC0415

    monkeypatch.setenv("AVMIGRATE_RUN_DIR", str(tmp_path / "run"))
    guard = stepguard.Guard.install("somestate")
    program = guard.bindir / "ansible-playbook"
    assert guard.ready() is guard
    program.unlink()  # a tmp cleaner, a logout removing the user's runtime directory
    again = guard.ready()
    assert (again.bindir / "ansible-playbook").is_file()
    assert again.env("/usr/bin/ansible-playbook", "x")["PATH"].startswith(str(again.bindir))


def test_a_users_run_directory_is_the_same_in_every_session(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from orchestrator.execute import stepguard  # noqa: PLC0415

    monkeypatch.delenv("AVMIGRATE_RUN_DIR", raising=False)
    first = stepguard.run_dir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent/session-2")
    monkeypatch.setenv("HOME", "/nonexistent/home")
    assert stepguard.run_dir() == first
