"""AccelServerConnection: the pure ServerConnection, whose plain heads the accelerator parses.

The blocking workers (sync, thread) parse with ServerConnection. Once its receive
buffer has cut out a complete head, the compiled split_head (server/_accel.c)
parses it when it is plain and plainly framed HTTP/1.1 (one Host of letters,
digits, dots and dashes, maybe a port; at most one Content-Type, one
Content-Length of digits, one Connection: close or keep-alive; no
Transfer-Encoding or Expect), giving the Request parse_request_head would give; any other head is
parse_request_head's, so every verdict stays the pure parser's. Needs no httptools.
"""

from __future__ import annotations

from polycorn.server import accel
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.events import Request
from polycorn.server.http.head import parse_request_head

__all__ = ["AccelServerConnection"]

_split_head = accel.split_head
# With both size limits off, a head past this is parse_request_head's (FastConnection's
# UNLIMITED_HEAD_HOLD).
UNLIMITED_HEAD = 64 * 1024


class AccelServerConnection(ServerConnection):
    """A drop-in ServerConnection (same methods, events, errors and verdicts)."""

    __slots__ = ()

    def _parse_head(self, head: bytes) -> Request:
        limits = self.limits
        line, field = limits.max_request_line, limits.max_header_size
        # No line of a head shorter than both size limits can break one of them.
        max_len = min(line if line > 0 else UNLIMITED_HEAD, field if field > 0 else UNLIMITED_HEAD)
        split = _split_head(head, limits.header_count, max_len, Request)
        if split is not None and len(split) == 2 and split[0] == len(head):
            return split[1]
        return parse_request_head(head, limits)
