"""What every open page sees, read once for all of them.

The registry is read by the HAProxy sync's RegistryFeed (one reader thread: a whole
ClusterState on every event and every `period` otherwise), which also hands over the
events it reads. The hub keeps the newest state as JSON and the recent events in a
ring, and wakes every stream waiting on its condition. However many pages are open,
Redis sees one reader; a page's request never touches Redis.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Sequence

from polycorn.ha.ctl.status import rollout_line, status_object
from polycorn.ha.dashboard.rates import Scraper
from polycorn.ha.events import Event
from polycorn.ha.haproxy.feed import RegistryFeed
from polycorn.ha.rollout import Step
from polycorn.ha.store import ClusterStore, StoreUnavailable

RING = 200  # events kept for pages that (re)connect
BACKLOG = 50  # events a new page is shown at first


def event_object(event: Event) -> dict:
    """An event as the page (and `polycorn-ctl events --json`) shows it."""
    return {"id": event.id, "time_ms": event.time_ms, "event": event.kind, "node": event.node,
            "epoch": event.epoch, "reason": event.reason, **event.extra,
            "line": event.describe()}


class Hub:
    def __init__(self, store: ClusterStore, cluster: str, ttl_ms: int, redis_display: str,
                 actions: bool, period: float = 1.0, scrape_period: float = 2.0) -> None:
        self.store = store
        self.cluster = cluster
        self.redis_display = redis_display
        self.actions = actions
        self.feed = RegistryFeed(store, ttl_ms, period=period, on_events=self._events)
        self.scraper = Scraper(self._metrics_targets, period=scrape_period)
        self._cond = threading.Condition()
        self._ring: collections.deque[dict] = collections.deque(maxlen=RING)
        self._state = ""  # JSON text, "" before the first reading
        self.version = 0  # bumped on every new state or event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-hub", daemon=True)

    def start(self) -> None:
        try:
            for event in self.store.latest_events(BACKLOG):
                self._ring.append(event_object(event))
            # the feed goes on from the backlog (from the start of an empty stream), so no
            # event falls between the two reads
            self.feed.start_after = self._ring[-1]["id"] if self._ring else "0-0"
        except StoreUnavailable:
            pass  # the feed reports the failure in the state
        self.feed.start()
        self.scraper.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.feed.stop()
        self.scraper.stop()
        with self._cond:
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- what the pages read -------------------------------------------------------------

    def state_json(self) -> str:
        with self._cond:
            return self._state

    def events_after(self, last_id: str | None) -> list[dict]:
        """Ring events after `last_id`; the newest BACKLOG when it is None or no longer held."""
        with self._cond:
            ring = list(self._ring)
        if last_id is not None:
            for i, e in enumerate(ring):
                if e["id"] == last_id:
                    return ring[i + 1:]
        return ring[-BACKLOG:]

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the version moves past `seen` (or the timeout); the version now."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self._stop.is_set(), timeout)
            return self.version

    # -- the threads ---------------------------------------------------------------------

    def _events(self, events: Sequence[Event]) -> None:
        with self._cond:
            self._ring.extend(event_object(e) for e in events)
            self.version += 1
            self._cond.notify_all()

    def _metrics_targets(self) -> dict[str, str]:
        view = self.feed.reading().view
        if view is None:
            return {}
        return {r.info.node_id: r.info.metrics_address for r in view.alive()
                if r.info.metrics_address}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.feed.wait(1.0)
            text = json.dumps(self.build_state())
            with self._cond:
                self._state = text
                self.version += 1
                self._cond.notify_all()

    def build_state(self) -> dict:
        reading = self.feed.reading()
        view = reading.view
        out = {"cluster": self.cluster, "redis": self.redis_display, "actions": self.actions,
               "error": reading.error, "read_age": round(time.monotonic() - reading.read_at, 1)
               if view is not None else None, "generated": time.time()}
        if view is None:
            return {**out, "leader": None, "epoch": None, "highest_epoch": None, "nodes": [],
                    "drained": [], "rollout": None}
        status = status_object(self.cluster, view)
        by_id = {r.info.node_id: r for r in view.records}
        for node in status["nodes"]:
            record = by_id.get(node["node_id"])
            address = record.info.metrics_address if record and node["alive"] else ""
            node["leader"] = node["node_id"] == status["leader"]
            node["metrics_address"] = address
            node["requests"] = self.scraper.rate(node["node_id"], address).as_json()
        rollout = status["rollout"]
        if rollout is not None:
            done = sum(1 for n in rollout["nodes"] if n["step"] == Step.DONE.value)
            rollout.update(done=done, total=len(rollout["nodes"]),
                           line=rollout_line(view.rollout, view.now_ms))
        return {**status, **out}
