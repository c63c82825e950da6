"""Planning and state at scale: synthetic inventories of 1k, 10k and 100k hosts.

Prints each figure beside its target, with the anchor figures (Ansible's own inventory
loader on the same files) measured in the same run. No host is contacted: the state is
filled as a discovery of that many hosts would fill it.

    python -m bench.scale [--sizes 1000,10000,100000] [--no-anchor]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.core.models import BannedFinding, HostFacts, HostState
from orchestrator.inputs import inventory
from orchestrator.store.records import Move
from orchestrator.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
SITES = 50


def host_name(i: int) -> str:
    return f"ws-{i:06d}.site{i % SITES:02d}.agency.example"


def write_ini(path: Path, n: int) -> None:
    """An agency-shaped INI inventory: sites, workstations and servers, a few variables."""
    lines = ["[all:vars]", "ansible_user=avmigrate", "ansible_become=true", ""]
    by_site: dict[int, list[str]] = {}
    for i in range(n):
        by_site.setdefault(i % SITES, []).append(
            f"{host_name(i)} ansible_host=10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
    for site, hosts in by_site.items():
        lines += [f"[site{site:02d}]", *hosts, "", f"[site{site:02d}:vars]",
                  f"avmigrate_site=site{site:02d}", ""]
    lines += ["[workstations:children]", *[f"site{s:02d}" for s in range(SITES) if s % 5],
              "", "[servers:children]", *[f"site{s:02d}" for s in range(SITES) if not s % 5],
              ""]
    path.write_text("\n".join(lines))


def write_yaml(path: Path, n: int) -> None:
    out = ["all:", "  vars:", "    ansible_user: avmigrate", "    ansible_become: true",
           "  children:"]
    for role, keep in (("workstations", lambda s: s % 5), ("servers", lambda s: not s % 5)):
        out += [f"    {role}:", "      children:"]
        for site in (s for s in range(SITES) if keep(s)):
            out += [f"        site{site:02d}:", "          vars:",
                    f"            avmigrate_site: site{site:02d}", "          hosts:"]
            out += [f"            {host_name(i)}: {{ansible_host: "
                    f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}}}"
                    for i in range(site, n, SITES)]
    path.write_text("\n".join(out) + "\n")


KESL = BannedFinding("kesl", "12.1.0.1297", "2024-09-27", ("kesl",), ("kesl.service",), 2)


ESTATE_GROUPS = 300  # a few hundred groups: sites and the roles within them
ESTATE_HOST_FILES = 2000  # hosts with a host_vars/ file of their own


def write_estate(root: Path, n: int) -> Path:
    """An agency-shaped estate: hosts.ini (aliases, sites and roles, a few hundred groups),
    group_vars/all.yml, a group_vars file per group (a directory for some), host_vars/ for
    some hosts. Returns the inventory file."""
    (root / "group_vars").mkdir(parents=True)
    (root / "host_vars").mkdir()
    by_group: dict[int, list[str]] = {}
    for i in range(n):
        by_group.setdefault(i % ESTATE_GROUPS, []).append(f"{host_name(i)}")
    lines = []
    for g, hosts in by_group.items():
        lines += [f"[grp-{g:03d}]", *hosts, ""]
    lines += ["[linux-servers:children]", *[f"grp-{g:03d}" for g in range(ESTATE_GROUPS)
                                           if g % 3], "",
              "[workstations:children]", *[f"grp-{g:03d}" for g in range(ESTATE_GROUPS)
                                          if not g % 3], ""]
    inv = root / "hosts.ini"
    inv.write_text("\n".join(lines))
    (root / "group_vars" / "all.yml").write_text(
        "ansible_user: avmigrate\nansible_become: true\nntp: ntp.agency.example\n")
    for g in range(ESTATE_GROUPS):
        body = f"site: site{g:03d}\nansible_port: {22 if g % 7 else 2222}\n"
        if g % 10 == 0:
            (root / "group_vars" / f"grp-{g:03d}").mkdir()
            (root / "group_vars" / f"grp-{g:03d}" / "main.yml").write_text(body)
            (root / "group_vars" / f"grp-{g:03d}" / "extra.yml").write_text("tier: gold\n")
        else:
            (root / "group_vars" / f"grp-{g:03d}.yml").write_text(body)
    for i in range(0, n, max(1, n // ESTATE_HOST_FILES)):
        (root / "host_vars" / f"{host_name(i)}.yml").write_text(
            f"ansible_host: 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}\n")
    return inv


def ansible_inventory_list(path: Path) -> tuple[float, int]:
    """Seconds for `ansible-inventory --list` (hosts with their group_vars/host_vars)."""
    command = str(Path(sys.executable).with_name("ansible-inventory"))
    start = time.perf_counter()
    done = subprocess.run([command, "-i", str(path), "--list"], check=True,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, len(json.loads(done.stdout)["_meta"]["hostvars"])


def bench_estate(n: int, work: Path, report: Report, anchor: bool) -> None:
    """The same checks on an estate with group_vars/ and host_vars/."""
    print(f"\n{n} hosts, estate with group_vars/ and host_vars/ ({ESTATE_GROUPS} groups, "
          f"{min(n, ESTATE_HOST_FILES)} host files)", flush=True)
    inv = write_estate(work / f"estate-{n}", n)
    big = n >= 100_000
    loads = sorted((timed(lambda: inventory.load(inv)) for _ in range(3)),
                   key=lambda t: float(t[0]))
    seconds, loaded = loads[1]
    if len(loaded.hosts) != n:
        raise SystemExit(f"{inv}: loaded {len(loaded.hosts)} hosts, wrote {n}")
    report.add("load estate (avmigrate's loader; median of 3)", f"{seconds:.2f} s", "",
               f"{loads[0][0]:.2f}-{loads[-1][0]:.2f} s")
    state = work / f"estate-state-{n}.db"
    store = SqliteStore(state)
    names = [host_name(i) for i in range(n)]
    store.ensure_hosts(names)
    store.apply(discovered_moves(names), None)
    store.close()
    plans = sorted(run_cli(["--state", str(state), "plan", "-i", str(inv), "--no-discover",
                            "--out", str(work / f"estate-plan-{n}")]) for _ in range(3))
    wall = plans[1][0]
    report.add("plan --no-discover of the estate (whole command; median of 3)",
               f"{wall:.2f} s", "<= 3 s" if big else "", check(wall, 3) if big else "")
    report.add("  plan peak memory (RSS, highest of the 3)", f"{max(p[1] for p in plans):.0f} MB",
               "<= 300 MB" if big else "", check(max(p[1] for p in plans), 300) if big else "")
    if not anchor:
        return
    theirs, count = ansible_load(inv)
    report.add("  Ansible's InventoryManager alone (no group_vars read)", f"{theirs:.2f} s",
               "anchor")
    listed, count = ansible_inventory_list(inv)
    if count != n:
        raise SystemExit(f"{inv}: ansible-inventory listed {count} hosts, wrote {n}")
    report.add("  ansible-inventory --list (Ansible's load of the estate)", f"{listed:.2f} s",
               "anchor")
    report.add("  ratio plan / ansible-inventory --list", f"{wall / listed:.3f}",
               "<= 0.1" if big else "", check(wall / listed, 0.1) if big else "")
    report.add("  ratio plan / InventoryManager alone", f"{wall / theirs:.3f}", "", "")


def facts_of(i: int) -> HostFacts:
    """Host i's discovery: 9 in 10 have KESL; every host has its own free-space figures."""
    return HostFacts(
        os_family="Debian", distribution="Debian", distribution_version="12.11",
        banned=() if i % 10 == 9 else (KESL,), replacement_installed=i % 10 == 9,
        replacement_active=i % 10 == 9,
        free_mb={"/var/cache/apt/archives": 300 + (i * 7919) % 20000,
                 "/var/lib": 1000 + (i * 104729) % 90000})


def discovered_moves(names: list[str]) -> list[Move]:
    """What a discovery records."""
    return [Move(n, HostState.CLEAN if i % 10 == 9 else HostState.PENDING, "discovered",
                 facts=facts_of(i)) for i, n in enumerate(names)]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# Runs one avmigrate command and reports its wall time, peak memory and exit code. It is a
# small process of its own: a process started straight from this one (which holds 100k
# records by then) inherits this one's memory high-water mark through vfork and exec, and
# reports it as its own peak (Linux keeps ru_maxrss across exec). The command's own child
# processes are counted: wait4 gives the peak of the command and its children.
_LAUNCHER = """\
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "orchestrator", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - start} {usage.ru_maxrss} "
              f"{os.waitstatus_to_exitcode(status)}")
"""


def run_cli(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of one avmigrate command in its own process."""
    with tempfile.NamedTemporaryFile("r", prefix="avmigrate-bench-", suffix=".txt") as result:
        done = subprocess.run([sys.executable, "-c", _LAUNCHER, result.name, *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        figures = result.read().split()
    if len(figures) != 3:
        raise SystemExit(f"avmigrate {' '.join(args)}: no figures ({done.stderr.decode()})")
    wall, rss_kb, code = float(figures[0]), int(figures[1]), int(figures[2])
    if code in (1, 2) or code < 0:  # 3-5 report host states
        raise SystemExit(f"avmigrate {' '.join(args)} failed ({code}): "
                         f"{done.stderr.decode()}")
    return wall, rss_kb / 1024, code


def ansible_load(path: Path) -> tuple[float, int]:
    """Seconds for Ansible's InventoryManager to load `path` (in a fresh process)."""
    code = ("import sys,time; from ansible.inventory.manager import InventoryManager; "
            "from ansible.parsing.dataloader import DataLoader; t=time.perf_counter(); "
            "m=InventoryManager(loader=DataLoader(), sources=[sys.argv[1]]); "
            "print(time.perf_counter()-t, len(m.get_hosts()))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                          capture_output=True, text=True)
    seconds, hosts = done.stdout.split()
    return float(seconds), int(hosts)


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, value: str, target: str = "", verdict: str = "") -> None:
        self.rows.append((what, value, target, verdict))
        print(f"  {what:<58} {value:>12}  {target:<14} {verdict}", flush=True)


def calibrate() -> float:
    """Seconds for a fixed loop of dict and str work, fastest of 3: a shared virtual machine
    runs the same code up to 1.6 times slower at some moments than at others."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        table = {i: str(i) for i in range(1_000_000)}
        sum(len(v) for v in table.values())
        best = min(best, time.perf_counter() - start)
    return best


def check(value: float, limit: float) -> str:
    return "ok" if value <= limit else "MISSED"


def bench_size(n: int, work: Path, report: Report, anchor: bool) -> None:
    print(f"\n{n} hosts", flush=True)
    ini, yml = work / f"fleet-{n}.ini", work / f"fleet-{n}.yml"
    write_ini(ini, n)
    write_yaml(yml, n)
    big = n >= 100_000
    for path, label in ((ini, "INI"), (yml, "YAML")):
        loads = sorted((timed(lambda p=path: inventory.load(p)) for _ in range(3)),
                       key=lambda t: t[0])
        seconds, inv = loads[1]
        if len(inv.hosts) != n:
            raise SystemExit(f"{path}: loaded {len(inv.hosts)} hosts, wrote {n}")
        report.add(f"load {label} inventory (avmigrate's loader; median of 3)",
                   f"{seconds:.2f} s", "", f"{loads[0][0]:.2f}-{loads[-1][0]:.2f} s")
        if anchor and (label == "INI" or n <= 10_000):
            theirs, count = ansible_load(path)
            if count != n:
                raise SystemExit(f"{path}: Ansible loaded {count} hosts, wrote {n}")
            ratio = seconds / theirs
            report.add(f"load {label} inventory (Ansible's InventoryManager)", f"{theirs:.2f} s",
                       "anchor")
            report.add(f"  ratio avmigrate / Ansible ({label})", f"{ratio:.3f}",
                       "<= 0.1" if big else "", check(ratio, 0.1) if big else "")

    state = work / f"state-{n}.db"
    store = SqliteStore(state)
    names = [host_name(i) for i in range(n)]
    store.ensure_hosts(names)
    moves = discovered_moves(names)
    seconds, _ = timed(lambda: store.apply(moves, None))
    report.add(f"record {n} transitions, one transaction", f"{seconds:.2f} s",
               "<= 5 s" if big else "", check(seconds, 5) if big else "")
    per_host = min(n, 2000)
    seconds, _ = timed(lambda: [store.transition(names[i], HostState.BLOCKED, "bench", None)
                                for i in range(per_host)])
    report.add(f"  one transaction per transition (x{per_host}, synchronous=FULL)",
               f"{seconds / per_host * 1000:.2f} ms", "", "per transition")
    store.apply([Move(names[i], HostState.PENDING, "bench") for i in range(per_host)], None)
    store.close()

    out = work / f"plan-{n}"
    plans = sorted(run_cli(["--state", str(state), "plan", "-i", str(ini), "--no-discover",
                            "--out", str(out)]) for _ in range(3))
    wall, rss = plans[1][0], max(p[1] for p in plans)
    report.add("plan (INI, whole command, own process; median of 3)", f"{wall:.2f} s",
               "<= 3 s" if big else "", check(wall, 3) if big else "")
    report.add("  plan, fastest and slowest of the 3", f"{plans[0][0]:.2f}-{plans[-1][0]:.2f} s")
    report.add("  plan peak memory (RSS, highest of the 3)", f"{rss:.0f} MB",
               "<= 300 MB" if big else "", check(rss, 300) if big else "")
    walls = sorted(run_cli(["--state", str(state), "status"])[0] for _ in range(5))
    wall = walls[2]
    report.add("status (whole command, own process; median of 5)", f"{wall:.2f} s",
               "<= 0.2 s" if big else "", check(wall, 0.2) if big else "")
    report.add("  status, fastest and slowest of the 5", f"{walls[0]:.2f}-{walls[-1]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip timing Ansible's own loader (about 30 s at 100k)")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}, {platform.platform()}")
    print(f"machine speed now: {calibrate():.2f} s for a fixed Python loop (lower is faster; "
          "the same loop, run before each figure is compared, tells a slow moment)")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="avmigrate-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            bench_size(n, Path(tmp), report, not args.no_anchor)
            bench_estate(n, Path(tmp), report, not args.no_anchor)
    print(f"\nmachine speed at the end: {calibrate():.2f} s for the same loop")
    missed = [r for r in report.rows if r[3] == "MISSED"]
    print(f"\n{len(missed)} target(s) missed" + (": " + "; ".join(r[0] for r in missed)
                                                  if missed else ""))


if __name__ == "__main__":
    main()
