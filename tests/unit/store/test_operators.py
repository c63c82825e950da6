"""Several operators at once on one state: each host claimed by exactly one of them.

Real processes against a real database (SQLite file, PostgreSQL server): they all ask for
overlapping sets of hosts at the same moment, hold what they got while the others ask,
and migrate (in the state) only what they hold.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from orchestrator.core.models import HostState
from orchestrator.store.errors import Fenced, LeaseHeld
from orchestrator.store.records import LeaseHolder
from tests.conftest import Backend

HOSTS = [f"h{i:03d}" for i in range(120)]
OPERATORS = 4
STEPS = (HostState.INSTALLING, HostState.VERIFIED, HostState.REMOVING, HostState.MIGRATED)


def operator(index: int, target: str, start: Any, claimed: Any, results: Any) -> None:
    """One operator: ask for 60 hosts overlapping the others', hold them, migrate them.

    Operator i asks for hosts 20i to 20i+59: every host is asked for by one to three of
    them, and an operator whose hosts were all taken first is refused.
    """
    from orchestrator.store import open_store  # noqa: PLC0415 - in the child process

    store = open_store(target)
    wanted = [HOSTS[(index * 20 + k) % len(HOSTS)] for k in range(60)]
    start.wait(timeout=60)  # everyone asks at once
    try:
        store.acquire_lease(LeaseHolder.here(f"op{index}"), ttl=120, hosts=wanted)
    except LeaseHeld as exc:
        results.put((index, "held", str(exc), []))
        claimed.wait(timeout=60)
        return
    mine = sorted(store.claimed or ())
    claimed.wait(timeout=60)  # nobody releases before everybody has asked
    run = store.begin_run("run", f"op{index}", None)
    store.run_budget = "100%"  # the budget is tested elsewhere; here, only the claims
    for host in mine:
        for step in STEPS:
            store.transition(host, step, f"op{index}", run, proof="clamav verified")
    # A host this operator did not claim is not written, even if it asks.
    foreign = [h for h in wanted if h not in mine]
    refused = 0
    for host in foreign[:3]:
        try:
            store.transition(host, HostState.CLEAN, "trespass", run)
        except Fenced:
            refused += 1
    store.finish_run(run, "done")
    results.put((index, "ok", f"refused {refused} of {len(foreign[:3])}", mine))
    store.release_lease(store.fence_epoch or 0)
    store.close()


def test_concurrent_operators_never_claim_a_host_twice(backend: Backend) -> None:
    setup = backend.open()
    setup.ensure_hosts(HOSTS)
    setup.close()
    ctx = multiprocessing.get_context("fork")
    start, claimed = ctx.Barrier(OPERATORS), ctx.Barrier(OPERATORS)
    results = ctx.Queue()
    procs = [ctx.Process(target=operator, args=(i, backend.target, start, claimed, results))
             for i in range(OPERATORS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    holders: dict[str, int] = {}
    for index, outcome, detail, mine in got:
        if outcome == "held":  # every host it asked for was held: refused, naming a holder
            assert "another run holds these hosts: op" in detail, detail
            continue
        assert outcome == "ok", detail
        assert detail.startswith("refused") and detail.split()[1] == detail.split()[3], detail
        for host in mine:
            assert host not in holders, f"{host} claimed by op{holders[host]} and op{index}"
            holders[host] = index
    # Every host somebody asked for was claimed by exactly one operator and migrated once.
    assert set(holders) == set(HOSTS)
    check = backend.open()
    for host in HOSTS:
        history = check.history(host)
        assert [t.to_state for t in history] == list(STEPS), host
        assert {t.reason for t in history} == {f"op{holders[host]}"}
    assert check.counts() == {HostState.MIGRATED: len(HOSTS)}
    assert check.audit_verify().ok
    assert check.lease() is None  # all released


def test_a_second_operator_on_the_same_hosts_is_refused_naming_the_first(
        backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.ensure_hosts(["a", "b", "c"])
    first.acquire_lease(LeaseHolder("alice", "ops-1", 11), ttl=60, hosts=["a", "b"])
    with pytest.raises(LeaseHeld, match="alice on ops-1, pid 11"):
        second.acquire_lease(LeaseHolder("bob", "ops-2", 22), ttl=60, hosts=["b", "a"])
    # Overlapping: bob gets what alice does not hold, and is told who holds the rest.
    second.acquire_lease(LeaseHolder("bob", "ops-2", 22), ttl=60, hosts=["b", "c"])
    assert second.claimed == frozenset({"c"})
    assert "alice on ops-1" in second.held_elsewhere["b"]
    # A whole-state lease waits for both.
    third = backend.open()
    with pytest.raises(LeaseHeld):
        third.acquire_lease(LeaseHolder("carol", "ops-3", 33), ttl=60)
