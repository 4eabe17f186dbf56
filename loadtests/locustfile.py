"""Locust users that spread requests over every node of a Polycorn cluster.

    locust -f loadtests/locustfile.py --headless -u 20 -r 20 -t 60s \
        --nodes 127.0.0.1:8001,127.0.0.1:8002 [--rate 20] [--max-fail-ratio 0.001]
    locust -f loadtests/locustfile.py --cluster NAME --redis URL ...   (nodes from the registry)
    locust -f loadtests/locustfile.py ... HttpNodeUser                 (requests instead of
                                                                        geventhttpclient)

Each user sends its requests to the nodes in turn (a per-user starting offset
spreads the users), with short connect and network timeouts so a dead node costs
milliseconds. What counts as failed: no complete response (refused, reset,
timeout, closed, truncated) or a status >= 400; the only retry that does not
count is the RFC 9112 9.3.1 one (retry_policy.py), and it is counted apart.
Extras: a per-second timeline (--timeline-file) and an exit code from
thresholds (--max-fail-ratio, --max-p95-ms) instead of "1 on any failure".
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

try:
    import loadtests  # noqa: F401 - run from the project root, or installed
except ImportError:  # `locust -f path/to/locustfile.py` from anywhere else
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent
from locust import FastHttpUser, HttpUser, constant, constant_throughput, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests import retry_policy
from loadtests.targets import TargetError, registry_urls, split_urls
from loadtests.thresholds import Thresholds, verdict
from loadtests.timeline import SecondBuckets, TimelineWriter, failure_kind

log = logging.getLogger("polycorn.load")

REGISTRY_REFRESH = 3.0  # seconds between two reads of the registry's live nodes
FLUSH_EVERY = 0.5  # seconds between two writes of closed timeline seconds


class Nodes:
    """The URLs the users spread over (read by every user at each request)."""

    urls: list[str] = []
    source = "none"


_user_numbers = itertools.count()
_buckets = SecondBuckets()
_writer: TimelineWriter | None = None
_flusher: gevent.Greenlet | None = None


class _Spread:
    """The task both user classes share: the next node in turn, the next path in turn."""

    paths: list[str] = ["/"]

    def on_start(self) -> None:
        self._turn = itertools.count(next(_user_numbers))

    def next_url(self) -> tuple[str, str]:
        turn = next(self._turn)
        nodes = Nodes.urls
        path = self.paths[turn % len(self.paths)]
        return nodes[turn % len(nodes)] + path, path


class NodeUser(_Spread, FastHttpUser):
    """The default user: geventhttpclient (about 3x the requests/s of HttpNodeUser)."""

    connection_timeout = 0.5
    network_timeout = 2.0
    max_retries = 0
    wait_time = constant(0)

    @task
    def get(self) -> None:
        url, path = self.next_url()
        self.client.get(url, name=path)


class HttpNodeUser(_Spread, HttpUser):
    """The same load through requests/urllib3 (select it by naming it on the command line).

    Stricter than NodeUser: no retry at all, so an idle keep-alive connection the
    server closed just as a request went out counts as a failure.
    """

    timeouts: tuple[float, float] = (0.5, 2.0)
    wait_time = constant(0)

    @task
    def get(self) -> None:
        url, path = self.next_url()
        self.client.get(url, name=path, timeout=self.timeouts)


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("Polycorn", "where the load goes and when the run fails")
    group.add_argument("--nodes", default="", metavar="URLS",
                       help="comma-separated node URLs or HOST:PORT (default: --host, which "
                            "may also be such a list)")
    group.add_argument("--cluster", default="", metavar="NAME",
                       help="take the live nodes of this cluster from the registry")
    group.add_argument("--redis", default="", metavar="URL", help="the cluster's Redis URL")
    group.add_argument("--paths", default="/", metavar="PATHS",
                       help="comma-separated paths requested in turn (default: /)")
    group.add_argument("--rate", type=float, default=0.0, metavar="N",
                       help="requests per second per user (default 0: as fast as possible)")
    group.add_argument("--connect-timeout", type=float, default=0.5, metavar="SECONDS",
                       help="TCP connect timeout (default 0.5; Locust's own is 60)")
    group.add_argument("--network-timeout", type=float, default=2.0, metavar="SECONDS",
                       help="timeout waiting for response bytes (default 2.0)")
    group.add_argument("--max-fail-ratio", type=float, default=None, metavar="RATIO",
                       help="exit 1 when failed/all requests exceeds this (e.g. 0.001)")
    group.add_argument("--max-p95-ms", type=float, default=None, metavar="MS",
                       help="exit 1 when the overall 95th percentile exceeds this")
    group.add_argument("--timeline-file", default="", metavar="PATH",
                       help="append one JSON line per second (requests, failures, retries, "
                            "latency percentiles, errors, per-node counts)")


def _fail(message: str) -> None:
    sys.stderr.write(f"locustfile: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _initial_nodes(opts) -> None:
    try:
        if opts.cluster or opts.redis:
            if not (opts.cluster and opts.redis):
                _fail("--cluster and --redis go together")
            Nodes.urls, Nodes.source = registry_urls(opts.cluster, opts.redis), "registry"
            if not Nodes.urls:
                _fail(f"cluster {opts.cluster!r} has no live node at {opts.redis}")
        else:
            Nodes.urls = split_urls(opts.nodes or opts.host)
            Nodes.source = "list"
    except TargetError as exc:
        _fail(str(exc))
    if not Nodes.urls:
        _fail("no node to load: give --nodes, --host, or --cluster with --redis")


def _refresh_registry(cluster: str, redis_url: str) -> None:
    while True:
        gevent.sleep(REGISTRY_REFRESH)
        try:
            fresh = registry_urls(cluster, redis_url)
        except (TargetError, ValueError) as exc:
            log.warning("keeping %d nodes: registry read failed: %s", len(Nodes.urls), exc)
            continue
        if fresh and fresh != Nodes.urls:
            log.info("nodes from the registry: %s", ", ".join(fresh))
            Nodes.urls = fresh


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    global _writer
    opts = environment.parsed_options
    if opts is None:  # used as a library, without Locust's command line
        return
    if not opts.user_classes:  # nothing named: the default user only, not both
        environment.user_classes[:] = [c for c in environment.user_classes if c is NodeUser]
    _initial_nodes(opts)
    environment.host = Nodes.urls[0]  # Locust requires a base host; every URL is absolute
    paths = [p if p.startswith("/") else "/" + p for p in opts.paths.split(",") if p.strip()]
    _Spread.paths = paths or ["/"]
    wait = constant_throughput(opts.rate) if opts.rate > 0 else constant(0)
    for user in (NodeUser, HttpNodeUser):
        user.wait_time = wait
    NodeUser.connection_timeout = opts.connect_timeout
    NodeUser.network_timeout = opts.network_timeout
    HttpNodeUser.timeouts = (opts.connect_timeout, opts.network_timeout)
    _open_history()
    policy = retry_policy.install(lambda _peer: _buckets.add_retry(time.time()))
    if isinstance(environment.runner, MasterRunner):
        return  # the workers send the requests and record them
    if Nodes.source == "registry":
        gevent.spawn(_refresh_registry, opts.cluster, opts.redis)
    if opts.timeline_file:
        path = opts.timeline_file
        if isinstance(environment.runner, WorkerRunner):
            path = f"{path}.{os.getpid()}"  # one file per worker process
        header = {"started": time.time(), "nodes": Nodes.urls, "source": Nodes.source,
                  "retry_policy": policy, "paths": _Spread.paths, "rate_per_user": opts.rate,
                  "connect_timeout": opts.connect_timeout,
                  "network_timeout": opts.network_timeout,
                  "users": [c.__name__ for c in environment.user_classes]}
        _writer = TimelineWriter(open(path, "a"), header)  # noqa: SIM115 - closed at quitting


_history = None  # polycorn.ha.history.History when POLYCORN_HISTORY is set


def _open_history() -> None:
    global _history
    if os.environ.get("POLYCORN_HISTORY"):
        from polycorn.ha import history

        _history = history.open_from_env("load")


@events.request.add_listener
def _on_request(response_time, exception, url=None, name="", **_kw) -> None:
    node = urlsplit(url).netloc if url else str(name)
    _buckets.add(time.time(), float(response_time or 0.0), node, exception)
    if _history is not None:
        # Jepsen's rule: a timeout is indeterminate (the server may have done it); any
        # other error is a failure the client saw, a response is ok.
        kind = None if exception is None else failure_kind(exception)
        done = time.clock_gettime(time.CLOCK_MONOTONIC)
        _history.record("http", t=done - float(response_time or 0.0) / 1000, t1=done,
                        node=node, ok=exception is None, error=kind,
                        indeterminate=kind == "timeout")


def _flush_loop() -> None:
    while True:
        gevent.sleep(FLUSH_EVERY)
        if _writer is not None:
            _writer.write_all(_buckets.pop_closed(time.time()))


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    global _flusher
    if _writer is not None and _flusher is None:
        _flusher = gevent.spawn(_flush_loop)


@events.quitting.add_listener
def _on_quitting(environment, **_kw) -> None:
    if _flusher is not None:
        _flusher.kill(block=False)
    if _writer is not None:
        _writer.write_all(_buckets.pop_all())
        _writer.out.close()
    opts = environment.parsed_options
    limits = Thresholds(getattr(opts, "max_fail_ratio", None), getattr(opts, "max_p95_ms", None))
    if not limits.given:
        return  # Locust's own rule: 1 on any failure
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else None
    code, reasons = verdict(limits, total.num_requests, total.num_failures, p95)
    for reason in reasons:
        log.info("threshold: %s", reason)
    environment.process_exit_code = code
