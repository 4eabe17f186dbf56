"""The instrumentation layer in one process, over real sockets: the statsd lines
exactly, the error log's level counters, the access log's reporting point, the
backlog read from a real listener, and dead targets that cost microseconds and
one log line a minute, never an exception."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from polycorn.server import instrument
from polycorn.server.config.loader import load_config
from polycorn.server.instrument import datagram, statsd
from polycorn.server.instrument.datagram import DatagramSender
from polycorn.server.instrument.master import backlog
from polycorn.server.instrument.observer import Instruments, Observer
from polycorn.server.instrument.requests import ObservedAccessLog, request_log
from polycorn.server.instrument.statsd import StatsdSink, normalize_prefix
from polycorn.server.logs import AccessLogger
from support.procs import wait_until
from support.statsd import StatsdReceiver


@pytest.fixture
def receiver():
    with StatsdReceiver() as r:
        yield r


@pytest.fixture
def configured():
    """configure() the process's instruments for a test, and switch them off after."""
    error_log = logging.getLogger("polycorn.error")

    def configure(*args: str) -> instrument.Instruments:
        return instrument.configure(load_config([*args, "app:app"], {}), error_log)

    yield configure
    configure()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def error_lines():
    logger = logging.getLogger("polycorn.error")
    handler = Captured()
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def lines(receiver: StatsdReceiver, n: int) -> list[str]:
    wait_until(lambda: len(receiver.metrics()) >= n, 5, what=f"{n} statsd lines")
    time.sleep(0.05)
    with receiver._lock:
        return [line for d in receiver.datagrams for line in d.split("\n")]


@pytest.mark.parametrize("given, expected", [
    ("", ""), (None, ""), ("app", "app."), ("app.", "app."), ("app...", "app."),
    ("a", "a."), ("my.app", "my.app."), (".", ""),
])
def test_prefix_gets_exactly_one_trailing_dot(given, expected):
    assert normalize_prefix(given) == expected


def test_every_metric_as_gunicorn_spells_it_with_prefix_and_tags(receiver):
    sink = StatsdSink(DatagramSender(("127.0.0.1", receiver.port)), "shop", "env:prod,az:b")
    sink.request_finished("GET", 200, 0.0123456, 512)
    sink.workers(4)
    sink.backlog(7)
    for level in ("critical", "error", "warning", "exception"):
        sink.log_record(level)
    sink.event("upgrade_promoted", "new master pid 42")
    sink.close()  # sends the batched request metrics
    t = "|#env:prod,az:b"
    assert lines(receiver, 10) == [
        f"shop.gunicorn.workers:4|g{t}",
        f"shop.gunicorn.backlog:7|h{t}",
        f"shop.gunicorn.log.critical:1|c|@1.0{t}",
        f"shop.gunicorn.log.error:1|c|@1.0{t}",
        f"shop.gunicorn.log.warning:1|c|@1.0{t}",
        f"shop.gunicorn.log.exception:1|c|@1.0{t}",
        f"shop.polycorn.upgrade_promoted:1|c|@1.0{t}",
        f"shop.gunicorn.request.duration:12.346|ms{t}",
        f"shop.gunicorn.requests:1|c|@1.0{t}",
        f"shop.gunicorn.request.status.200:1|c|@1.0{t}",
    ]


def test_request_metrics_are_batched_into_datagrams_that_fit_a_frame(receiver):
    sink = StatsdSink(DatagramSender(("127.0.0.1", receiver.port)), "shop", "env:prod")
    for i in range(100):
        sink.request_finished("GET", 404 if i % 10 == 0 else 200, 0.001, 6)
    sink.tick()  # the batch is younger than FLUSH_INTERVAL: kept
    time.sleep(statsd.FLUSH_INTERVAL + 0.01)
    sink.tick()  # now due: sent
    wait_until(lambda: receiver.total("shop.gunicorn.requests") == 100, 5, what="100 requests")
    # One timer line per request; the counters summed per datagram, to the same totals.
    assert len(receiver.named("shop.gunicorn.request.duration")) == 100
    assert receiver.total("shop.gunicorn.request.status.200") == 90
    assert receiver.total("shop.gunicorn.request.status.404") == 10
    sizes = [len(d) for d in receiver.datagrams]
    assert len(sizes) < 10  # not 100 (one per request), nor 300 (Gunicorn's)
    assert max(sizes) <= statsd.MAX_PAYLOAD
    assert min(sizes[:-1]) > statsd.MAX_PAYLOAD - 150  # full, but for the last
    sink.close()


def test_a_full_batch_is_sent_by_the_request_that_fills_it(receiver):
    sink = StatsdSink(DatagramSender(("127.0.0.1", receiver.port)), "shop", "env:prod")
    for _ in range(sink.per_datagram):
        sink.request_finished("GET", 200, 0.001, 6)
    # With no tick and no close: one datagram, every request of it.
    assert receiver.wait_total("shop.gunicorn.requests", sink.per_datagram) == sink.per_datagram
    assert len(receiver.datagrams) == 1 and len(receiver.datagrams[0]) <= statsd.MAX_PAYLOAD
    assert sink.per_datagram >= 15
    sink.close()


def test_many_status_codes_in_one_batch_still_fit_the_datagrams(receiver):
    sink = StatsdSink(DatagramSender(("127.0.0.1", receiver.port)), "shop", "env:prod")
    for i in range(sink.per_datagram):
        sink.request_finished("GET", 200 + i, 0.001, 6)  # a counter line per status
    assert receiver.wait_total("shop.gunicorn.requests", sink.per_datagram)
    assert len(receiver.datagrams) >= 2
    assert max(len(d) for d in receiver.datagrams) <= statsd.MAX_PAYLOAD
    sink.close()


def test_without_prefix_or_tags(receiver):
    sink = StatsdSink(DatagramSender(("localhost", receiver.port)))  # a name, looked up once
    sink.request_finished("POST", 404, 0.5, 0)
    sink.close()
    assert lines(receiver, 3) == ["gunicorn.request.duration:500.000|ms",
                                  "gunicorn.requests:1|c|@1.0",
                                  "gunicorn.request.status.404:1|c|@1.0"]
    sink.close()


def test_a_unix_receiver_that_appears_later_or_restarts_is_reached(tmp_path, monkeypatch):
    monkeypatch.setattr(datagram, "RECONNECT_INTERVAL", 0.05)
    path = str(tmp_path / "statsd.sock")
    sink = StatsdSink(DatagramSender(path))
    sink.workers(1)  # nobody there yet: dropped, no exception
    assert sink.sender.dropped_total == 1  # one datagram, counted once
    with StatsdReceiver(unix_path=path) as first:
        time.sleep(0.06)
        sink.workers(2)
        assert lines(first, 1) == ["gunicorn.workers:2|g"]
    with StatsdReceiver(unix_path=path) as second:  # the same path, a new socket
        sink.workers(3)  # refused by the old peer: counted, reconnect is due
        time.sleep(0.06)
        sink.workers(4)
        assert lines(second, 1)[-1] == "gunicorn.workers:4|g"
    sink.close()


def _dead_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("target", ["udp-refused", "unix-missing", "unix-full"])
def test_a_dead_target_costs_microseconds_and_one_log_line(tmp_path, target, error_lines):
    stuck = None
    if target == "udp-refused":
        address: tuple[str, int] | str = ("127.0.0.1", _dead_udp_port())
    elif target == "unix-missing":
        address = str(tmp_path / "nobody.sock")
    else:  # a reader that never reads: a blocking socket would wait here forever
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stuck.bind(str(tmp_path / "stuck.sock"))
        address = str(tmp_path / "stuck.sock")
    sink = StatsdSink(DatagramSender(address), "app", "env:test")
    n = 5000
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        sink.request_finished("GET", 200, 0.001, 6)
    cpu, wall = (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n
    print(f"{target}: {cpu * 1e6:.1f} us CPU, {wall * 1e6:.1f} us wall per request")
    # n requests make about n / 25 datagrams; over UDP, about every other send fails
    # with the ICMP error of the one before.
    assert sink.sender.dropped_total >= n // 100
    assert cpu < 30e-6  # measured 1-2 us here; a blocked or reconnecting send costs more
    reports = [r.getMessage() for r in error_lines if "datagram(s) to" in r.getMessage()]
    assert len(reports) == 1 and "not sent" in reports[0], reports
    sink.close()
    if stuck is not None:
        stuck.close()


def test_the_error_log_counts_by_gunicorn_level_names(receiver, configured, error_lines):
    configured("--statsd-host", receiver.address)
    log = logging.getLogger("gunicorn.error")  # Gunicorn's name: the same logger
    level = log.level
    log.setLevel(logging.DEBUG)  # debug and info reach the filter, and are not counted
    log.debug("not counted")
    log.info("not counted")
    log.warning("w")
    log.error("e")
    try:
        raise RuntimeError("x")
    except RuntimeError:
        log.exception("x")
    log.critical("c")
    log.setLevel(level)
    assert sorted(lines(receiver, 4)) == ["gunicorn.log.critical:1|c|@1.0",
                                          "gunicorn.log.error:1|c|@1.0",
                                          "gunicorn.log.exception:1|c|@1.0",
                                          "gunicorn.log.warning:1|c|@1.0"]
    # A filter, not a handler: the Flask recipe copies handlers, and every record still
    # reaches them.
    assert [r.getMessage() for r in error_lines] == ["not counted"] * 2 + ["w", "e", "x", "c"]
    assert all(type(h).__name__ != "LevelCounter" for h in log.handlers)


def test_the_access_log_point_reports_only_when_an_instrument_is_on(receiver, configured):
    cfg = load_config(["app:app"], {})
    configured()
    assert type(request_log(cfg)) is AccessLogger  # nothing changes when statsd is off
    configured("--statsd-host", receiver.address)
    observed = request_log(cfg)
    assert isinstance(observed, ObservedAccessLog) and observed.enabled
    observed.log({"REQUEST_METHOD": "GET"}, "503 Service Unavailable", [], None, 0.002)
    instrument.current().close()
    assert "gunicorn.request.status.503:1|c|@1.0" in lines(receiver, 3)


def test_a_failing_sink_never_reaches_the_caller(receiver, error_lines):
    class Broken(Observer):
        def request_finished(self, *args):
            raise ValueError("sink bug")

    good = StatsdSink(DatagramSender(("127.0.0.1", receiver.port)))
    both = Instruments([Broken(), good])
    both.request_finished("GET", 200, 0.001, 1)
    both.close()
    assert "gunicorn.requests:1|c|@1.0" in lines(receiver, 3)  # the next sink still ran
    assert any("instrument sink Broken failed" in r.getMessage() for r in error_lines)
    assert not both.active


def test_backlog_reads_the_accept_queue_of_a_real_listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        assert backlog([listener]) == 3
        listener.accept()[0].close()
        assert backlog([listener]) == 2
    finally:
        for c in clients:
            c.close()
        listener.close()
    with socket.socket(socket.AF_UNIX) as unix:
        assert backlog([unix]) is None  # no TCP_INFO: not sampled
