"""The sync worker: one connection at a time, closed after each response.

Like Gunicorn's sync worker it answers with `Connection: close`, so a slow
client can hold at most one worker for one request; the accept loop waits in
select() on the listeners, the master's pipe and the signal pipe, and
heartbeats on every turn.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from polycorn.server.workers.base import RunState, Worker
from polycorn.server.wsgi.handler import ClientConnection


class SyncWorker(Worker):
    def run(self) -> None:
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

    def serve(self, sock: socket.socket, addr: object, server_addr: Any) -> None:
        # server_addr: what Listener.server_name() gives (host and port, or a Unix path)
        sock.settimeout(float(getattr(self.cfg, "timeout", 30) or 30))
        conn = ClientConnection(self.handler, sock, addr, server_addr, keep_alive=False)
        try:
            conn.serve_one()
        finally:
            conn.close()
            self.count_request()
