"""The sync's view of the registry, kept fresh by one reader thread.

The thread reads the whole registry (one ClusterState), then waits on the events
stream (XREAD with a short block): any event means "read again now", so the sync
hears of a change within a few milliseconds of its event; with no event the view is
read again every `period` anyway (worker counts and lapses make no event). When
Redis fails the last good view is kept, the failure time is noted for the guard, and
the thread retries with capped back-off. It only reads: the sync holds no authority.
The dashboard (ha/dashboard/) reads through the same feed and takes the events it
reads (`on_events`) for its live stream, so the keys have one reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from polycorn.ha.backoff import Backoff
from polycorn.ha.cluster_state import ClusterState
from polycorn.ha.events import Event
from polycorn.ha.guard import RedisWatch
from polycorn.ha.store import ClusterStore, StoreUnavailable

log = logging.getLogger("polycorn.haproxy")

BLOCK_MS = 200  # one XREAD wait; well below the Redis read timeout


@dataclass(frozen=True)
class Reading:
    view: ClusterState | None  # the last good view (None before the first)
    read_at: float  # monotonic time of that read
    stable_for: float  # seconds since the last failed Redis call (inf: none failed)
    changed_ago: float  # seconds since Redis' run id changed
    error: str  # the last failure, while Redis is failing; "" when it answers


class RegistryFeed:
    def __init__(self, store: ClusterStore, ttl_ms: int, period: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 on_events: Callable[[Sequence[Event]], None] | None = None,
                 start_after: str | None = None) -> None:
        self.store = store
        self.on_events = on_events  # given each batch of new events, before the re-read
        self.start_after = start_after  # the first events to hand over follow this id
        self.ttl_ms = ttl_ms
        self.period = period
        self.clock = clock
        self.watch = RedisWatch()
        self._view: ClusterState | None = None
        self._read_at = 0.0
        self._failed_at: float | None = None  # the last failed call
        self._outage_since = 0.0  # the first failed call of the current outage
        self._error = ""
        self._lock = threading.Lock()
        self._news = threading.Event()  # set on every new view (or failure)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def refresh(self) -> bool:
        """Read the registry once, now (the thread does so by itself); True if it answered."""
        try:
            self._publish(self.store.cluster_state(self.ttl_ms))
            return True
        except StoreUnavailable as exc:
            self._failed(str(exc))
            return False

    def wait(self, timeout: float) -> bool:
        """Block until a new reading (True) or the timeout (False)."""
        woke = self._news.wait(timeout)
        self._news.clear()
        return woke

    def reading(self) -> Reading:
        now = self.clock()
        with self._lock:
            stable = float("inf") if self._failed_at is None else now - self._failed_at
            return Reading(self._view, self._read_at, stable, self.watch.changed_ago(now),
                           self._error)

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(base=0.1, cap=1.0)
        last_id: str | None = self.start_after
        while not self._stop.is_set():
            try:
                if last_id is None:
                    latest = self.store.latest_events(1)
                    last_id = latest[0].id if latest else "0-0"
                self._publish(self.store.cluster_state(self.ttl_ms))
                backoff.reset()
                last_id = self._await_news(last_id)
            except StoreUnavailable as exc:
                self._failed(str(exc))
                last_id = None  # the stream may be another server's now (failover)
                self._stop.wait(backoff.next_delay())
            except Exception as exc:  # never let the reader die silently
                log.exception("registry reader: unexpected error")
                self._failed(f"{type(exc).__name__}: {exc}")
                self._stop.wait(backoff.next_delay())

    def _await_news(self, last_id: str) -> str:
        """Wait for events up to `period`; return the id read up to."""
        deadline = self.clock() + self.period
        while not self._stop.is_set() and self.clock() < deadline:
            asked = self.clock()
            events = self.store.read_events(after=last_id, count=100, block_ms=BLOCK_MS)
            if events:
                if self.on_events is not None:
                    self.on_events(events)
                return events[-1].id
            if self.clock() - asked < BLOCK_MS / 2000:  # a store that cannot block
                self._stop.wait(BLOCK_MS / 1000)
        return last_id

    def _publish(self, view: ClusterState) -> None:
        now = self.clock()
        with self._lock:
            if self._error:
                log.info("registry readable again after %.1fs unreadable: reconciling "
                         "everything", now - self._outage_since)
            self.watch.see(view.server_id, now)
            self._view, self._read_at, self._error = view, now, ""
        self._news.set()

    def _failed(self, error: str) -> None:
        now = self.clock()
        with self._lock:
            if not self._error:
                self._outage_since = now
                log.warning("registry unreadable (%s): keeping the last known state and "
                            "taking no node out", error)
            self._failed_at, self._error = now, error
        self._news.set()
