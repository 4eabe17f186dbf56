"""Per-node requests/s for the dashboard, from each node's Prometheus endpoint.

Source (docs/dashboard.md): a node that serves metrics (`--metrics-bind`) advertises
HOST:PORT as `metrics_address` in its registry hash. One scraper thread GETs
http://HOST:PORT/metrics from every live node that advertises one, every `period`,
sums the samples of the request counter (the first of REQUEST_COUNTERS present) and
turns two readings into a rate. A node that advertises nothing reads "off"; one whose
endpoint fails or lacks the counter reads "unreachable"/"no counter": the page shows
"n/a" and never blocks on it. A counter that went down (a reset) gives no rate for
that interval rather than a negative one.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("polycorn.dashboard")

# Counters of served requests, in order of preference; any labels are summed over.
REQUEST_COUNTERS = ("polycorn_requests_total", "polycorn_http_requests_total")
SCRAPE_TIMEOUT = 1.0  # seconds for one node's /metrics
MAX_BODY = 4 * 1024 * 1024  # an exposition larger than this is not a Polycorn node's


def request_total(text: str, names: Iterable[str] = REQUEST_COUNTERS) -> float | None:
    """The sum of the samples of the first counter in `names` found in a Prometheus
    text exposition, or None when none is there (pure)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace, space = line.find("{"), line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            # the value follows the label set, whose quoted values may hold spaces
            name, rest = line[:brace], line[line.rfind("}") + 1:]
        elif space >= 0:
            name, rest = line[:space], line[space:]
        else:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        sums[name] = sums.get(name, 0.0) + value
    return next((sums[n] for n in names if n in sums), None)


@dataclass(frozen=True)
class NodeRate:
    """What the page shows in the requests/s column of one node."""

    status: str  # "ok", "off" (no endpoint advertised), "unreachable", "no counter", "pending"
    per_second: float | None = None
    detail: str = ""

    def as_json(self) -> dict:
        return {"status": self.status, "per_second": self.per_second, "detail": self.detail}


OFF = NodeRate("off")


class RateMeter:
    """Rates from successive (time, total) readings per node (pure: no I/O)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}  # node -> (monotonic, total)
        self.rates: dict[str, NodeRate] = {}

    def reading(self, node_id: str, at: float, total: float) -> NodeRate:
        before = self._last.get(node_id)
        self._last[node_id] = (at, total)
        if before is None or at <= before[0]:
            rate = NodeRate("pending", None, "one reading so far")
        elif total < before[1]:
            rate = NodeRate("pending", None, "counter reset")
        else:
            rate = NodeRate("ok", round((total - before[1]) / (at - before[0]), 2))
        self.rates[node_id] = rate
        return rate

    def failed(self, node_id: str, status: str, detail: str) -> NodeRate:
        self._last.pop(node_id, None)  # the next good reading starts a new interval
        self.rates[node_id] = NodeRate(status, None, detail)
        return self.rates[node_id]

    def keep_only(self, node_ids: Iterable[str]) -> None:
        keep = set(node_ids)
        for gone in [n for n in self._last if n not in keep]:
            del self._last[gone]
        for gone in [n for n in self.rates if n not in keep]:
            del self.rates[gone]


def scrape(address: str, timeout: float = SCRAPE_TIMEOUT) -> str:
    """GET http://ADDRESS/metrics; the body as text (raises OSError/ValueError)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:
        return reply.read(MAX_BODY).decode("utf-8", "replace")


class Scraper:
    """The thread that keeps a RateMeter fed; `targets()` gives {node: metrics address}."""

    def __init__(self, targets: Callable[[], dict[str, str]], period: float = 2.0,
                 fetch: Callable[[str], str] = scrape,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.targets = targets
        self.period = period
        self.fetch = fetch
        self.clock = clock
        self.meter = RateMeter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def rate(self, node_id: str, address: str) -> NodeRate:
        if not address:
            return OFF
        with self._lock:
            return self.meter.rates.get(node_id, NodeRate("pending", None, "not scraped yet"))

    def scrape_once(self) -> None:
        targets = self.targets()
        for node_id, address in targets.items():
            try:
                total = request_total(self.fetch(address))
            except (OSError, ValueError) as exc:
                with self._lock:
                    self.meter.failed(node_id, "unreachable", f"{address}: {exc}")
                continue
            with self._lock:
                if total is None:
                    self.meter.failed(node_id, "no counter", f"{address}: no "
                                      f"{' or '.join(REQUEST_COUNTERS)}")
                else:
                    self.meter.reading(node_id, self.clock(), total)
        with self._lock:
            self.meter.keep_only(targets)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scrape_once()
            except Exception:  # never let the column die silently
                log.exception("metrics scraper: unexpected error")
            self._stop.wait(self.period)
