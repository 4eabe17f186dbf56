"""AccelConnection: a FastConnection whose plain heads the compiled accelerator splits.

The accelerator's split_head (server/_accel.c) takes a complete head made of
plain bytes only (a token method other than CONNECT, an origin-form target of
visible ASCII without "#", HTTP/1.1 or HTTP/1.0, "token:value" field lines with
CRLF ends, within every limit) and splits it as the pure parser would; for
anything else it answers None and FastConnection (llhttp, then the pure parser)
takes the head as before. The framing fields are judged here by the same
Python rules (framing.decide_framing), so every verdict stays the pure parser's.
"""

from __future__ import annotations

from polycorn.server import accel
from polycorn.server.http.cycle import Event
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Request
from polycorn.server.http.fast import PLAIN_HTTP11, FastConnection, _new_request, _valid_host
from polycorn.server.http.framing import RequestFraming, decide_framing

__all__ = ["AccelConnection"]

# What decide_framing returns for an HTTP/1.1 head whose only framing fields are one
# valid Host and "Connection: close" (wrk's and many clients' close mode).
PLAIN_CLOSE = RequestFraming(content_length=None, chunked=False, keep_alive=False,
                             expect_continue=False)
_split_head = accel.split_head
# The compiled side makes the Request of a plainly framed HTTP/1.1 head itself, the way
# fast._request_constructor does (through the slots' descriptors): only while Request
# has that shape, which _request_constructor checks (it returns the class otherwise).
_REQUEST_TYPE = Request if _new_request is not Request else None


class AccelConnection(FastConnection):
    """A drop-in FastConnection (same methods, events, errors and verdicts)."""

    __slots__ = ()

    def _split_next_head(self) -> Event:
        buf = self._received
        split = _split_head(buf, self._header_count, self._small_head, _REQUEST_TYPE)
        if split is None:
            return FastConnection._split_next_head(self)
        if len(split) == 2:  # (end, Request): framed as decide_framing would frame it
            return self._take_head(buf, split[0], split[1])
        end, method, target, version, fields, framing_fields, host, connection = split
        if host is not None and version == b"1.1" and (
                framing_fields == 1 or (framing_fields == 2 and connection is not None
                                        and connection.lower() == b"close")) and (
                _valid_host(host)):
            framing = PLAIN_HTTP11 if framing_fields == 1 else PLAIN_CLOSE
        else:
            try:
                framing = decide_framing(version, fields)
            except RemoteProtocolError:
                return self._fall_back("framing refused")
            if framing.chunked:
                self._parser = None
                return self._fall_back("chunked body")
        return self._take_head(buf, end, _new_request(method, target, version, fields, *framing))
