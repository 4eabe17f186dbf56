"""The sync worker: one connection at a time, closed after each response.

Like Gunicorn's sync worker it answers with `Connection: close`, so a slow
client can hold at most one worker for one request; the accept loop waits in
select() on the listeners, the master's pipe and the signal pipe, and
heartbeats on every turn. While it serves, every wait on the client beats too
(client_waits.py): a worker waiting on a slow or silent client is not hung. With
TLS the handshake comes first, within --ssl-handshake-timeout (below --timeout):
a client stalling it holds the worker no longer than that.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from polycorn.server.tls import accept_tls
from polycorn.server.workers.base import RunState, Worker
from polycorn.server.workers.proxy_gate import ProxyGate
from polycorn.server.wsgi.client import ClientConnection
from polycorn.server.wsgi.client_waits import ClientWaits


class SyncWorker(Worker):
    def run(self) -> None:
        # Waiting on a client is serving, not hanging: the wait beats every slice, and the
        # client gets --timeout for its request head and for any stall (client_waits.py).
        self.waits = ClientWaits(self.notify, self.select_timeout,
                                 float(getattr(self.cfg, "timeout", 30) or 30))
        self.proxy_gate = ProxyGate.from_config(self.cfg)
        fds = [*self.listeners, *self.wait_fds]
        listeners = {lst.fileno(): lst for lst in self.listeners}
        while self.state is RunState.RUNNING:
            self.notify()
            try:
                ready, _, _ = select.select(fds, [], [], self.select_timeout)
            except InterruptedError:
                continue
            ready_fds = {r if isinstance(r, int) else r.fileno() for r in ready}
            self.check_wakeups(ready_fds)
            for fd in ready_fds:
                if self.state is not RunState.RUNNING:
                    break
                listener = listeners.get(fd)
                if listener is None:
                    continue
                # Accept until the queue is empty before select() again: under load a
                # select per connection leaves the worker idle between requests.
                server_name = listener.server_name()
                while self.state is RunState.RUNNING:
                    accepted = self.accept(listener)
                    if accepted is None:
                        break
                    self.serve(accepted[0], accepted[1], server_name)
                    self.notify()

    serving = 0  # a client connection is being served (one at most)

    def open_connections(self) -> int:
        return self.serving

    def serve(self, sock: socket.socket, addr: object, server_addr: Any) -> None:
        # server_addr: what Listener.server_name() gives (host and port, or a Unix path)
        proxied = None
        if self.proxy_gate is not None:  # the PROXY header first, before HTTP or TLS
            admitted, proxied = self.proxy_gate.admit(sock, addr, self.notify, self.select_timeout)
            if not admitted:
                return
        if self.ssl_context is not None:  # after the PROXY header: it precedes the ClientHello
            sock = accept_tls(self.ssl_context, sock, addr, self.cfg)
            if sock is None:
                return
        conn = ClientConnection(self.handler, sock, addr, server_addr, keep_alive=False,
                                waits=self.waits, proxied=proxied)
        self.serving = 1
        try:
            conn.serve_one()
        finally:
            self.serving = 0
            conn.close()
            if conn.requests:  # a connection closed without a request is not one (policy.py)
                self.count_request()
