"""A lab migration by `avmigrate run` against bare `ansible-playbook`, on fresh labs.

    python -m bench.lab [--hosts 24] [--forks 10] [--max-unprotected 4]

1. Lab A (N hosts, KESL 12 and the Network Agent on each): the paramiko sweep against
   `ansible -m ping` (same hosts, same forks), then `avmigrate run` (make-before-break) as
   the command line does it, in this process, with every Ansible step it starts recorded.
2. Lab B, the same fleet fresh: the recorded steps replayed by bare `ansible-playbook`, one
   invocation per recorded step, same playbooks, inventory, variables, environment and
   forks, no orchestrator. Both labs are then checked by logging in to every host.
3. Lab C, fresh: `avmigrate run --strategy swap` for its protection gaps.

Wall time and controller CPU seconds (this process and its children: Ansible) are measured
around each migration only (not around building the labs). Needs root (the lab).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.execute.executor import RunnerExecutor
from orchestrator.execute.step import ExecConfig, StepRequest
from orchestrator.execute.stepfiles import close_masters, dump_unsafe, envvars
from orchestrator.execute.sweep import sweep
from orchestrator.inputs import inventory
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabInfo
from orchestrator.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "tests" / "integration" / "fleet_kesl.yml"


def cpu_seconds() -> float:
    """CPU of this process and its waited-for children. The labs' containers are children
    too (Lab.up runs here): those that ended are reaped first, so that their CPU never
    lands in a measured window; living ones are not counted until they end."""
    _reap()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Recorder:
    """Wraps RunnerExecutor.run_step to keep every step's request (and its forks)."""

    def __init__(self) -> None:
        self.steps: list[tuple[StepRequest, int]] = []
        self._original = RunnerExecutor.run_step

    def __enter__(self) -> Recorder:
        recorder = self

        def run_step(executor: RunnerExecutor, request: StepRequest, on_result: Any) -> Any:
            recorder.steps.append((request, executor.config.forks))
            return recorder._original(executor, request, on_result)

        RunnerExecutor.run_step = run_step  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        RunnerExecutor.run_step = self._original  # type: ignore[method-assign]


def avmigrate_run(info: LabInfo, work: Path, forks: int, strategy: str,
                  max_unprotected: int) -> tuple[float, float, int, Recorder]:
    """`avmigrate run` in this process; (wall s, CPU s, exit code, recorded steps)."""
    from orchestrator.cli.main import cli  # noqa: PLC0415

    args = ["--state", str(work / "state.db"), "run", "-i", info.inventory, "--yes",
            "--no-progress", "--forks", str(forks), "--strategy", strategy,
            "--max-unprotected", str(max_unprotected)]
    cwd = Path.cwd()
    os.chdir(work)
    try:
        with Recorder() as recorder:
            cpu0, t0 = cpu_seconds(), time.monotonic()
            try:
                cli.main(args, standalone_mode=False)
                code = 0
            except SystemExit as done:
                code = int(done.code or 0)
            wall, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    finally:
        os.chdir(cwd)
    return wall, cpu, code, recorder


def bare_replay(steps: list[tuple[StepRequest, int]], work: Path) -> tuple[float, float]:
    """The recorded steps by plain ansible-playbook; (wall s, CPU s)."""
    playbook = shutil.which("ansible-playbook") or str(
        Path(sys.executable).with_name("ansible-playbook"))
    config = ExecConfig()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    for index, (request, forks) in enumerate(steps):
        step_dir = work / f"{index:03d}-{request.step}"
        (step_dir / "tmp").mkdir(parents=True)
        inv = step_dir / "hosts.yml"
        inv.write_text(dump_unsafe({"all": {"hosts": {
            h.name: {**h.vars, **request.host_vars.get(h.name, {})} for h in request.hosts}}}))
        extra = step_dir / "extravars.json"
        extra.write_text(json.dumps(request.extravars))
        control = Path(tempfile.mkdtemp(prefix="avm-bare-", dir="/tmp"))
        env = {**os.environ, **envvars(config, step_dir, control)}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        done = subprocess.run(
            [playbook, "-i", str(inv), "-f", str(forks), "-e", f"@{extra}",
             *(["--check"] if request.check else []),
             str(config.playbook_dir / request.playbook)],
            env=env, capture_output=True, text=True, check=False)
        close_masters(control)  # as the executor does after each step
        shutil.rmtree(control, ignore_errors=True)
        (step_dir / "stdout").write_text(done.stdout)
        if done.returncode not in (0, 2, 4):  # 2/4: some host failed/unreachable, as in the run
            raise SystemExit(f"bare {request.step} failed ({done.returncode}): "
                             f"{done.stderr[-500:]}")
    return time.monotonic() - t0, cpu_seconds() - cpu0


def migrated_on_hosts(lab: Lab, info: LabInfo) -> int:
    """Hosts where KESL is gone and clamd runs (logged in to each)."""
    count = 0
    for host in info.hosts:
        kesl = lab.exec(host, ["dpkg-query", "-W", "-f", "${Status}", "kesl"], check=False)
        gone = "install ok installed" not in kesl.stdout
        if gone and lab.protection(host, ("clamav-daemon.service",))["clamav-daemon.service"]:
            count += 1
    return count


def gaps(work: Path) -> list[float]:
    store = SqliteStore(work / "state.db")
    try:
        return [g for r in store.all() if (g := r.gap_seconds) is not None]
    finally:
        store.close()


def fresh_lab(name: str, hosts: int) -> tuple[Lab, LabInfo, float]:
    lab = Lab(name)
    lab.down([])
    t0 = time.monotonic()
    info = lab.up(hosts, SCENARIO, [])
    return lab, info, time.monotonic() - t0


def line(what: str, value: str, target: str = "", verdict: str = "") -> None:
    print(f"  {what:<62} {value:>14}  {target:<12} {verdict}", flush=True)


def main() -> None:  # noqa: PLR0915 - the benchmark as one script, in the order it prints
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=24)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--max-unprotected", type=int, default=4)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.lab needs root (it builds a lab); run `make bench` as root")
    n = args.hosts
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {n} lab hosts, forks {args.forks}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="avmigrate-labbench-"))

    lab, info, boot = fresh_lab("bencha", n)
    print(f"\nlab A up in {boot:.0f} s", flush=True)
    hosts = inventory.load(Path(info.inventory)).hosts
    t0 = time.monotonic()
    found = sweep(hosts, workers=64)
    swept = time.monotonic() - t0
    ok = sum(r.ok for r in found)
    ansible = Path(sys.executable).with_name("ansible")
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_PIPELINING": "True"}
    t0 = time.monotonic()
    ping = subprocess.run([str(ansible), "all", "-i", info.inventory, "-m", "ping",
                           "-f", str(args.forks), "-o"], capture_output=True, text=True,
                          env=env, check=False)
    pinged = time.monotonic() - t0
    line(f"preflight sweep, paramiko ({ok}/{n} ok)", f"{swept:.2f} s")
    line(f"ansible -m ping, forks {args.forks} (rc {ping.returncode})", f"{pinged:.2f} s",
         "anchor")
    line("  sweep / ping", f"{swept / pinged:.3f}")

    work_a = base / "a"
    work_a.mkdir()
    wall_a, cpu_a, code_a, recorded = avmigrate_run(info, work_a, args.forks,
                                                    "make-before-break", args.max_unprotected)
    done_a = migrated_on_hosts(lab, info)
    gaps_a = gaps(work_a)
    lab.down([])
    line(f"avmigrate run, make-before-break (exit {code_a}, {done_a}/{n} migrated)",
         f"{wall_a:.1f} s")
    line("  controller CPU per host (avmigrate)", f"{cpu_a / n:.2f} s")
    line("  Ansible invocations recorded", f"{len(recorded.steps)}")

    lab, info, boot = fresh_lab("benchb", n)
    print(f"\nlab B up in {boot:.0f} s", flush=True)
    renamed = _retarget(recorded.steps, info)
    work_b = base / "b"
    work_b.mkdir()
    wall_b, cpu_b = bare_replay(renamed, work_b)
    done_b = migrated_on_hosts(lab, info)
    lab.down([])
    ratio = wall_a / wall_b
    line(f"bare ansible-playbook, same steps ({done_b}/{n} migrated)", f"{wall_b:.1f} s",
         "anchor")
    line("  controller CPU per host (bare)", f"{cpu_b / n:.2f} s")
    line("  wall time avmigrate / bare", f"{ratio:.3f}", "<= 1.05",
         "ok" if ratio <= 1.05 else "MISSED")
    line("  protection gap per host, make-before-break (median, max)",
         f"{statistics.median(gaps_a):.0f} s, {max(gaps_a):.0f} s" if gaps_a else "none")

    lab, info, boot = fresh_lab("benchc", n)
    print(f"\nlab C up in {boot:.0f} s", flush=True)
    work_c = base / "c"
    work_c.mkdir()
    wall_c, cpu_c, code_c, _ = avmigrate_run(info, work_c, args.forks, "swap",
                                             args.max_unprotected)
    done_c = migrated_on_hosts(lab, info)
    gaps_c = gaps(work_c)
    lab.down([])
    line(f"avmigrate run, swap, K={args.max_unprotected} (exit {code_c}, {done_c}/{n} "
         "migrated)", f"{wall_c:.1f} s")
    line("  controller CPU per host (swap)", f"{cpu_c / n:.2f} s")
    line("  protection gap per host, swap (median, max)",
         f"{statistics.median(gaps_c):.0f} s, {max(gaps_c):.0f} s" if gaps_c else "none")
    shutil.rmtree(base, ignore_errors=True)


def _retarget(steps: list[tuple[StepRequest, int]], info: LabInfo
              ) -> list[tuple[StepRequest, int]]:
    """The recorded steps with lab A's hosts swapped for lab B's (same positions)."""
    fresh = {h.name: h for h in inventory.load(Path(info.inventory)).hosts}
    order = sorted(fresh)
    out = []
    for request, forks in steps:
        hosts = tuple(fresh[_peer(h.name, order)] for h in request.hosts)
        host_vars = {_peer(k, order): v for k, v in request.host_vars.items()}
        out.append((StepRequest(request.step, request.playbook, hosts, request.extravars,
                                host_vars, request.check), forks))
    return out


def _peer(name: str, order: list[str]) -> str:
    """Lab A's host i is lab B's host i: names end in the same number."""
    suffix = name.rsplit("-", 1)[-1]
    for candidate in order:
        if candidate.rsplit("-", 1)[-1] == suffix:
            return candidate
    raise SystemExit(f"no host in lab B matches {name}")


if __name__ == "__main__":
    main()
