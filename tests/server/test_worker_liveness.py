"""A worker waiting on its clients is serving, not hung: the master must not kill it.

The master kills a worker whose heartbeat is older than --timeout. A sync worker
used to wait in recv()/send() for as long as --timeout without a heartbeat, so one
silent client (a browser's speculative preconnection), a slow upload or a slow
reader took it to the limit and it was killed while serving (`make demo` logged
WORKER TIMEOUT under CPU contention). These tests hold such clients for more than
twice the timeout, under contention for the CPU when marked slow, and check that
no worker died, while a worker really stuck in the app is still killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
from support.http import get
from support.procs import ROOT, alive, kill_all, wait_until

APPS = ROOT / "tests" / "apps"
TIMEOUT = 2.0  # --timeout of the nodes under test
HOLD = 2.5 * TIMEOUT  # how long the clients keep the workers waiting


@dataclass
class Outcome:
    """What the clients saw; `problems` lists every unexpected answer."""

    served: int = 0
    problems: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bad(self, what: str) -> None:
        with self.lock:
            self.problems.append(what)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=4 * TIMEOUT)


def _read_response(sock: socket.socket, *, pace: float = 0.0, size: int = 65536) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if pace:
            time.sleep(pace)


def silent(port: int, until: float, out: Outcome) -> None:
    """Connects and says nothing; the server may close it (then connect again)."""
    while time.monotonic() < until:
        with contextlib.suppress(OSError), _connect(port) as sock:
            sock.settimeout(max(0.1, until - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                sock.recv(1)  # b"" once the server gives up on us: that is allowed


def slow_upload(port: int, until: float, out: Outcome) -> None:
    """POST /echo one byte at a time, for longer than --timeout in all."""
    body = b"0123456789" * 2
    pause = HOLD / len(body)
    try:
        with _connect(port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
            for byte in body:
                time.sleep(pause)
                sock.sendall(bytes([byte]))
            reply = _read_response(sock)
    except OSError as exc:
        out.bad(f"slow upload: {exc!r}")
        return
    if not (reply.startswith(b"HTTP/1.1 200") and reply.endswith(body)):
        out.bad(f"slow upload answered {reply[:80]!r}...{reply[-30:]!r}")


def slow_head(port: int, until: float, out: Outcome) -> None:
    """A request head sent in two halves, each gap shorter than --timeout."""
    try:
        with _connect(port) as sock:
            sock.sendall(b"GET /pid HTTP/1.1\r\n")
            time.sleep(0.6 * TIMEOUT)
            sock.sendall(b"Host: t\r\nConnection: close\r\n\r\n")
            reply = _read_response(sock)
    except OSError as exc:
        out.bad(f"slow head: {exc!r}")
        return
    if not reply.startswith(b"HTTP/1.1 200"):
        out.bad(f"slow head answered {reply[:80]!r}")


def slow_reader(port: int, until: float, out: Outcome) -> None:
    """GET 12 MB and read it slowly: the worker waits in send() for most of HOLD."""
    size = 12 * 1024 * 1024
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.settimeout(4 * TIMEOUT)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                         % size)
            # 64 KiB every 0.3 s: about 0.2 MB/s, for HOLD seconds
            pace = 0.3
            reply = b""
            while time.monotonic() < until:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
                time.sleep(pace)
            reply += _read_response(sock)
    except OSError as exc:
        out.bad(f"slow reader: {exc!r}")
        return
    head, _, body = reply.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or len(body) != size:
        out.bad(f"slow reader got {head[:40]!r} and {len(body)} of {size} bytes")


def keep_alive_idle(port: int, until: float, out: Outcome) -> None:
    """One request on a keep-alive connection, then silence (the server may close it)."""
    while time.monotonic() < until:
        try:
            with _connect(port) as sock:
                sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
                first = sock.recv(65536)
                if not first.startswith(b"HTTP/1.1 200"):
                    out.bad(f"keep-alive answered {first[:80]!r}")
                    return
                sock.settimeout(max(0.1, until - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    while sock.recv(65536):
                        pass
        except OSError as exc:
            out.bad(f"keep-alive: {exc!r}")
            return


def plain_gets(port: int, until: float, out: Outcome) -> None:
    """Ordinary requests meanwhile: the node keeps serving them."""
    while time.monotonic() < until:
        try:
            status = get(port, "/pid", timeout=4 * TIMEOUT)[0]
        except OSError as exc:
            out.bad(f"plain GET: {exc!r}")
            continue
        if status != 200:
            out.bad(f"plain GET answered {status}")
        else:
            with out.lock:
                out.served += 1
        time.sleep(0.05)


CLIENTS = (silent, silent, slow_upload, slow_head, slow_reader, keep_alive_idle, plain_gets)


def hold_clients(port: int) -> Outcome:
    out = Outcome()
    until = time.monotonic() + HOLD
    threads = [threading.Thread(target=c, args=(port, until, out), daemon=True) for c in CLIENTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HOLD + 6 * TIMEOUT)
        assert not t.is_alive(), f"client {t} still running"
    return out


@contextlib.contextmanager
def cpu_burners(count: int = 4):
    """Busy loops on every core (two per core of this 2-core machine), killed by pid."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        kill_all([p.pid for p in procs])
        for p in procs:
            p.wait(5)


def start_node(polycorn, port, worker: str, *extra: str):
    args = ["-b", f"127.0.0.1:{port}", "-k", worker, "-t", f"{TIMEOUT:g}",
            "--graceful-timeout", "2", *extra]
    # A sync worker serves one client at a time: the slow clients below hold up to six
    # of them at once, and the plain requests need the rest.
    count = 8 if worker == "sync" else 2
    args += ["-w", str(count)]
    if worker == "thread":
        args += ["--threads", "8"]
    server = polycorn(*args, "testapp:application", wait_port=port, cwd=APPS)
    workers = wait_until(lambda: (w := set(server.workers())) and len(w) == count and w,
                         15, what="the workers")
    wait_until(lambda: get(port, "/pid")[0] == 200, 10, what="an answer")
    return server, workers


def assert_nobody_killed(server, workers: set[int]) -> None:
    log = server.log()
    assert "WORKER TIMEOUT" not in log, log
    assert set(server.workers()) == workers, log


def assert_hung_worker_killed(server, port: int) -> None:
    """A request that never ends in the app still costs its worker (Gunicorn's --timeout)."""
    before = set(server.workers())

    def hang():
        with contextlib.suppress(OSError):
            get(port, "/sleep?s=3600", timeout=60)

    threading.Thread(target=hang, daemon=True).start()
    # --timeout, then SIGABRT, then SIGKILL 2 s later at worst: well inside 20 s.
    wait_until(lambda: "WORKER TIMEOUT" in server.log(), 20, what="the hung worker's timeout")
    killed = re.findall(r"WORKER TIMEOUT \(pid:(\d+)\)", server.log())
    assert len(killed) == 1 and int(killed[0]) in before, server.log()
    wait_until(lambda: not alive(int(killed[0])), 10, what="the hung worker to die")


def test_sync_worker_waiting_on_clients_is_not_killed(polycorn, port):
    server, workers = start_node(polycorn, port, "sync")
    out = hold_clients(port)
    assert not out.problems, out.problems
    assert out.served > 10
    assert_nobody_killed(server, workers)
    assert_hung_worker_killed(server, port)


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["sync", "thread", "event"])
def test_no_worker_killed_while_serving_under_cpu_contention(polycorn, port, worker):
    server, workers = start_node(polycorn, port, worker)
    with cpu_burners():
        out = hold_clients(port)
        assert not out.problems, out.problems
        assert out.served > 5
        assert_nobody_killed(server, workers)
        if worker != "thread":
            # A thread worker's heartbeat comes from its main loop, which a request stuck
            # in a pool thread does not stop (Gunicorn's gthread alike): not hung.
            assert_hung_worker_killed(server, port)


def test_a_node_stopped_longer_than_the_timeout_keeps_its_workers(polycorn, port):
    # SIGSTOP of a whole node (the chaos runner's pause-node, a frozen VM or cgroup):
    # the master must not judge workers on a heartbeat age it did not watch. Here it
    # is resumed first, and its workers a moment later, as an unordered thaw may do.
    server, workers = start_node(polycorn, port, "sync")
    master = server.pid
    kill_all([master, *workers], signal.SIGSTOP)
    try:
        time.sleep(2 * TIMEOUT)
    finally:
        os.kill(master, signal.SIGCONT)
        time.sleep(0.5)
        kill_all(workers, signal.SIGCONT)
    time.sleep(TIMEOUT)
    assert get(port, "/pid")[0] == 200
    assert_nobody_killed(server, workers)
    assert_hung_worker_killed(server, port)
