"""What the state store takes and gives: a host's move, a lease and its holder, the budget."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from orchestrator.core import procs
from orchestrator.core.models import HostFacts, HostState

# States that say the replacement was verified: entered only with that evidence.
PROVEN = frozenset({HostState.VERIFIED, HostState.MIGRATED, HostState.REMOVE_FAILED})


@dataclass(frozen=True)
class Move:
    """One host's move to a new state, with what is recorded along with it."""

    name: str
    to: HostState
    reason: str = ""
    facts: HostFacts | None = None
    strategy: str | None = None
    wave: int | None = None
    protection_stopped_at: float | None = None
    replacement_verified_at: float | None = None
    replacement: str | None = None  # the replacement id it is migrated to (None: keep)
    # The evidence of protection the move rests on ("kesl.service running", "clamav verified:
    # ..."): required to leave a slot of the budget; "" records that a probe found none;
    # None keeps what was recorded before.
    proof: str | None = None


@dataclass(frozen=True)
class LeaseHolder:
    """Who wants to run: enough to name them to a second operator, and for a later run on
    the same machine (same kernel boot and PID namespace) to tell whether they died."""

    user: str
    hostname: str
    pid: int
    # procs.machine_identity() of where it runs ("": unknown, judged by its lease's expiry)
    machine: str = ""
    started: int = 0  # the process's start time (clock ticks), against pid reuse

    @classmethod
    def here(cls, user: str) -> LeaseHolder:
        pid = os.getpid()
        return cls(user, socket.gethostname(), pid, procs.machine_identity(),
                   procs.start_ticks(pid))


@dataclass(frozen=True)
class Budget:
    """The fleet's protection budget as the state holds it, and how many slots are held."""

    fleet_spec: str | None  # set for the whole state (`avmigrate budget --set`), or None
    run_spec: str  # what this connection's run asked for
    limit: int  # the smaller of the two, for the fleet's size now
    held: int
    fleet_size: int
    set_by: str | None = None


@dataclass(frozen=True)
class Lease:
    """The one-operator lease on a state; the epoch fences a holder that lost it."""

    holder: LeaseHolder
    since: float
    expires: float
    epoch: int
