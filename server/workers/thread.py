"""The thread worker: a pool of --threads threads, keep-alive connections parked in a selector.

The main thread owns the selector: it accepts while a thread is free (so the
kernel's accept queue, shared with the other workers and masters, holds what we
cannot serve yet), parks idle keep-alive connections with a deadline of
--keep-alive seconds, and hands a connection to the pool when its next request
arrives. Pool threads serve whole requests and give the connection back.

Connection: close: a pool thread that has just closed its connection takes the
next queued client itself (a non-blocking accept) and serves it, while no resumed
connection waits for a thread. The hand-off through the main loop (a pipe write,
a select wake, an accept, a pool submit and a thread wake per connection) cost
more CPU than serving the request and made this worker no cheaper than Gunicorn's
sync worker in that mode.

Fairness: with every thread busy, a worker still takes one queued client for
each parked connection it resumes. Otherwise the keep-alive clients it already
holds would always come first, and a client in the accept queue could wait for
as long as they keep sending (seen as a p99 of 0.1-1.3 s with 50 keep-alive
connections on 4 threads, against 17 ms for Gunicorn's gthread).
"""

from __future__ import annotations

import collections
import os
import selectors
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from polycorn.server.tls import accept_tls
from polycorn.server.workers.base import RunState, Worker, log
from polycorn.server.workers.proxy_gate import ProxyGate
from polycorn.server.wsgi.client import ClientConnection
from polycorn.server.wsgi.client_waits import ClientWaits


class ThreadWorker(Worker):
    def open_connections(self) -> int:
        """Served by a pool thread, or parked between keep-alive requests."""
        return getattr(self, "inflight", 0) + len(getattr(self, "idle", ()))

    def run(self) -> None:
        threads = max(1, int(getattr(self.cfg, "threads", 1) or 1))
        self.keepalive = float(getattr(self.cfg, "keepalive", 2) or 0)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="polycorn")
        self.capacity = threads
        self.max_idle = max(1, int(getattr(self.cfg, "worker_connections", 1000) or 1000) - threads)
        self.inflight = 0
        # The pool threads' waits on clients: the same deadlines as the sync worker's, so
        # a slow but steady reader gets its whole response (a socket timeout would bound
        # the whole sendall), and no heartbeat: that comes from this main loop alone.
        self.waits = ClientWaits(_no_heartbeat, self.select_timeout,
                                 float(getattr(self.cfg, "timeout", 30) or 30))
        self.lock = threading.Lock()
        self.proxy_gate = ProxyGate.from_config(self.cfg)
        self.returned: collections.deque[tuple[Any, bool]] = collections.deque()
        # Connections submitted to the pool and not yet picked up by a thread (under
        # self.lock): a thread accepts a new client itself only while this is 0.
        self.queued = 0
        # What names the server on each listener (by id: a Listener compares by value and
        # is not hashable): a getsockname() once, not per client.
        self.names = {id(lst): lst.server_name() for lst in self.listeners}
        self.idle: collections.OrderedDict[Any, float] = collections.OrderedDict()
        self.done_r, self.done_w = os.pipe()
        os.set_blocking(self.done_w, False)
        self.sel = selectors.DefaultSelector()
        for fd in self.wait_fds:
            self.sel.register(fd, selectors.EVENT_READ, ("wake", None))
        self.sel.register(self.done_r, selectors.EVENT_READ, ("done", None))
        self.accepting = False
        self._set_accepting(True)
        try:
            self._loop()
        finally:
            self.pool.shutdown(wait=True)

    def _loop(self) -> None:
        graceful_deadline = None
        while True:
            self.notify()
            if self.state is not RunState.RUNNING:
                if graceful_deadline is None:
                    graceful_deadline = time.monotonic() + float(self.cfg.graceful_timeout)
                    self._set_accepting(False)
                    self._close_idle(all_of_them=True)
                if self.inflight == 0 or time.monotonic() > graceful_deadline:
                    if self.inflight:
                        log.warning("worker %s: graceful timeout with %s requests in flight",
                                    self.pid, self.inflight)
                    return
            else:
                self._set_accepting(self.inflight < self.capacity)
            resumed = 0
            for key, _ in self.sel.select(self.select_timeout):
                kind, obj = key.data
                if kind == "listen":
                    self._accept(obj)
                elif kind == "conn":
                    self.sel.unregister(key.fileobj)
                    del self.idle[obj]
                    self._submit(obj)
                    resumed += 1
                elif kind == "done":
                    self._collect()
                else:
                    self.check_wakeups({key.fd})
            if resumed and not self.accepting:
                self._accept_in_turn(resumed)
            self._close_idle()

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        self.accepting = on
        for lst in self.listeners:
            if on:
                self.sel.register(lst.sock, selectors.EVENT_READ, ("listen", lst))
            else:
                self.sel.unregister(lst.sock)

    def _accept_in_turn(self, turns: int) -> None:
        """All threads busy: take up to `turns` queued clients (one per connection just
        resumed), within --worker-connections; they wait in the pool's queue."""
        limit = int(getattr(self.cfg, "worker_connections", 1000) or 1000)
        budget = min(turns, limit - self.inflight - len(self.idle))
        for listener in self.listeners:
            while budget > 0 and self.state is RunState.RUNNING and self._take(listener):
                budget -= 1

    def _accept(self, listener: Any) -> None:
        if self.inflight >= self.capacity or self.state is not RunState.RUNNING:
            return
        self._take(listener)

    def _take(self, listener: Any) -> bool:
        accepted = self.accept(listener)
        if accepted is None:
            return False
        sock, addr = accepted
        if self.proxy_gate is not None or self.ssl_context is not None:
            # The PROXY header and the TLS handshake are read in a pool thread: this loop
            # never waits on a client.
            self.inflight += 1
            self.pool.submit(self._serve_proxied, sock, addr, listener.server_name())
            return True
        self._submit(self._connection(sock, addr, listener))
        return True

    def _connection(self, sock: Any, addr: Any, listener: Any) -> ClientConnection:
        return ClientConnection(self.handler, sock, addr, self.names[id(listener)],
                                keep_alive=True, waits=self.waits)

    def _take_here(self) -> ClientConnection | None:
        """In a pool thread whose connection just closed: the next queued client, if this
        thread should serve it (no resumed connection waits for a thread, no PROXY
        header or TLS handshake to read first, the worker running), else None."""
        if (self.proxy_gate is not None or self.ssl_context is not None or self.queued
                or self.state is not RunState.RUNNING):
            return None
        for listener in self.listeners:
            accepted = self.accept(listener)
            if accepted is not None:
                return self._connection(*accepted, listener)
        return None

    def _serve_proxied(self, sock: Any, addr: Any, server_name: Any) -> None:
        """In a pool thread: the connection's PROXY header, its TLS handshake (the header
        comes first, before the ClientHello), then its requests."""
        admitted, proxied = True, None
        try:
            if self.proxy_gate is not None:
                admitted, proxied = self.proxy_gate.admit(sock, addr)
        except Exception:
            log.exception("worker %s: error reading a PROXY header", self.pid)
            admitted = False
            sock.close()
        if admitted and self.ssl_context is not None:
            sock = accept_tls(self.ssl_context, sock, addr, self.cfg)
            admitted = sock is not None
        if not admitted:
            self.returned.append((_REFUSED, False))
            self._wake_main()
            return
        self._serve(ClientConnection(self.handler, sock, addr, server_name, keep_alive=True,
                                     waits=self.waits, proxied=proxied))

    def _submit(self, conn: Any) -> None:
        self.inflight += 1
        with self.lock:
            self.queued += 1
        self.pool.submit(self._serve_queued, conn)

    def _serve_queued(self, conn: Any) -> None:
        with self.lock:
            self.queued -= 1
        self._serve(conn)

    def _serve(self, conn: Any) -> None:
        """In a pool thread: serve requests while they are already buffered, then give back
        (or, when the connection closes, go on with the next queued client: _take_here)."""
        while True:
            keep = self._serve_buffered(conn)
            if keep:
                break
            conn.close()
            following = self._take_here()
            if following is None:
                conn = _REFUSED  # closed already: the main loop only frees the thread
                break
            conn = following
        self.returned.append((conn, keep))
        self._wake_main()

    def _serve_buffered(self, conn: Any) -> bool:
        """Serve requests while they are already buffered; whether to keep the connection."""
        keep = False
        try:
            while True:
                served = conn.requests
                keep = conn.serve_one()
                if conn.requests != served:  # only a request given to the app counts (policy.py)
                    with self.lock:
                        self.count_request()
                if not (keep and conn.has_buffered_data and self.state is RunState.RUNNING):
                    break
        except Exception:
            log.exception("worker %s: error serving a connection", self.pid)
            keep = False
        return keep

    def _wake_main(self) -> None:
        try:
            os.write(self.done_w, b".")
        except BlockingIOError:
            pass  # the main thread is already due to wake

    def _collect(self) -> None:
        try:
            os.read(self.done_r, 4096)
        except BlockingIOError:
            pass
        while self.returned:
            conn, keep = self.returned.popleft()
            self.inflight -= 1
            if keep and self.keepalive > 0 and self.state is RunState.RUNNING:
                if len(self.idle) >= self.max_idle:
                    self._close_oldest_idle()  # --worker-connections bounds what we hold
                self.idle[conn] = time.monotonic() + self.keepalive
                self.sel.register(conn.sock, selectors.EVENT_READ, ("conn", conn))
            else:
                conn.close()

    def _close_oldest_idle(self) -> None:
        conn = next(iter(self.idle))
        del self.idle[conn]
        self.sel.unregister(conn.sock)
        conn.close()

    def _close_idle(self, all_of_them: bool = False) -> None:
        now = time.monotonic()
        # Deadlines grow with insertion order, so the expired ones are at the front.
        while self.idle:
            conn, deadline = next(iter(self.idle.items()))
            if deadline > now and not all_of_them:
                break
            del self.idle[conn]
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.close()


class _RefusedConnection:
    """What a pool thread gives back for a connection the PROXY gate refused (already closed)."""

    def close(self) -> None:
        pass


_REFUSED = _RefusedConnection()


def _no_heartbeat() -> None:
    """A pool thread's wait proves nothing about the main loop: it never beats."""
