"""Hold a lease (on the whole state or on some hosts) for a command, renewing it meanwhile.

A lease that can no longer be renewed must not lapse silently: the keeper says so
(`problem()`), the run starts no further step, and `on_lost` lets the caller abort the step
under way before the lease expires and another operator may take its hosts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from orchestrator.store.errors import Fenced
from orchestrator.store.interface import StateStore
from orchestrator.store.records import LeaseHolder

DEFAULT_TTL = 30.0


class LeaseKeeper:
    """Context manager: take the lease (or fail naming its holder), renew it, release it."""

    def __init__(self, store: StateStore, open_other: Callable[[], StateStore], user: str, *,  # noqa: PLR0913 - its collaborators, then options by keyword
                 ttl: float = DEFAULT_TTL, hosts: Sequence[str] | None = None,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.hosts = None if hosts is None else list(hosts)
        self.open_other = open_other  # the renewing thread needs a connection of its own
        self.holder = LeaseHolder.here(user)
        self.ttl = ttl
        self.epoch = 0
        self.lost = threading.Event()
        self.on_lost = on_lost
        self._why = ""
        self._renewed = time.monotonic()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._losing = False
        self._thread: threading.Thread | None = None
        self._monitor: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        asked = time.monotonic()
        self.epoch = self.store.acquire_lease(self.holder, self.ttl, self.hosts)
        self._renewed = asked
        self._thread = threading.Thread(target=self._renew, name="avmigrate-lease",
                                        daemon=True)
        self._thread.start()
        # A renewal can also hang (a lock held, a database that stopped answering): a second
        # thread gives the lease up once no renewal succeeded for half its life.
        self._monitor = threading.Thread(target=self._watch, name="avmigrate-lease-watch",
                                         daemon=True)
        self._monitor.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.ttl / 6)):
            if self._losing:
                return
            if (why := self.problem()) is not None:
                self._lose(f"{why}; the run stopped before its lease could expire")
                return

    @property
    def claimed(self) -> frozenset[str] | None:
        """The hosts this run holds (None: the whole state)."""
        return self.store.claimed

    @property
    def held_elsewhere(self) -> dict[str, str]:
        """Hosts asked for that another live run holds, with who holds them."""
        return self.store.held_elsewhere

    def problem(self) -> str | None:
        """Why this run must start no further step, or None while its lease is sound."""
        if self._losing:
            return self._why
        stale = time.monotonic() - self._renewed
        if stale > self.ttl / 2:
            return (f"the lease has not been renewed for {stale:.0f}s (it expires "
                    f"{self.ttl:.0f}s after the last renewal): {self._why or 'no answer'}")
        if self._thread is not None and not self._thread.is_alive() and not self._done.is_set():
            return "the lease renewal thread stopped"
        return None

    def _lose(self, why: str) -> None:
        """Once: stop the run (on_lost), then say the lease is lost, so that whoever waits on
        `lost` finds the run already stopping."""
        with self._lock:
            if self._losing:
                return
            self._losing = True
            self._why = why
        if self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(why)
        self.lost.set()

    def _renew(self) -> None:
        try:
            other = self.open_other()
        except Exception as exc:  # noqa: BLE001 - any failure here means no renewals
            self._lose(f"cannot open a connection to renew the lease ({exc})")
            return
        try:
            while not self._done.wait(self.ttl / 3):
                asked = time.monotonic()  # the lease runs from about when the database acts
                try:
                    other.renew_lease(self.epoch, self.ttl)
                except Fenced as exc:
                    self._lose(str(exc))
                    return
                except Exception as exc:  # noqa: BLE001 - retried until it is too late
                    failed = f"renewal failed: {type(exc).__name__}: {exc}"
                    if time.monotonic() - self._renewed > self.ttl / 2:
                        self._lose(f"the lease could not be renewed ({failed}); the run "
                                   "stopped before it could expire")
                        return
                    if not self._losing:
                        self._why = failed
                    continue
                self._renewed = asked
                if not self._losing:
                    self._why = ""
        except BaseException as exc:  # noqa: BLE001 - the thread must not die silently
            self._lose(f"the lease renewal thread died ({type(exc).__name__}: {exc})")
        finally:
            with contextlib.suppress(Exception):
                other.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        for t in (self._thread, self._monitor):
            if t is not None:
                t.join(timeout=5)
        with contextlib.suppress(Exception):
            self.store.release_lease(self.epoch)
