"""How often one client address may present a wrong action token (pure, no sockets).

A fixed window per address: after `limit` failures within `window` seconds the
address is refused (429 with Retry-After) until that window ends, so a token cannot
be guessed at network speed. A right token is never counted and does not reset a
refusal. The table is bounded: entries whose window has ended are dropped first, and
past `max_clients` addresses the oldest window goes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

LIMIT = 5  # wrong tokens per address per window: room for a typo, none for a guesser
WINDOW = 60.0  # seconds
MAX_CLIENTS = 4096  # addresses remembered at once


@dataclass
class _Window:
    started: float
    failures: int


class FailureLimiter:
    """Counts wrong tokens per client address; thread-safe (one thread per connection)."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW,
                 max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("want limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Whole seconds until `client` may try a token again; 0 if it may now."""
        with self._lock:
            entry = self._current(client, self.clock())
            if entry is None or entry.failures < self.limit:
                return 0
            return max(1, math.ceil(entry.started + self.window - self.clock()))

    def failed(self, client: str) -> None:
        """Record one wrong token from `client`."""
        now = self.clock()
        with self._lock:
            entry = self._current(client, now)
            if entry is None:
                self._make_room(now)
                entry = self._windows[client] = _Window(now, 0)
            entry.failures += 1

    def _current(self, client: str, now: float) -> _Window | None:
        entry = self._windows.get(client)
        if entry is not None and now - entry.started >= self.window:
            del self._windows[client]
            return None
        return entry

    def _make_room(self, now: float) -> None:
        if len(self._windows) < self.max_clients:
            return
        for client in [c for c, w in self._windows.items() if now - w.started >= self.window]:
            del self._windows[client]
        while len(self._windows) >= self.max_clients:  # dicts keep insertion order
            del self._windows[next(iter(self._windows))]
