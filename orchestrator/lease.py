"""Hold the one-operator lease for the length of a command, renewing it in the background."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from orchestrator.state import Fenced, LeaseHolder, StateStore

DEFAULT_TTL = 30.0


class LeaseKeeper:
    """Context manager: take the lease (or fail naming its holder), renew it, release it."""

    def __init__(self, store: StateStore, open_other: Callable[[], StateStore], user: str,
                 ttl: float = DEFAULT_TTL) -> None:
        self.store = store
        self.open_other = open_other  # the renewing thread needs a connection of its own
        self.holder = LeaseHolder(user, socket.gethostname(), os.getpid())
        self.ttl = ttl
        self.epoch = 0
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self.epoch = self.store.acquire_lease(self.holder, self.ttl)
        self._thread = threading.Thread(target=self._renew, name="avmigrate-lease",
                                        daemon=True)
        self._thread.start()
        return self

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
