"""Scrape a node's /metrics over HTTP and check what Prometheus would: counters that
never go down (a false reset for rate()), and the values a test waits on."""

from __future__ import annotations

import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Series = tuple[str, tuple[tuple[str, str], ...]]


def scrape(port: int, timeout: float = 2.0) -> dict[Series, float]:
    """Every sample of http://127.0.0.1:port/metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def try_scrape(port: int) -> dict[Series, float]:
    """scrape(), or nothing while the endpoint moves between sidecars (a USR2, a master's
    death: the old one is gone, the new one not bound yet)."""
    try:
        return scrape(port)
    except OSError:
        return {}


def value(samples: dict[Series, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Series, float], name: str) -> float:
    """The sum of a counter's series over all its labels."""
    return sum(v for (n, _), v in samples.items() if n == name)


def monotonic_series(name: str) -> bool:
    """Counters, and a histogram's buckets, count and sum: they may never decrease."""
    return name.endswith(("_total", "_bucket", "_count", "_sum"))


class Scraper:
    """Scrapes every `interval` in a thread; records every decrease of a counter.

    A scrape that fails (the endpoint moving to another master) is counted, not an error.
    """

    def __init__(self, port: int, interval: float = 0.1) -> None:
        self.port = port
        self.interval = interval
        self.scrapes = 0
        self.failures = 0
        self.longest_gap = 0.0  # seconds without a successful scrape
        self.decreases: list[str] = []
        self.last: dict[Series, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                samples = scrape(self.port)
            except OSError:
                self.failures += 1
            else:
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last_ok)
                last_ok = now
                self.check(samples)
            self._stop.wait(self.interval)

    def wait_fresh(self, timeout: float = 15.0) -> None:
        """Until a scrape that began after this call has succeeded: the one that shows the
        counters just before a fault, so the comparison after it straddles the fault."""
        deadline = time.monotonic() + timeout
        start = self.scrapes
        while self.scrapes < start + 2:  # the one in flight may have begun before the call
            if time.monotonic() > deadline:
                raise AssertionError(f"no scrape of :{self.port} within {timeout}s")
            time.sleep(0.02)

    def check(self, samples: dict[Series, float]) -> None:
        for series, v in samples.items():
            before = self.last.get(series)
            if monotonic_series(series[0]) and before is not None and v < before:
                self.decreases.append(f"{series}: {before} -> {v} (scrape {self.scrapes})")
        self.last = samples
        self.scrapes += 1
