"""The aggregation of slot files: real processes (forked here) write them, real files are
folded; the exposition is parsed back with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import signal

import pytest
from polycorn.metrics import schema
from polycorn.metrics.aggregate import RETIRED, Aggregator
from polycorn.metrics.exposition import NodeCollector
from polycorn.metrics.sink import MetricsSink
from polycorn.metrics.slots import SUFFIX
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

REQ = "polycorn_http_requests"


def key(name: str, **labels: str) -> tuple:
    family = schema.BY_NAME[name]
    return (name, tuple((label, labels[label]) for label in family.labels))


_started: list[Child] = []


@pytest.fixture(autouse=True)
def _children():
    """Every forked child is gone after its test, whatever the test did."""
    yield
    while _started:
        child = _started.pop()
        if not child.done:
            child.finish(signal.SIGKILL)


class Child:
    """A forked process that reports through the sink, then waits to be told to exit."""

    def __init__(self, directory: str, report) -> None:
        self.done = False
        _started.append(self)
        self.go_r, self.go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            status = 0
            os.close(ready_r)
            try:
                report(MetricsSink(directory))
                os.write(ready_w, b"x")
                os.read(self.go_r, 1)
            except BaseException:
                status = 1
            os._exit(status)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"
        os.close(ready_r)

    def finish(self, sig: int | None = None) -> None:
        self.done = True
        if sig is None:
            os.write(self.go_w, b"x")
        else:
            os.kill(self.pid, sig)
        os.waitpid(self.pid, 0)
        os.close(self.go_w)
        os.close(self.go_r)


def requests(n: int, method: str = "GET", status: int = 200, started: int | None = None):
    def report(sink: MetricsSink) -> None:
        for _ in range(n if started is None else started):
            sink.request_started()
        for _ in range(n):
            sink.request_finished(method, status, 0.02, 100, 7)
        sink.worker_states({"ready": 2, "booting": 1})
        sink.connections(3)
    return report


def slot_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))


def test_a_dead_process_keeps_its_counters_and_loses_its_gauges(tmp_path):
    agg = Aggregator(str(tmp_path))
    a = Child(str(tmp_path), requests(3))
    b = Child(str(tmp_path), requests(2, "POST", 503, started=4))
    live = agg.collect()
    assert live.live == 2 and live.folded == 0
    assert live.values[key(REQ, method="GET", status="2xx")] == 3
    assert live.values[key(REQ, method="POST", status="5xx")] == 2
    assert live.values[key("polycorn_workers", state="ready")] == 4
    assert live.in_flight == 2  # b started 4, answered 2
    assert live.values[key("polycorn_http_connections_open")] == 6
    a.finish(signal.SIGKILL)  # no goodbye: its counts are in its file already
    b.finish()
    after = agg.collect()
    assert after.live == 0 and after.folded == 2
    assert after.values[key(REQ, method="GET", status="2xx")] == 3
    assert after.values[key(REQ, method="POST", status="5xx")] == 2
    assert after.values[key("polycorn_http_response_body_bytes")] == 500
    assert after.values[key("polycorn_http_request_body_bytes")] == 35
    assert key("polycorn_workers", state="ready") not in after.values
    assert key("polycorn_http_connections_open") not in after.values
    assert after.in_flight == 0
    assert slot_files(tmp_path) == []  # folded files do not pile up
    again = agg.collect()  # nothing left to fold: the same totals, from retired.json alone
    assert again.values == after.values


def test_a_fold_cut_short_before_the_deletion_is_not_counted_twice(tmp_path):
    agg = Aggregator(str(tmp_path))
    child = Child(str(tmp_path), requests(5))
    child.finish()
    (name,) = slot_files(tmp_path)
    # As if a sidecar died between writing retired.json and deleting the file.
    (tmp_path / RETIRED).write_text(json.dumps({
        "values": [[REQ, [["method", "GET"], ["status", "2xx"]], 5.0]], "folded": [name]}))
    totals = agg.collect()
    assert totals.values[key(REQ, method="GET", status="2xx")] == 5
    assert slot_files(tmp_path) == []
    assert json.loads((tmp_path / RETIRED).read_text())["folded"] == []


def test_two_aggregators_on_one_directory_never_see_a_counter_go_down(tmp_path):
    """An old and a new metrics sidecar during a hand-over both collect."""
    first, second = Aggregator(str(tmp_path)), Aggregator(str(tmp_path))
    seen = []
    children = [Child(str(tmp_path), requests(i + 1)) for i in range(6)]
    for i, child in enumerate(children):
        child.finish(signal.SIGKILL if i % 2 else None)
        for agg in (first, second):
            seen.append(agg.collect().values.get(key(REQ, method="GET", status="2xx"), 0))
    assert seen == sorted(seen) and seen[-1] == sum(range(1, 7))


def test_processes_forked_from_a_reporting_parent_write_files_of_their_own(tmp_path):
    sink = MetricsSink(str(tmp_path))
    sink.worker_exited("timeout")  # the parent (a master) has its file now
    child = Child(str(tmp_path), lambda _: sink.worker_exited("crashed"))
    totals = Aggregator(str(tmp_path)).collect()
    assert totals.live == 2
    assert totals.values[key("polycorn_worker_exits", reason="timeout")] == 1
    assert totals.values[key("polycorn_worker_exits", reason="crashed")] == 1
    child.finish()


@pytest.mark.parametrize(("method", "status", "series"), [
    ("GET", 200, ("GET", "2xx")), ("BREW", 418, ("other", "4xx")),
    ("DELETE", 101, ("DELETE", "1xx")), ("HEAD", 304, ("HEAD", "3xx")),
])
def test_each_request_lands_in_its_method_and_status_class(tmp_path, method, status, series):
    child = Child(str(tmp_path), lambda sink: sink.request_finished(method, status, 0.1, 0))
    values = Aggregator(str(tmp_path)).collect().values
    child.finish()
    assert values[key(REQ, method=series[0], status=series[1])] == 1
    assert sum(v for k, v in values.items() if k[0] == REQ) == 1


def exposition(directory: str, now: float = 1000.0) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(Aggregator(directory), clock=lambda: now))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_exposition_follows_prometheus_conventions(tmp_path):
    def report(sink: MetricsSink) -> None:
        for duration in (0.005, 0.006, 0.3, 11.0):  # le="0.005" holds 0.005 itself
            sink.request_finished("GET", 200, duration, 10)
        sink.event("upgrade_rolled_back", "the new master was not ready within 60s")
    child = Child(str(tmp_path), report)
    samples = exposition(str(tmp_path))
    child.finish()
    hist = "polycorn_http_request_duration_seconds"
    assert samples[(hist + "_bucket", (("le", "0.005"),))] == 1
    assert samples[(hist + "_bucket", (("le", "0.01"),))] == 2
    assert samples[(hist + "_bucket", (("le", "10.0"),))] == 3
    assert samples[(hist + "_bucket", (("le", "+Inf"),))] == 4
    assert samples[(hist + "_count", ())] == 4
    assert samples[(hist + "_sum", ())] == pytest.approx(11.311)
    assert samples[("polycorn_http_requests_total", (("method", "GET"), ("status", "2xx")))] == 4
    rolled = (("outcome", "rolled_back"), ("reason", "timeout"), ("signal", "usr2"))
    assert samples[("polycorn_reloads_total", rolled)] == 1
    # Only the reasons that happened: no 42 zero series.
    assert not any(n == "polycorn_reloads_total" and dict(labels)["reason"] == "exited"
                   for n, labels in samples)
    # A stand-alone node shows no cluster series.
    assert not any(n.startswith("polycorn_cluster_") for n, _ in samples)


def test_the_agents_view_shows_with_the_heartbeat_age(tmp_path):
    def report(sink: MetricsSink) -> None:
        sink.cluster_state({"state": "ready", "leader": True, "epoch": 7, "heartbeat": 990.0})
        sink.cluster_count("redis_error")
        sink.cluster_count("command_rejected")
    child = Child(str(tmp_path), report)
    samples = exposition(str(tmp_path), now=1000.5)
    child.finish()
    assert samples[("polycorn_cluster_node_state", (("state", "ready"),))] == 1
    assert samples[("polycorn_cluster_node_state", (("state", "draining"),))] == 0
    assert samples[("polycorn_cluster_leader", ())] == 1
    assert samples[("polycorn_cluster_epoch", ())] == 7
    assert samples[("polycorn_cluster_heartbeat_age_seconds", ())] == pytest.approx(10.5)
    assert samples[("polycorn_cluster_redis_errors_total", ())] == 1
    assert samples[("polycorn_cluster_fenced_commands_total", (("outcome", "rejected"),))] == 1


@pytest.mark.parametrize(("text", "reason"), [
    ("the new master was not ready within 60s", "timeout"),
    ("new worker failed to boot: boom", "boot_failed"),
    ("the new master exited (exit status 3)", "exited"),
    ("could not pass the sockets: EPIPE", "sockets"),
    ("something else", "other"),
])
def test_rollback_reasons_are_a_bounded_set(text, reason):
    assert schema.rollback_reason(text) == reason


def test_a_half_made_slot_file_is_removed_once_stale(tmp_path):
    fresh, stale = tmp_path / f"1-a{SUFFIX}.tmp", tmp_path / f"2-b{SUFFIX}.tmp"
    fresh.write_bytes(b"")
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    assert Aggregator(str(tmp_path)).collect().live == 0
    assert fresh.exists() and not stale.exists()
