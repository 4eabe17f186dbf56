"""ServerConnection: one client connection's HTTP/1.1 as a sans-IO state machine.

Bytes go in through receive_data (b"" for EOF) and come out of next_event as
events; a response goes in through start_response/send_body/end_response and
comes out as bytes for the caller to write. No sockets, no clocks but the Date.
The verdicts live in small modules (head, framing, readers, response); this one
keeps the two state machines (state.py) and the per-cycle bookkeeping.
"""

from __future__ import annotations

from typing import Any

from polycorn.server.http.errors import LocalProtocolError, RemoteProtocolError
from polycorn.server.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    Sentinel,
)
from polycorn.server.http.head import check_incomplete_head, parse_request_head
from polycorn.server.http.httpdate import SHARED_DATE_CACHE, DateCache
from polycorn.server.http.limits import Limits
from polycorn.server.http.readers import BodyReader, body_reader
from polycorn.server.http.receivebuffer import ReceiveBuffer
from polycorn.server.http.response import build_error_response, framed_head
from polycorn.server.http.state import (
    RequestState,
    ResponseState,
    Step,
    advance_request,
    advance_response,
)
from polycorn.server.http.writers import NO_BODY, BodyWriter

__all__ = ["Limits", "ServerConnection"]

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

# RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request
# line (some clients send CRLF after a POST body); more than this is not a client.
MAX_EMPTY_LINES_BEFORE_REQUEST = 8

Event = Request | Data | EndOfMessage | ConnectionClosed | Sentinel
DEFAULT_LIMITS = Limits()


# Enum members as module globals: on Python 3.11 a member read as a class attribute
# goes through EnumType.__getattr__ (about 50 ns), and every request reads many.
_REQ_BODY = RequestState.BODY
_REQ_CLOSED = RequestState.CLOSED
_REQ_DONE = RequestState.DONE
_REQ_ERROR = RequestState.ERROR
_REQ_IDLE = RequestState.IDLE
_RESP_BODY = ResponseState.BODY
_RESP_IDLE = ResponseState.IDLE
_STEP_END = Step.END
_STEP_EOF = Step.EOF
_STEP_HEAD = Step.HEAD
_STEP_NEXT_CYCLE = Step.NEXT_CYCLE
_STEP_WHOLE = Step.WHOLE


def respond_in_steps(conn: Any, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                     body: bytes) -> bytes:
    """start_response, send_body(body) and end_response, one by one: what every
    respond_whole gives (and raises), for either connection class."""
    head = conn.start_response(status, reason, headers)
    return head + conn.send_body(body) + conn.end_response()

class ServerConnection:
    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        *,
        keep_alive_allowed: bool = True,
        date_cache: DateCache = SHARED_DATE_CACHE,
    ) -> None:
        self.limits = limits
        self._date_cache = date_cache
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._request_state = _REQ_IDLE
        self._response_state = _RESP_IDLE
        self._error: RemoteProtocolError | None = None
        # False for good once anything says the connection must close: the client,
        # the app, the server's policy, an error or a close-delimited body.
        self._persistent = keep_alive_allowed
        self._start_cycle()

    def _start_cycle(self) -> None:
        self._request: Request | None = None
        self._reader: BodyReader | None = None
        self._writer: BodyWriter = NO_BODY
        self._continue_owed = False
        self._empty_lines_skipped = 0
        self._line_judged = False  # the request line of a head still arriving was judged

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; b"" means the client closed its side."""
        if self._request_state is _REQ_ERROR:
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
            if state is _REQ_IDLE:
                return self._next_head()
            if state is _REQ_BODY:
                return self._next_body_event()
        except RemoteProtocolError as exc:
            self._request_state = _REQ_ERROR
            self._error = exc
            self._persistent = False
            raise
        if state is _REQ_DONE:
            return PAUSED
        if state is _REQ_CLOSED:
            return ConnectionClosed()
        assert self._error is not None
        raise RemoteProtocolError(str(self._error), self._error.status)

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
            self._request_state = advance_request(self._request_state, _STEP_EOF)
            self._persistent = False
            return ConnectionClosed()
        request = parse_request_head(head, self.limits)
        self._request_state = advance_request(self._request_state, _STEP_HEAD)
        self._request = request
        self._reader = body_reader(request, self.limits)
        self._continue_owed = request.expect_continue
        if not request.keep_alive:
            self._persistent = False
        return request

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

    # -- sending -------------------------------------------------------------------

    def continue_bytes(self) -> bytes:
        """The 100 Continue interim response, once, if expected and no response began."""
        if self._continue_owed and self._response_state is _RESP_IDLE:
            self._continue_owed = False
            return CONTINUE_RESPONSE
        return b""

    def start_response(self, status: int, reason: bytes,
                       headers: list[tuple[bytes, bytes]]) -> bytes:
        """The response head (with Date, Server and framing fields) as bytes."""
        if self._request is None:
            raise LocalProtocolError("no request to respond to")
        next_state = advance_response(self._response_state, _STEP_HEAD)
        head, self._writer, self._persistent = framed_head(
            self._request, status, reason, headers, self._persistent, self._date_cache)
        self._response_state = next_state
        self._continue_owed = False
        return head

    def send_body(self, data: bytes) -> bytes:
        """One piece of body, framed (b"" when the response carries no body)."""
        if self._response_state is not _RESP_BODY:
            raise LocalProtocolError(f"cannot send body while {self._response_state.value}")
        try:
            return self._writer.send(data)
        except LocalProtocolError:
            self._persistent = False  # the client can no longer find the next response
            raise

    def end_response(self) -> bytes:
        """The end of the body (the last chunk); LocalProtocolError if short of Content-Length."""
        self._response_state = advance_response(self._response_state, _STEP_END)
        try:
            return self._writer.finish()
        except LocalProtocolError:
            self._persistent = False
            raise

    def respond_whole(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> bytes:
        """start_response, send_body(body) and end_response in one: a body wholly in hand."""
        return respond_in_steps(self, status, reason, headers, body)

    def error_response(self, status: int, message: str = "") -> bytes:
        """A whole plain-text response with Connection: close; only before any response began."""
        next_state = advance_response(self._response_state, _STEP_WHOLE)
        request = self._request
        data = build_error_response(
            status, message, date=self._date_cache.current(),
            head_only=request is not None and request.method == b"HEAD",
        )
        self._response_state = next_state
        self._persistent = False
        return data

    def refuse_keep_alive(self) -> None:
        """Close after the current response (graceful stop, max requests reached).

        A response not yet started will say Connection: close.
        """
        self._persistent = False

    # -- the cycle -------------------------------------------------------------------

    @property
    def keep_alive(self) -> bool:
        """May the connection carry another request after this response?

        False after an error, when the client or app said close, by server policy,
        for a close-delimited or broken response, and while the request body is
        unread (drain it with next_event to make this True again).
        """
        return self._persistent and self._request_state is not _REQ_BODY

    @property
    def response_started(self) -> bool:
        return self._response_state is not _RESP_IDLE

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """The bytes received and not parsed, and whether EOF was seen."""
        return bytes(self._buffer), self._eof

    def start_next_cycle(self) -> None:
        """Begin the next request after end_response, when keep_alive is True."""
        if not self.keep_alive:
            raise LocalProtocolError("this connection cannot carry another request")
        request_state = advance_request(self._request_state, _STEP_NEXT_CYCLE)
        self._response_state = advance_response(self._response_state, _STEP_NEXT_CYCLE)
        self._request_state = request_state
        self._start_cycle()
