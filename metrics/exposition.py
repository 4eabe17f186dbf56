"""The node's totals in Prometheus's text format, through prometheus_client.

`NodeCollector` is a custom collector: at each scrape it asks the Aggregator for
the node's totals and yields metric families named by schema.py (counters get
prometheus_client's `_total`). The request-duration buckets are stored one per
bucket and made cumulative here. Cluster families appear only once an agent has
reported (a stand-alone node has none). Imported by the metrics sidecar only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from polycorn.metrics import schema
from polycorn.metrics.aggregate import Aggregator, Totals
from polycorn.metrics.schema import COUNTER, FAMILIES, Family
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

_HISTOGRAM = "polycorn_http_request_duration_seconds"
_SKIPPED = {_HISTOGRAM, _HISTOGRAM + "_sum", "polycorn_http_requests_started",
            "polycorn_cluster_last_heartbeat_timestamp_seconds"}


class NodeCollector:
    """A prometheus_client collector of one node's slot directory."""

    def __init__(self, aggregator: Aggregator, clock=time.time) -> None:
        self.aggregator = aggregator
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        totals = self.aggregator.collect()
        yield from families(totals, self.clock())


def families(totals: Totals, now: float) -> Iterator[Metric]:
    values = totals.values
    clustered = any(values.get(("polycorn_cluster_node_state", (("state", s),)), 0)
                    for s in schema.NODE_STATES)
    for family in FAMILIES:
        if family.name in _SKIPPED:
            continue
        if family.name.startswith("polycorn_cluster_") and not clustered:
            continue
        yield _family(family, values)
    yield _histogram(values)
    in_flight = GaugeMetricFamily("polycorn_http_requests_in_flight",
                                  "Requests whose cycle began and did not end yet, over "
                                  "the live workers.")
    in_flight.add_metric([], totals.in_flight)
    yield in_flight
    processes = GaugeMetricFamily("polycorn_metrics_processes", "Processes of the node "
                                  "reporting (masters, workers, agent).")
    processes.add_metric([], totals.live)
    yield processes
    if clustered:
        beat = values.get(("polycorn_cluster_last_heartbeat_timestamp_seconds", ()), 0.0)
        age = GaugeMetricFamily("polycorn_cluster_heartbeat_age_seconds", "Seconds since "
                                "the node's last heartbeat that Redis answered.")
        if beat:
            age.add_metric([], max(0.0, now - beat))
        yield age


def _family(family: Family, values: dict) -> Metric:
    cls = CounterMetricFamily if family.kind == COUNTER else GaugeMetricFamily
    metric = cls(family.name, family.help, labels=list(family.labels))
    for labels in family.values:
        key = (family.name, tuple(zip(family.labels, labels, strict=True)))
        value = values.get(key, 0.0)
        if family.name == "polycorn_reloads" and not value and labels[-1]:
            continue  # a rollback reason shows once it happened: 2 x 3 series, not 42
        metric.add_metric(list(labels), value)
    return metric


def _histogram(values: dict) -> Metric:
    family = schema.BY_NAME[_HISTOGRAM]
    buckets, running = [], 0.0
    for (le,) in family.values:
        running += values.get((_HISTOGRAM, (("le", le),)), 0.0)
        buckets.append((le, running))
    return HistogramMetricFamily(_HISTOGRAM, family.help, buckets=buckets,
                                 sum_value=values.get((_HISTOGRAM + "_sum", ()), 0.0))
