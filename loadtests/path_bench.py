"""CPU per request of the workers' whole Python path, in-process: this tree against another.

`bench.py` measures servers under wrk, through the kernel; on a shared or throttled
machine its CPU per request moves by tens of percent between runs. This tool takes
the kernel and the scheduler out: it drives the event worker's HTTPProtocol (with a
transport that only counts bytes; on one kept-alive connection, and on a connection
per request; and bench.py's 4 KiB echo on a kept-alive connection) and the blocking
handler's ClientConnection (over a socketpair) for a hello app, bytes in to response
bytes out, and reads the CPU time
of the process. Each checkout runs in its own child process (its packages first on
PYTHONPATH, as bench.py's --against does); children of the two checkouts alternate,
and every figure is the median of per-child minima, so a noisy second moves both.

    .venv/bin/python loadtests/path_bench.py --against before=/tmp/before [--access-log]
    .venv/bin/python loadtests/path_bench.py --against off=. --metrics  # the metrics' cost
    .venv/bin/python loadtests/path_bench.py --rss 3000000   # this tree: RSS over many requests

A tool, not a test: the figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GET = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
# bench.py's echo: a 4 KiB POST body read whole and sent back.
POST = (b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 4096\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 4096)


def _app(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


def _echo_app(environ: dict, start_response) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


class _Transport:
    """An asyncio transport that counts what is written."""

    written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, parts) -> None:
        self.written += sum(map(len, parts))

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


def _child(tree: Path, rounds: int, requests: int, access_log: bool,
           metrics: bool = False) -> dict:
    """Runs in the child: minimum CPU us per request of each path over `rounds`."""
    import asyncio
    import gc
    import socket

    sys.path.insert(0, str(tree / "tests" / "wsgi"))
    from polycorn.server.workers.base import RunState
    from polycorn.server.workers.event_context import ServingContext
    from polycorn.server.workers.event_protocol import HTTPProtocol
    from polycorn.server.wsgi.handler import ClientConnection, WSGIHandler
    from wsgi_support import RecordingAccessLog, make_cfg

    def request_log():
        log = RecordingAccessLog(enabled=access_log)
        if not metrics:
            return log
        # The Prometheus sink behind the instruments, as a worker with --metrics-bind has it.
        from polycorn.metrics.sink import MetricsSink
        from polycorn.server.instrument import Instruments
        from polycorn.server.instrument.requests import ObservedAccessLog
        log.format = ""
        sink = MetricsSink(tempfile.mkdtemp(), threaded=False)  # as for the sync and event workers
        return ObservedAccessLog(log, Instruments([sink]))

    class Worker:
        state = RunState.RUNNING
        alive = True
        ssl_context = None  # plain HTTP (ServingContext reads it)

        def __init__(self, cfg, handler, app=_app) -> None:
            self.cfg, self.handler, self.app = cfg, handler, app

        def count_request(self) -> None: ...

    def event_round(raw: bytes = GET, app=_app) -> float:
        cfg = make_cfg(worker_connections=1000, backlog=2048, health_check=None, keepalive=5)
        handler = WSGIHandler(app, cfg, None, request_log())
        loop = asyncio.new_event_loop()
        ctx = ServingContext(Worker(cfg, handler, app), loop, on_last_connection=lambda: None)
        proto = HTTPProtocol(ctx, handler.environ_builder(("127.0.0.1", 8000), "http"))
        proto.connection_made(_Transport())
        started = time.process_time()
        for _ in range(requests):
            proto.data_received(raw)
        spent = time.process_time() - started
        assert proto.served == requests
        loop.close()
        return spent / requests

    def event_close_round() -> float:
        """A connection per request (wrk's Connection: close): made, served, lost."""
        cfg = make_cfg(worker_connections=1000, backlog=2048, health_check=None, keepalive=5)
        handler = WSGIHandler(_app, cfg, None, request_log())
        loop = asyncio.new_event_loop()
        ctx = ServingContext(Worker(cfg, handler), loop, on_last_connection=lambda: None)
        builder = handler.environ_builder(("127.0.0.1", 8000), "http")
        started = time.process_time()
        for _ in range(requests):
            proto = HTTPProtocol(ctx, builder)
            proto.connection_made(_Transport())
            proto.data_received(GET_CLOSE)
            proto.connection_lost(None)
        spent = time.process_time() - started
        assert proto.served == 1
        loop.close()
        return spent / requests

    def blocking_round() -> float:
        cfg = make_cfg(health_check=None)
        handler = WSGIHandler(_app, cfg, None, request_log())
        ours, theirs = socket.socketpair()
        conn = ClientConnection(handler, ours, ("127.0.0.1", 5555), ("127.0.0.1", 8000),
                                keep_alive=True)
        started = time.process_time()
        for _ in range(requests):
            theirs.sendall(GET)
            assert conn.serve_one()
            theirs.recv(65536)
        spent = time.process_time() - started
        conn.close()
        theirs.close()
        return spent / requests

    gc.disable()  # a collection landing in one round would be its minimum's noise
    return {name: 1e6 * min(fn() for _ in range(rounds))
            for name, fn in (("event", event_round), ("event, close", event_close_round),
                             ("event, 4 KiB echo", lambda: event_round(POST, _echo_app)),
                             ("blocking", blocking_round))}


def rss_over(requests: int, samples: int = 10) -> list[tuple[int, int]]:
    """(requests served, RSS KiB) of this process while the event path serves `requests`
    on kept-alive connections (a new one every 1000 requests): flat when nothing leaks."""
    import asyncio

    sys.path.insert(0, str(HERE.parent / "tests" / "wsgi"))
    from polycorn.server.workers.base import RunState
    from polycorn.server.workers.event_context import ServingContext
    from polycorn.server.workers.event_protocol import HTTPProtocol
    from polycorn.server.wsgi.handler import WSGIHandler
    from wsgi_support import RecordingAccessLog, make_cfg

    class Worker:
        state = RunState.RUNNING
        alive = True
        ssl_context = None  # plain HTTP (ServingContext reads it)

        def __init__(self, cfg, handler) -> None:
            self.cfg, self.handler, self.app = cfg, handler, _app

        def count_request(self) -> None: ...

    cfg = make_cfg(worker_connections=1000, backlog=2048, health_check=None, keepalive=5)
    handler = WSGIHandler(_app, cfg, None, RecordingAccessLog(enabled=False))
    loop = asyncio.new_event_loop()
    ctx = ServingContext(Worker(cfg, handler), loop, on_last_connection=lambda: None)
    ctx._accepting = True  # no listeners here: nothing to resume when connections end
    builder = handler.environ_builder(("127.0.0.1", 8000), "http")
    out, served, step = [], 0, max(1000, requests // samples)
    while served < requests:
        for _ in range(step // 1000):
            proto = HTTPProtocol(ctx, builder)
            proto.connection_made(_Transport())
            for _ in range(1000):
                proto.data_received(GET)
            proto.connection_lost(None)
        served += step
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        out.append((served, rss))
    loop.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="LABEL=CHECKOUT")
    parser.add_argument("--rss", type=int, metavar="REQUESTS",
                        help="instead: this tree's RSS while serving this many requests")
    parser.add_argument("--children", type=int, default=8, help="child processes per tree")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per child")
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--access-log", action="store_true", help="with an access log on")
    parser.add_argument("--metrics", action="store_true",
                        help="this tree with the Prometheus sink (--metrics-bind) on")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(Path(args.child), args.rounds, args.requests, args.access_log,
                                args.metrics)))
        return 0
    if args.rss:
        from polycorn.server import accel
        print(f"request path: {accel.describe()}")
        for served, rss in rss_over(args.rss):
            print(f"{served:>10,} requests: RSS {rss:,} KiB")
        return 0
    if not args.against:
        parser.error("--against or --rss is required")
    sys.path.insert(0, str(HERE))
    from bench import package_shim

    label, _, other = args.against.partition("=")
    other_tree = Path(other).resolve()
    this_tree = HERE.parent
    if not label or not (other_tree / "pyproject.toml").is_file():
        parser.error(f"--against wants LABEL=CHECKOUT, got {args.against!r}")
    workdir = Path(tempfile.mkdtemp(prefix="polycorn-path-bench-"))
    trees = {"this tree": (this_tree, package_shim(this_tree, workdir, "this")),
             label: (other_tree, package_shim(other_tree, workdir, label))}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for child in range(args.children):
        order = list(trees) if child % 2 == 0 else list(reversed(trees))
        for name in order:
            tree, shim = trees[name]
            cmd = [sys.executable, str(Path(__file__).resolve()), "--against", args.against,
                   "--child", str(tree), "--rounds", str(args.rounds),
                   "--requests", str(args.requests)] + (["--access-log"] * args.access_log) \
                + (["--metrics"] * (args.metrics and name == "this tree"))
            env = {**os.environ, "PYTHONPATH": str(shim)}
            out = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True,
                                 check=True).stdout
            results[name].append(json.loads(out))
    print(f"CPU us per request, median of {args.children} children's best of {args.rounds} "
          f"rounds x {args.requests} requests; access log {'on' if args.access_log else 'off'}"
          + ("; metrics on in this tree" if args.metrics else ""))
    print("| path | this tree | " + label + " | ratio |\n|---|---:|---:|---:|")
    for path in ("event", "event, close", "event, 4 KiB echo", "blocking"):
        ours = statistics.median(r[path] for r in results["this tree"])
        theirs = statistics.median(r[path] for r in results[label])
        print(f"| {path} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
