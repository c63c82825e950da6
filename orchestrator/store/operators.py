"""Operators' leases, on the whole state or on some hosts, and the fence that stops a run
which lost its lease from writing any further."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from orchestrator.core import procs
from orchestrator.store import audit
from orchestrator.store.database import Database
from orchestrator.store.errors import Fenced, LeaseHeld
from orchestrator.store.records import Lease, LeaseHolder
from orchestrator.store.sqltypes import Cursor


class Fence:
    """The lease this connection's run writes under (none: it writes unfenced)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.epoch: int | None = None
        self.claimed: frozenset[str] | None = None  # None: the whole state (or no lease)
        self.held_elsewhere: dict[str, str] = {}

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        """A write transaction that is refused if this run no longer holds its lease."""
        with self.database.tx() as cur:
            self._check(cur)
            yield cur

    def _check(self, cur: Cursor) -> None:
        if self.epoch is None:
            return
        row = cur.execute("SELECT released FROM operators WHERE epoch = ?",
                          (self.epoch,)).fetchone()
        if row is None or row[0] is not None:
            raise Fenced("this run lost its lease to another run; it stopped writing. "
                         "See `avmigrate status`")

    def check_claim(self, cur: Cursor, host: str) -> None:
        """A fenced run writes only hosts it claimed (a whole-state lease claims them all)."""
        if self.epoch is None or self.claimed is None:
            return
        row = cur.execute("SELECT operator FROM claims WHERE host = ?", (host,)).fetchone()
        if row is None or int(row[0]) != self.epoch:
            raise Fenced(f"host {host} is not claimed by this run; it was not written")


def _describe(holder: LeaseHolder, since: float, expires: float, now: float) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    return (f"{holder.user} on {holder.hostname}, pid {holder.pid}, since {started} (lease "
            f"expires in {expires - now:.0f}s)")


class Leases:
    """The operators table: who holds the state or which hosts, until when."""

    def __init__(self, database: Database, fence: Fence,
                 alive: Callable[[int, int], bool] = procs.alive) -> None:
        self.database = database
        self.fence = fence
        # Whether a lease holder on this machine still runs (tests give a simulated one).
        self.alive = alive

    def _live_operators(self, cur: Cursor, holder: LeaseHolder, now: float
                        ) -> dict[int, tuple[str, bool]]:
        """Other operators still holding leases: epoch -> (description, whole state).

        A lease is ended here once it has expired by the database's clock, or at once when
        its holder ran where we can see its pid (same kernel boot and PID namespace) and that
        process is gone (a killed run cannot renew it anyway). A host name proves nothing:
        two containers may share one.
        """
        live: dict[int, tuple[str, bool]] = {}
        here = procs.machine_identity()
        for epoch, user, host, pid, since, expires, whole, machine, started in cur.execute(
                "SELECT epoch, holder_user, holder_host, holder_pid, since, expires, whole, "
                "holder_machine, holder_started FROM operators WHERE released IS NULL "
                "ORDER BY epoch").fetchall():
            mine = bool(machine) and machine == holder.machine and int(pid) == holder.pid
            dead_here = (machine is not None and machine == here
                         and not self.alive(int(pid), int(started or 0)))
            if mine or dead_here or float(expires) <= now:
                cur.execute("UPDATE operators SET released = ? WHERE epoch = ?", (now, epoch))
                cur.execute("DELETE FROM claims WHERE operator = ?", (epoch,))
                continue
            who = LeaseHolder(str(user), str(host), int(pid))
            live[int(epoch)] = (_describe(who, float(since), float(expires), now), bool(whole))
        return live

    def lease(self) -> Lease | None:
        """The newest live lease, if any."""
        row = self.database.db.execute(
            "SELECT holder_user, holder_host, holder_pid, since, expires, epoch FROM operators "
            "WHERE released IS NULL ORDER BY epoch DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Lease(LeaseHolder(str(row[0]), str(row[1]), int(row[2])), float(row[3]),
                     float(row[4]), int(row[5]))

    @staticmethod
    def _held(cur: Cursor, live: dict[int, tuple[str, bool]],
              hosts: Sequence[str] | None) -> dict[str, str]:
        """Of `hosts`, those a live operator holds, with who; LeaseHeld if nothing is free."""
        whole = [d for d, w in live.values() if w]
        if whole or (hosts is None and live):
            first = (whole or [d for d, _ in live.values()])[0]
            raise LeaseHeld(f"another run holds this state: {first}; wait for it to "
                            "finish or stop it")
        if hosts is None:
            return {}
        taken = {str(h): int(op) for h, op in cur.execute(
            "SELECT host, operator FROM claims").fetchall() if int(op) in live}
        held = {h: live[taken[h]][0] for h in hosts if h in taken}
        if hosts and len(held) == len(set(hosts)):
            raise LeaseHeld(f"another run holds these hosts: {next(iter(held.values()))}; "
                            "wait for it to finish or stop it")
        return held

    def acquire(self, holder: LeaseHolder, ttl: float,
                hosts: Sequence[str] | None = None) -> int:
        """Take a lease on the whole state (hosts=None) or on those of `hosts` no other live
        operator holds; raise LeaseHeld naming the holder when nothing can be taken.
        Returns the lease's epoch; the fence says what was taken."""
        with self.database.tx() as cur:
            now = self.database.now(cur)
            held = self._held(cur, self._live_operators(cur, holder, now), hosts)
            epoch = int(cur.execute("UPDATE lease SET epoch = epoch + 1, holder_user = ?, "
                                    "holder_host = ?, holder_pid = ?, since = ?, expires = ? "
                                    "WHERE id = 1 RETURNING epoch",
                                    (holder.user, holder.hostname, holder.pid, now,
                                     now + ttl)).fetchone()[0])
            cur.execute("INSERT INTO operators (epoch, holder_user, holder_host, holder_pid, "
                        "since, expires, whole, holder_machine, holder_started) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (epoch, holder.user, holder.hostname, holder.pid, now, now + ttl,
                         int(hosts is None), holder.machine or None, holder.started))
            claimed = None
            if hosts is not None:
                claimed = frozenset(h for h in hosts if h not in held)
                cur.executemany("INSERT INTO claims (host, operator, at) VALUES (?, ?, ?) "
                                "ON CONFLICT (host) DO UPDATE SET operator = excluded.operator, "
                                "at = excluded.at", [(h, epoch, now) for h in sorted(claimed)])
            audit.append(cur, now, "lease", None, None, epoch,
                         {"user": holder.user, "host": holder.hostname, "pid": holder.pid,
                          "hosts": "all" if claimed is None else len(claimed)})
        self.fence.epoch = epoch
        self.fence.claimed = claimed
        self.fence.held_elsewhere = held
        return epoch

    def renew(self, epoch: int, ttl: float) -> None:
        with self.database.tx() as cur:
            updated = cur.execute("UPDATE operators SET expires = ? WHERE epoch = ? "
                                  "AND released IS NULL", (self.database.now(cur) + ttl, epoch)
                                  ).rowcount
            if updated != 1:
                raise Fenced("this run lost its lease to another run; it stopped writing")

    def release(self, epoch: int) -> None:
        with self.database.tx() as cur:
            cur.execute("UPDATE operators SET released = ? WHERE epoch = ? AND released IS NULL",
                        (self.database.now(cur), epoch))
            cur.execute("DELETE FROM claims WHERE operator = ?", (epoch,))
        self.fence.epoch = None
        self.fence.claimed = None
        self.fence.held_elsewhere = {}

    def held_by_live_runs(self, names: Sequence[str]) -> set[str]:
        """Those of `names` that a live run holds now (its lease not released or expired)."""
        cur = self.database.cursor()
        now = self.database.now(cur)
        whole = cur.execute("SELECT 1 FROM operators WHERE released IS NULL AND expires > ? "
                            "AND whole = 1", (now,)).fetchone()
        if whole is not None:
            return set(names)
        wanted = set(names)
        return {str(h) for (h,) in cur.execute(
            "SELECT c.host FROM claims c JOIN operators o ON o.epoch = c.operator "
            "WHERE o.released IS NULL AND o.expires > ?", (now,)).fetchall() if h in wanted}
