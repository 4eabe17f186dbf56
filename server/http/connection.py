"""ServerConnection: one client connection's HTTP/1.1 as a sans-IO state machine.

Bytes go in through receive_data (b"" for EOF) and come out of next_event as
events; a response goes in through start_response/send_body/end_response and
comes out as bytes for the caller to write. No sockets, no clocks but the Date.
This module is the request half, the pure parser (head, framing and readers give
the verdicts); the response half and the cycle are cycle.py's, shared with
FastConnection, which hands what llhttp cannot judge to the parser here.
"""

from __future__ import annotations

from polycorn.server.http.cycle import ConnectionCycle, Event
from polycorn.server.http.errors import LocalProtocolError, RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, EndOfMessage, Request
from polycorn.server.http.head import check_incomplete_head, parse_request_head
from polycorn.server.http.httpdate import SHARED_DATE_CACHE, DateCache
from polycorn.server.http.limits import Limits
from polycorn.server.http.readers import BodyReader, body_reader
from polycorn.server.http.receivebuffer import ReceiveBuffer
from polycorn.server.http.state import (
    REQ_BODY,
    REQ_ERROR,
    REQ_IDLE,
    Step,
    advance_request,
)

__all__ = ["Limits", "ServerConnection"]

# RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request
# line (some clients send CRLF after a POST body); more than this is not a client.
MAX_EMPTY_LINES_BEFORE_REQUEST = 8

DEFAULT_LIMITS = Limits()
# Module globals: on Python 3.11 an enum member read from its class costs about 50 ns.
_STEP_HEAD, _STEP_END = Step.HEAD, Step.END


class ServerConnection(ConnectionCycle):
    __slots__ = ("_buffer", "_eof", "_reader", "_empty_lines_skipped", "_line_judged")

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        *,
        keep_alive_allowed: bool = True,
        date_cache: DateCache = SHARED_DATE_CACHE,
    ) -> None:
        super().__init__(limits, keep_alive_allowed, date_cache)
        self._start_parsing()

    def _start_parsing(self) -> None:
        """The request half's own fields, at the start of the connection."""
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._reader: BodyReader | None = None
        # Per head, reset when a head is complete:
        self._empty_lines_skipped = 0
        self._line_judged = False  # the request line of a head still arriving was judged

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; b"" means the client closed its side."""
        if self._request_state is REQ_ERROR:
            return  # a dead connection parses nothing more (and stores nothing)
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if data:
            self._buffer.append(data)
        else:
            self._eof = True

    def next_event(self) -> Event:
        """The next event, NEED_DATA or PAUSED; raises RemoteProtocolError(status)."""
        state = self._request_state
        try:
            if state is REQ_IDLE:
                return self._next_head()
            if state is REQ_BODY:
                return self._next_body_event()
        except RemoteProtocolError as exc:
            self._fail(exc)
        return self._settled_event()

    def _next_head(self) -> Event:
        buf = self._buffer
        while buf.startswith(b"\r\n"):
            if self._empty_lines_skipped == MAX_EMPTY_LINES_BEFORE_REQUEST:
                raise RemoteProtocolError("too many empty lines before the request line")
            buf.extract(2)
            self._empty_lines_skipped += 1
        head = buf.extract_head()
        if head is None:
            if not self._eof:
                self._line_judged = check_incomplete_head(buf, self.limits, self._line_judged)
                return NEED_DATA
            if buf:
                raise RemoteProtocolError("connection closed in the middle of a request head")
            return self._closed_between_requests()
        request = self._parse_head(head)
        self._request_state = advance_request(self._request_state, _STEP_HEAD)
        self._empty_lines_skipped = 0
        self._line_judged = False
        self._request = request
        self._reader = body_reader(request, self.limits)
        self._continue_owed = request.expect_continue
        if not request.keep_alive:
            self._persistent = False
        return request

    def _parse_head(self, head: bytes) -> Request:
        """The Request of a complete head (AccelServerConnection's compiled shortcut)."""
        return parse_request_head(head, self.limits)

    def _next_body_event(self) -> Event:
        assert self._reader is not None
        event = self._reader.read(self._buffer)
        if event is None:
            if self._eof:
                raise RemoteProtocolError("connection closed before the request body was complete")
            return NEED_DATA
        if event.__class__ is EndOfMessage:
            self._request_state = advance_request(self._request_state, _STEP_END)
        return event

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """The bytes received and not parsed, and whether EOF was seen."""
        return bytes(self._buffer), self._eof
