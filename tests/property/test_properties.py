"""Property tests: the loaders never fail but with one clear error, and the state machine's
safety invariants hold whatever order operations come in."""

from __future__ import annotations

import contextlib
import re
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from orchestrator.core import names
from orchestrator.core.errors import PolicyError, StateError
from orchestrator.core.models import UNTOUCHED, HostState
from orchestrator.inputs import policy
from orchestrator.store.errors import BudgetFull, Fenced, LeaseHeld, ProofRequired
from orchestrator.store.records import LeaseHolder
from orchestrator.store.sqlite import SqliteStore

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- host names ----------------------------------------------------------------------------
@given(st.text(min_size=1, max_size=80))
@SETTINGS
def test_an_accepted_host_name_carries_no_shell_metacharacter(name: str) -> None:
    if names.host_problem(name) is None:
        assert set(name) <= set(string.ascii_letters + string.digits + ".-:"), name
        assert not name.startswith("-")


@given(st.text(min_size=1, max_size=80))
@SETTINGS
def test_an_accepted_alias_or_group_carries_no_shell_or_pattern_metacharacter(name: str) -> None:
    """Aliases (db_prod_01) and groups (web-servers) as Ansible accepts them: nothing a shell,
    a host pattern (',', ':', '!', '&', '~', '*', '[') or a template would read as syntax."""
    allowed = set(string.ascii_letters + string.digits + "._-")
    if names.alias_problem(name) is None:
        assert set(name) <= allowed | {":"}, name  # ':' only in an IPv6 address
        assert ":" not in name or names.host_problem(name) is None, name
        assert not name.startswith(("-", ".")), name
    if names.group_problem(name) is None:
        assert set(name) <= allowed and not name[0].isdigit() and name[0] not in "-.", name


@given(st.text(alphabet=";|&$`'\"<>(){}*?!,:~[] \\\n", min_size=1, max_size=3),
       st.from_regex(r"[a-z_]{1,10}", fullmatch=True))
@SETTINGS
def test_aliases_and_groups_with_metacharacters_are_refused(bad: str, base: str) -> None:
    assert names.alias_problem(base + bad) is not None
    assert names.group_problem(base + bad) is not None


@given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
                min_size=1, max_size=5))
@SETTINGS
def test_rfc1123_names_are_accepted(labels: list[str]) -> None:
    name = ".".join(labels)
    if not name.replace(".", "").isdigit():
        assert names.host_problem(name) is None, name


def _careful_host_ok(name: str) -> bool:
    """The rule as first written (ipaddress, then labels), which the fast regexes shortcut."""
    import ipaddress  # noqa: PLC0415
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return True
    if not name or len(name) > 253:
        return False
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    label = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
    return all(label.fullmatch(x) for x in labels) and not name.replace(".", "").isdigit()


@given(st.one_of(st.text(alphabet="abz019.-:_", min_size=1, max_size=70),
                 st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", fullmatch=True),
                 st.text(min_size=1, max_size=20)))
@SETTINGS
def test_the_fast_host_name_check_agrees_with_the_careful_one(name: str) -> None:
    assert (names.host_problem(name) is None) == _careful_host_ok(name), name


@given(st.text(alphabet=";|&$`'\"<>(){}*?! \\\n", min_size=1, max_size=3),
       st.from_regex(r"[a-z]{1,10}", fullmatch=True))
@SETTINGS
def test_shell_metacharacters_are_refused(bad: str, base: str) -> None:
    assert names.host_problem(base + bad) is not None


# ---- the policy parser ---------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)
policy_like = st.fixed_dictionaries({}, optional={
    "timezone": st.sampled_from(["UTC", "America/New_York", "Nowhere/Else", 5]),
    "deadline": st.one_of(st.text(max_size=12), st.dates().map(str), st.integers()),
    "waves": st.dictionaries(st.sampled_from(["canary", "growth", "max_size", "x"]),
                             json_values, max_size=3),
    "order": st.dictionaries(st.sampled_from(["first", "last"]),
                             st.lists(st.text(max_size=8), max_size=3), max_size=2),
    "windows": st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    "blackout": st.lists(st.one_of(st.dates().map(str), json_values), max_size=3),
    "gates": st.dictionaries(st.sampled_from(["max_failed_percent", "soak_minutes"]),
                             json_values, max_size=2),
    "approvals": st.dictionaries(st.just("required"), json_values, max_size=1),
})


@given(st.one_of(policy_like, json_values))
@SETTINGS
def test_the_policy_parser_accepts_or_says_why_in_one_line(data: object) -> None:
    try:
        parsed = policy.parse(data, "p.yml")
    except PolicyError as exc:
        assert str(exc).startswith("p.yml:")
        assert "\n" not in str(exc)
        return
    # Whatever it accepted survives the trip through a plan file unchanged.
    assert policy.from_json(parsed.to_json()) == parsed


@given(st.text(max_size=300))
@SETTINGS
def test_policy_files_of_any_text_fail_cleanly(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yml"
        path.write_text(text, encoding="utf-8")
        try:
            policy.load(path)
        except PolicyError as exc:
            assert str(exc).startswith(str(path))
            assert "\n" not in str(exc)


# ---- the state machine ---------------------------------------------------------------------
HOSTS = ("h1", "h2", "h3")
K = 2
PROVEN_STATES = (HostState.VERIFIED, HostState.MIGRATED, HostState.REMOVE_FAILED)


class StoreMachine(RuleBasedStateMachine):
    """Random transitions (with and without evidence) and lease moves from three operators,
    on whole-state and per-host leases, against one real SQLite file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "s.db"
        self.ops = [SqliteStore(path) for _ in range(3)]
        for s in self.ops:
            s.run_budget = str(K)
        self.ops[0].ensure_hosts(list(HOSTS))
        self.holders = [LeaseHolder(u, f"box-{u}", i + 1, f"machine-{u}")
                        for i, u in enumerate(("alice", "bob", "carol"))]

    @rule(op=st.integers(0, 2), host=st.sampled_from(HOSTS), to=st.sampled_from(list(HostState)),
          proof=st.sampled_from([None, "", "kesl.service running"]))
    def move(self, op: int, host: str, to: HostState, proof: str | None) -> None:
        try:
            self.ops[op].transition(host, to, "prop", None, proof=proof)
        except (Fenced, LeaseHeld, ProofRequired, BudgetFull):
            pass
        except StateError as exc:  # only a refusal is allowed, saying so
            assert "refusing transition" in str(exc), exc

    @rule(op=st.integers(0, 2), ttl=st.sampled_from([-1.0, 30.0]),
          hosts=st.one_of(st.none(), st.lists(st.sampled_from(HOSTS), max_size=3)))
    def acquire(self, op: int, ttl: float, hosts: list[str] | None) -> None:
        with contextlib.suppress(LeaseHeld):
            self.ops[op].acquire_lease(self.holders[op], ttl, hosts)

    @rule(op=st.integers(0, 2))
    def release(self, op: int) -> None:
        epoch = self.ops[op].fence_epoch
        if epoch is not None:
            self.ops[op].release_lease(epoch)

    @invariant()
    def removal_only_after_a_committed_verification_or_stage(self) -> None:
        for t in self.ops[0].history():
            if t.to_state == HostState.REMOVING and not t.from_state.holds_slot:
                assert t.from_state in (HostState.VERIFIED, HostState.STAGED), t

    @invariant()
    def a_removal_starts_only_with_a_free_slot(self) -> None:
        held: set[str] = set()
        for t in self.ops[0].history():
            if t.to_state == HostState.REMOVING and not t.from_state.holds_slot:
                assert len(held) < K, (t, held)
            if t.to_state.holds_slot:
                held.add(t.host)
            else:
                held.discard(t.host)

    @invariant()
    def nobody_is_called_verified_without_evidence(self) -> None:
        for r in self.ops[0].all():
            if r.state in PROVEN_STATES or r.state.holds_slot:
                assert (r.protected_by is not None) == (r.state in PROVEN_STATES), r

    @invariant()
    def a_touched_host_never_looks_untouched(self) -> None:
        seen: set[str] = set()
        for t in self.ops[0].history():
            if t.from_state not in UNTOUCHED:
                seen.add(t.host)
            if t.host in seen and t.to_state in UNTOUCHED:
                assert t.from_state == HostState.MIGRATED and t.to_state == HostState.PENDING, t
                seen.discard(t.host)

    @invariant()
    def no_host_is_writable_by_two_operators(self) -> None:
        """Every operator that believes it holds a lease, judged against the database: at
        most one of them may write any given host (not only the newest lease's holder)."""
        db = self.ops[0].db
        live = {int(e): bool(w) for e, w in db.execute(
            "SELECT epoch, whole FROM operators WHERE released IS NULL")}
        claims = dict(db.execute("SELECT host, operator FROM claims").fetchall())
        for host in HOSTS:
            writers = []
            for i, s in enumerate(self.ops):
                epoch = s.fence_epoch
                if epoch is None or epoch not in live:
                    continue
                if s.claimed is None or claims.get(host) == epoch:
                    writers.append(i)
            assert len(writers) <= 1, (host, writers, live, claims)
        whole = [e for e, w in live.items() if w]
        assert not whole or len(live) == 1, live

    @invariant()
    def the_audit_log_stays_intact(self) -> None:
        assert self.ops[0].audit_verify().ok

    def teardown(self) -> None:
        for s in self.ops:
            s.close()
        self.dir.cleanup()


TestStoreMachine = StoreMachine.TestCase
# A busy machine (labs booting beside it in `make test`) must not fail it on speed alone.
TestStoreMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
