"""Observer's base methods are no-ops: a sink overrides only what it measures, and the
fan-out never reports a sink's failure for a call the sink does not implement."""

from __future__ import annotations

import logging

from polycorn.server.instrument import Instruments, Observer


class OnlyRequests(Observer):
    def __init__(self) -> None:
        self.seen = []

    def request_finished(self, method, status, duration, bytes_out, bytes_in=0) -> None:
        self.seen.append((method, status, bytes_in))


def test_a_sink_that_measures_requests_only_takes_every_other_call_silently(caplog):
    sink = OnlyRequests()
    instruments = Instruments([sink])
    with caplog.at_level(logging.DEBUG, logger="polycorn.error"):
        instruments.workers(3)
        instruments.backlog(1)
        instruments.log_record("warning")
        instruments.event("upgrade_promoted", "")
        instruments.tick()
        instruments.request_started()
        instruments.worker_exited("timeout")
        instruments.worker_states({"ready": 1})
        instruments.generation_ready(0.5)
        instruments.connections(2)
        instruments.cluster_state({"state": "ready"})
        instruments.cluster_count("redis_error")
        instruments.request_finished("GET", 200, 0.01, 5, 7)
        instruments.close()
    assert sink.seen == [("GET", 200, 7)]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
