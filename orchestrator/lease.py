"""Hold a lease (on the whole state or on some hosts) for a command, renewing it meanwhile."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from orchestrator.state import Fenced, LeaseHolder, StateStore

DEFAULT_TTL = 30.0


class LeaseKeeper:
    """Context manager: take the lease (or fail naming its holder), renew it, release it."""

    def __init__(self, store: StateStore, open_other: Callable[[], StateStore], user: str,
                 ttl: float = DEFAULT_TTL, hosts: Sequence[str] | None = None) -> None:
        self.store = store
        self.hosts = None if hosts is None else list(hosts)
        self.open_other = open_other  # the renewing thread needs a connection of its own
        self.holder = LeaseHolder(user, socket.gethostname(), os.getpid())
        self.ttl = ttl
        self.epoch = 0
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self.epoch = self.store.acquire_lease(self.holder, self.ttl, self.hosts)
        self._thread = threading.Thread(target=self._renew, name="avmigrate-lease",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def claimed(self) -> frozenset[str] | None:
        """The hosts this run holds (None: the whole state)."""
        return self.store.claimed

    @property
    def held_elsewhere(self) -> dict[str, str]:
        """Hosts asked for that another live run holds, with who holds them."""
        return self.store.held_elsewhere

    def _renew(self) -> None:
        other = self.open_other()
        try:
            while not self._done.wait(self.ttl / 3):
                try:
                    other.renew_lease(self.epoch, self.ttl)
                except Fenced:
                    self.lost.set()
                    return
        finally:
            other.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Fenced):
            self.store.release_lease(self.epoch)
