"""The event worker's file responses: the head, then os.sendfile through asyncio.

A mixin of HTTPProtocol (event_protocol.py), kept apart because only a
wsgi.file_wrapper body on asyncio's own loop takes it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from polycorn.server.http.events import Request
from polycorn.server.workers.event_phase import _SENDFILE
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.policy import Failure
from polycorn.server.wsgi.run import AppResponse

log = logging.getLogger("polycorn.error")


class SendfileMixin:
    """HTTPProtocol's sendfile methods (they use its ctx, conn, transport and phase)."""

    __slots__ = ()
    ctx: Any
    conn: Any
    transport: Any
    phase: Any
    client_addr: Any
    body_bytes: int

    def _can_sendfile(self, resp: AppResponse, request: Request) -> bool:
        start = resp.start
        return policy.sendfile_applies(self.ctx.sendfile_native, request.method,
                                      start.status_code, start.content_length,
                                      resp.file.filelike)

    def _start_sendfile(self, resp: AppResponse) -> bool:
        """The head, then the file by os.sendfile (asyncio's native path); then close.

        As in the blocking handler, the kernel's bytes bypass the framing count, so
        the head says Connection: close rather than claim an exact length.
        """
        conn = self.conn
        conn.refuse_keep_alive()
        start = resp.start
        self.transport.write(conn.start_response(start.status_code, start.reason,
                                                 start.wire_headers))
        self.phase = _SENDFILE
        self.ctx.loop.create_task(self._sendfile(resp))
        return False

    async def _sendfile(self, resp: AppResponse) -> None:
        filelike = resp.file.filelike
        length = resp.start.content_length
        failure = None
        try:
            offset = os.lseek(filelike.fileno(), 0, os.SEEK_CUR)  # the app may have seeked
            sent = await self.ctx.loop.sendfile(self.transport, filelike, offset, length)
        except (OSError, RuntimeError) as exc:
            log.debug("sendfile to %s failed: %r", self.client_addr, exc)
            sent, failure = 0, Failure.CLIENT_GONE
        if self.phase is _SENDFILE:  # else connection_lost has ended the cycle
            self.body_bytes = sent
            if failure is None and sent < length:
                # The client sees a truncated response (the connection is cut), never a padded one.
                log.error("file response for %s is shorter than its Content-Length (%d < %d)",
                          filelike, sent, length)
                failure = Failure.SHORT_FILE
            self._finish_cycle(failure)
