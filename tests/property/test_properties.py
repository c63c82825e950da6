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
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator import names, policy
from orchestrator.errors import PolicyError
from orchestrator.models import HostState
from orchestrator.state import Fenced, LeaseHeld, LeaseHolder, SqliteStore

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---- host names ----------------------------------------------------------------------------
@given(st.text(min_size=1, max_size=80))
@SETTINGS
def test_an_accepted_host_name_carries_no_shell_metacharacter(name: str) -> None:
    if names.host_problem(name) is None:
        assert set(name) <= set(string.ascii_letters + string.digits + ".-:"), name
        assert not name.startswith("-")


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
HOSTS = ("h1", "h2")


class StoreMachine(RuleBasedStateMachine):
    """Random transitions and lease moves from two operators against one real SQLite file."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "s.db"
        self.ops = [SqliteStore(path), SqliteStore(path)]
        self.ops[0].ensure_hosts(list(HOSTS))
        self.holders = [LeaseHolder("alice", "box-a", 1), LeaseHolder("bob", "box-b", 2)]
        self.epochs: list[int | None] = [None, None]

    @rule(op=st.integers(0, 1), host=st.sampled_from(HOSTS), to=st.sampled_from(list(HostState)))
    def move(self, op: int, host: str, to: HostState) -> None:
        try:
            self.ops[op].transition(host, to, "prop", None)
        except (Fenced, LeaseHeld):
            pass
        except Exception as exc:  # noqa: BLE001 - only a refusal is allowed, saying so
            assert "refusing transition" in str(exc), exc

    @rule(op=st.integers(0, 1), ttl=st.sampled_from([-1.0, 30.0]))
    def acquire(self, op: int, ttl: float) -> None:
        with contextlib.suppress(LeaseHeld):
            self.epochs[op] = self.ops[op].acquire_lease(self.holders[op], ttl)

    @precondition(lambda self: any(e is not None for e in self.epochs))
    @rule(op=st.integers(0, 1))
    def release(self, op: int) -> None:
        epoch = self.epochs[op]
        if epoch is not None:
            self.ops[op].release_lease(epoch)
            self.epochs[op] = None

    @invariant()
    def removal_only_after_a_committed_verification_or_stage(self) -> None:
        for t in self.ops[0].history():
            if t.to_state == HostState.REMOVING:
                assert t.from_state in (HostState.VERIFIED, HostState.STAGED), t

    @invariant()
    def never_two_lease_holders(self) -> None:
        lease = self.ops[0].lease()
        current = None if lease is None else lease.epoch
        # Only the store whose fence matches the current epoch can write.
        writers = [i for i, s in enumerate(self.ops)
                   if s.fence_epoch is not None and s.fence_epoch == current]
        assert len(writers) <= 1, writers

    @invariant()
    def the_audit_log_stays_intact(self) -> None:
        assert self.ops[0].audit_verify().ok

    def teardown(self) -> None:
        for s in self.ops:
            s.close()
        self.dir.cleanup()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
