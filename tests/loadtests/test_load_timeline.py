"""Pure pieces of the Locust side: per-second buckets, thresholds, target lists."""

from __future__ import annotations

import io
import json

import pytest

from loadtests.locust_run import _merge_seconds
from loadtests.targets import TargetError, normalize_url, split_urls, urls_from_status
from loadtests.thresholds import Thresholds, verdict
from loadtests.timeline import (
    CLOSE_AFTER,
    SecondBuckets,
    TimelineWriter,
    failure_kind,
    percentile,
)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_buckets_group_by_completion_second_and_close_only_past_seconds():
    b = SecondBuckets()
    b.add(100.1, 2.0, "a:1")
    b.add(100.9, 4.0, "b:2", ConnectionRefusedError())
    b.add(101.0, 3.0, "a:1")
    b.add_retry(100.5)
    assert b.pop_closed(101.0 + CLOSE_AFTER - 0.01) == []  # second 100 not over long enough
    (line,) = b.pop_closed(101.0 + CLOSE_AFTER)
    assert line == {"t": 100, "requests": 2, "failures": 1, "retried": 1, "p50": 2.0,
                    "p95": 4.0, "p99": 4.0, "max": 4.0,
                    "errors": {"ConnectionRefusedError": 1},
                    "nodes": {"a:1": [1, 0], "b:2": [1, 1]}}
    (last,) = b.pop_all()
    assert (last["t"], last["requests"]) == (101, 1)
    assert b.pop_all() == []


def test_a_second_with_only_retries_has_no_latency():
    b = SecondBuckets()
    b.add_retry(5.0)
    assert b.pop_all()[0] == {"t": 5, "requests": 0, "failures": 0, "retried": 1,
                              "p50": None, "p95": None, "p99": None, "max": None,
                              "errors": {}, "nodes": {}}


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


class _StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.response = _Response(status)


@pytest.mark.parametrize("exc,kind", [
    (_StatusError(503), "HTTP 503"),
    (TimeoutError("timed out"), "timeout"),
    (OSError("read timed out"), "timeout"),
    (ConnectionResetError(), "ConnectionResetError"),
])
def test_failure_kinds(exc, kind):
    assert failure_kind(exc) == kind


def test_timeline_writer_starts_with_its_header():
    out = io.StringIO()
    writer = TimelineWriter(out, {"started": 1.5})
    writer.write_all([{"t": 1}, {"t": 2}])
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"header": {"started": 1.5}}, {"t": 1}, {"t": 2}]


def test_repeated_seconds_are_added_up():
    a = {"t": 3, "requests": 10, "failures": 1, "retried": 0, "p95": 9.0,
         "errors": {"x": 1}, "nodes": {"n": [10, 1]}}
    b = {"t": 3, "requests": 30, "failures": 0, "retried": 2, "p95": 4.0,
         "errors": {}, "nodes": {"n": [20, 0], "m": [10, 0]}}
    (merged,) = _merge_seconds([a, b])
    assert merged == {"t": 3, "requests": 40, "failures": 1, "retried": 2, "p95": 4.0,
                      "errors": {"x": 1}, "nodes": {"m": [10, 0], "n": [30, 1]}}


@pytest.mark.parametrize("limits,requests,failures,p95,code,reasons", [
    (Thresholds(max_fail_ratio=0.01), 1000, 10, 5.0, 0,
     ["failure ratio 1.0000% (10/1000) <= 1.0000%"]),
    (Thresholds(max_fail_ratio=0.01), 1000, 11, 5.0, 1,
     ["failure ratio 1.1000% (11/1000) > 1.0000%"]),
    (Thresholds(max_p95_ms=50), 10, 0, 51.0, 1, ["p95 51 ms > 50 ms"]),
    (Thresholds(max_fail_ratio=0.5, max_p95_ms=50), 10, 1, 20.0, 0,
     ["failure ratio 10.0000% (1/10) <= 50.0000%", "p95 20 ms <= 50 ms"]),
    (Thresholds(max_fail_ratio=1.0), 0, 0, None, 1,
     ["no request completed: nothing was measured"]),
])
def test_threshold_verdicts(limits, requests, failures, p95, code, reasons):
    assert verdict(limits, requests, failures, p95) == (code, reasons)


def test_thresholds_are_optional():
    assert not Thresholds().given
    assert Thresholds(max_p95_ms=10).given


def test_url_lists():
    assert split_urls("127.0.0.1:8001, http://127.0.0.1:8002/x 127.0.0.1:8001") == [
        "http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert normalize_url("https://[::1]:8443/") == "https://[::1]:8443"
    assert split_urls(None) == []
    for bad in ("ftp://x:1", "http://"):
        with pytest.raises(TargetError):
            normalize_url(bad)


def test_registry_gives_live_nodes_only_in_id_order():
    status = {"leader": "n2", "nodes": [
        {"node_id": "n3", "address": "127.0.0.1:3", "alive": True},
        {"node_id": "n1", "address": "127.0.0.1:1", "alive": True},
        {"node_id": "n2", "address": "127.0.0.1:2", "alive": False},
        {"node_id": "n4", "address": "", "alive": True}]}
    assert urls_from_status(status) == ["http://127.0.0.1:1", "http://127.0.0.1:3"]
