"""avmigrate against the playbook a sysadmin would write by hand, on fresh uniform labs.

    python -m bench.lab [--sizes 8,24] [--forks 8] [--swap-hosts 8]

For each size: a fresh lab (../shared/anchors/uniform-scenario.yml: every host KESL 12 and
the Network Agent) migrated by the naive playbook (../shared/anchors/naive-migrate.yml,
`ansible-playbook -f FORKS`), then another fresh lab of the same size by `avmigrate run`
(one wave, make-before-break, `--forks FORKS`), each a command of its own. Every host of
both is then checked from inside (KESL and the agent gone, clamd running and detecting
EICAR). Printed: controller CPU seconds per migrated host (user + system of the command and
the children it waits for; avmigrate's count includes its ssh connection masters, reaped by
its step guard, the naive playbook's does not), wall time, and their ratios against the
targets. Then a fresh lab migrated by `avmigrate run --strategy swap` (in this process) for
its protection gaps against the replacement's install time on each host (its install
module's own figure). The machine's speed (a fixed Python loop) is printed before and after.
Needs root (the labs).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.core.models import StepResult
from orchestrator.execute.executor import RunnerExecutor
from orchestrator.execute.step import StepRequest
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabInfo
from orchestrator.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "anchors"
SCENARIO = Path(os.environ.get("AVMIGRATE_BENCH_SCENARIO", ANCHORS / "uniform-scenario.yml"))
NAIVE = Path(os.environ.get("AVMIGRATE_BENCH_NAIVE", ANCHORS / "naive-migrate.yml"))
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


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
    """Wraps RunnerExecutor.run_step to keep every step's results."""

    def __init__(self) -> None:
        self.results: list[tuple[str, dict[str, StepResult]]] = []
        self._original = RunnerExecutor.run_step

    def __enter__(self) -> Recorder:
        recorder = self

        def run_step(executor: RunnerExecutor, request: StepRequest, on_result: Any) -> Any:
            out = recorder._original(executor, request, on_result)
            recorder.results.append((request.step, out))
            return out

        RunnerExecutor.run_step = run_step  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        RunnerExecutor.run_step = self._original  # type: ignore[method-assign]


def speed() -> float:
    """Seconds of a fixed Python loop: this machine's speed at the moment."""
    t0 = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i % 7
    return time.perf_counter() - t0


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int, str]:
    """A command of its own; (wall s, CPU s of it and its waited-for children, exit code,
    the end of its output)."""
    cpu0, t0 = cpu_seconds(), time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    (cwd / "output.log").write_text(done.stdout + done.stderr)
    return wall, cpu, done.returncode, (done.stdout + done.stderr)[-600:]


def _env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def naive_run(info: LabInfo, work: Path, forks: int) -> tuple[float, float, int, str]:
    """The hand-written playbook as a sysadmin runs it (Ansible's defaults; the lab's
    inventory checks host keys against its known_hosts)."""
    playbook = str(Path(sys.executable).with_name("ansible-playbook"))
    return timed([playbook, "-f", str(forks), "-i", info.inventory, str(NAIVE)], work, _env())


def _policy(work: Path, hosts: int) -> Path:
    policy = work / "policy.yml"
    policy.write_text(f"waves:\n  canary: {hosts}\n")
    return policy


def _run_args(info: LabInfo, work: Path, forks: int, strategy: str, hosts: int) -> list[str]:
    return ["--state", str(work / "state.db"), "run", "-i", info.inventory, "--policy",
            str(_policy(work, hosts)), "--strategy", strategy, "--forks", str(forks),
            "--max-unprotected", str(hosts), "--yes", "--no-progress"]


def avmigrate_run(info: LabInfo, work: Path, forks: int, hosts: int
                  ) -> tuple[float, float, int, str]:
    """`avmigrate run`, one make-before-break wave of every host, as a command of its own."""
    avmigrate = str(Path(sys.executable).with_name("avmigrate"))
    env = {**_env(), "AVMIGRATE_ARTIFACTS": str(work / "artifacts")}
    return timed([avmigrate, *_run_args(info, work, forks, "make-before-break", hosts)],
                 work, env)


def swap_in_process(info: LabInfo, work: Path, forks: int, hosts: int
                    ) -> tuple[float, int, Recorder]:
    """`avmigrate run --strategy swap` in this process, every step's results kept."""
    from orchestrator.cli.main import cli  # noqa: PLC0415

    cwd = Path.cwd()
    os.chdir(work)
    try:
        with Recorder() as recorder:
            t0 = time.monotonic()
            try:
                cli.main(_run_args(info, work, forks, "swap", hosts), standalone_mode=False)
                code = 0
            except SystemExit as done:
                code = int(done.code or 0)
            wall = time.monotonic() - t0
    finally:
        os.chdir(cwd)
    return wall, code, recorder


def migrated_on_hosts(lab: Lab, info: LabInfo) -> int:
    """Hosts (looked at from inside each) where no Kaspersky package remains and clamd runs
    and detects the EICAR test string."""
    count = 0
    for host in info.hosts:
        left = lab.exec(host, ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n",
                               "kesl", "klnagent64"], check=False)
        gone = " installed" not in left.stdout
        running = lab.protection(host, ("clamav-daemon.service",))["clamav-daemon.service"]
        scan = lab.exec(host, ["sh", "-c", 'printf %s "$1" | clamdscan --no-summary -', "eicar",
                               EICAR.decode()], check=False)
        detects = scan.returncode == 1 and "FOUND" in scan.stdout
        count += bool(gone and running and detects)
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
    print(f"  {what:<66} {value:>14}  {target:<8} {verdict}", flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def compare(size: int, forks: int, base: Path) -> None:
    """The naive playbook, then avmigrate, each on a fresh lab of `size` hosts."""
    print(f"\n{size} hosts, forks {forks}", flush=True)
    runs: dict[str, tuple[float, float, int]] = {}
    for who in ("naive", "avmigrate"):
        lab, info, boot = fresh_lab(f"bn{who[:2]}", size)
        work = base / f"{who}-{size}"
        work.mkdir()
        if who == "naive":
            wall, cpu, code, tail = naive_run(info, work, forks)
        else:
            wall, cpu, code, tail = avmigrate_run(info, work, forks, size)
        done = migrated_on_hosts(lab, info)
        lab.down([])
        if code != 0:
            print(f"  {who} exit {code}: {tail}", flush=True)
        runs[who] = (wall, cpu, done)
        line(f"{who} (lab up in {boot:.0f} s): {done}/{size} migrated, exit {code}",
             f"{wall:.1f} s")
        line(f"  controller CPU {cpu:.1f} s, per migrated host", f"{cpu / max(done, 1):.2f} s")
    (n_wall, n_cpu, n_done), (a_wall, a_cpu, a_done) = runs["naive"], runs["avmigrate"]
    ratio = (a_cpu / max(a_done, 1)) / (n_cpu / max(n_done, 1))
    line("CPU per migrated host, avmigrate / naive", f"{ratio:.2f}", "<= 0.5",
         verdict(ratio <= 0.5))
    line("wall, avmigrate / naive", f"{a_wall / n_wall:.2f}", "<= 1", verdict(a_wall <= n_wall))
    line("hosts migrated by both (checked from inside)", f"{n_done}+{a_done}/{2 * size}", "",
         verdict(n_done == a_done == size))


def swap_gaps(size: int, forks: int, base: Path) -> None:
    """A swap run's protection gaps against the install time on each host."""
    lab, info, _ = fresh_lab("bnsw", size)
    work = base / "swap"
    work.mkdir()
    wall, code, recorder = swap_in_process(info, work, forks, size)
    done = migrated_on_hosts(lab, info)
    lab.down([])
    found = gaps(work)
    took = [float(r.data["install"]["seconds"]) for step, results in recorder.results
            if step.startswith("install-staged") for r in results.values()
            if isinstance(r.data.get("install"), dict)]
    print(f"\nswap, {size} hosts, forks {forks}", flush=True)
    line(f"avmigrate run --strategy swap: {done}/{size} migrated, exit {code}", f"{wall:.1f} s")
    if not found or not took:
        line("protection gaps / install times", "none recorded", "", "MISSED")
        return
    gap, install = statistics.median(found), statistics.median(took)
    line("protection gap per host (median, max)", f"{gap:.1f} s, {max(found):.1f} s")
    line("install, configure and start on the host (median, module's figure)",
         f"{install:.1f} s")
    line("gap - install time (medians)", f"{gap - install:.1f} s", "<= 2 s",
         verdict(gap <= install + 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,24")
    parser.add_argument("--forks", type=int, default=8)
    parser.add_argument("--swap-hosts", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.lab needs root (it builds labs); run `make bench` as root")
    if not NAIVE.is_file() or not SCENARIO.is_file():
        raise SystemExit(f"the anchors are missing ({NAIVE}, {SCENARIO}); set "
                         "AVMIGRATE_BENCH_NAIVE and AVMIGRATE_BENCH_SCENARIO")
    before = speed()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; speed loop {before:.2f} s before", flush=True)
    base = Path(tempfile.mkdtemp(prefix="avmigrate-labbench-"))
    for size in (int(x) for x in args.sizes.split(",") if x.strip()):
        compare(size, args.forks, base)
    if args.swap_hosts:
        swap_gaps(args.swap_hosts, args.forks, base)
    print(f"\nspeed loop {speed():.2f} s after (before: {before:.2f} s); work in {base}",
          flush=True)


if __name__ == "__main__":
    main()
