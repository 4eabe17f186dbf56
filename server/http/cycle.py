"""The response half and the request cycle of one HTTP/1.1 server connection, sans-IO.

ServerConnection (pure parser) and FastConnection (llhttp) share this one
implementation; each adds only a request half. A response goes in through
start_response/send_body/end_response (or respond_whole, or error_response) and
comes out as bytes for the caller to write. Every move follows state.py's tables:
each step has one state to leave (only_move), so the hot path tests that state by
identity and asks the table only to name a misuse.
"""

from __future__ import annotations

from typing import NoReturn

from polycorn.server.http.errors import LocalProtocolError, RemoteProtocolError
from polycorn.server.http.events import (
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Request,
    Sentinel,
)
from polycorn.server.http.httpdate import DateCache
from polycorn.server.http.limits import Limits
from polycorn.server.http.response import build_error_response, framed_head, head_parts
from polycorn.server.http.state import (
    REQ_BODY,
    REQ_CLOSED,
    REQ_DONE,
    REQ_ERROR,
    REQ_IDLE,
    REQUEST_TRANSITIONS,
    RESP_IDLE,
    RESPONSE_TRANSITIONS,
    Step,
    advance_request,
    advance_response,
    only_move,
)
from polycorn.server.http.writers import NO_BODY, BodyWriter

__all__ = ["CONTINUE_RESPONSE", "ConnectionCycle", "Event"]

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

Event = Request | Data | EndOfMessage | ConnectionClosed | Sentinel

_HEAD_FROM, _HEAD_TO = only_move(RESPONSE_TRANSITIONS, Step.HEAD)
_END_FROM, _END_TO = only_move(RESPONSE_TRANSITIONS, Step.END)
_RESP_NEXT_FROM, _RESP_NEXT_TO = only_move(RESPONSE_TRANSITIONS, Step.NEXT_CYCLE)
_REQ_NEXT_FROM, _REQ_NEXT_TO = only_move(REQUEST_TRANSITIONS, Step.NEXT_CYCLE)
# respond_whole makes the HEAD and END moves in one: the first must lead to the second.
assert _HEAD_TO is _END_FROM


class ConnectionCycle:
    """One connection's response half and cycle; a subclass adds the request half.

    The request half (receive_data, next_event, trailing_data; it resets its own
    per-head fields when a head is complete) records what it parsed in these
    fields: the Request in
    ``_request``, its side's state in ``_request_state`` (through _fail and
    _closed_between_requests for the moves that close), "Expect: 100-continue" in
    ``_continue_owed``, and a client's "close" in ``_persistent``.
    """

    __slots__ = ("limits", "_date_cache", "_request", "_request_state", "_response_state",
                 "_error", "_persistent", "_writer", "_continue_owed")

    def __init__(self, limits: Limits, keep_alive_allowed: bool, date_cache: DateCache) -> None:
        self.limits = limits
        self._date_cache = date_cache
        self._request: Request | None = None
        self._request_state = REQ_IDLE
        self._response_state = RESP_IDLE
        self._error: RemoteProtocolError | None = None
        # False for good once anything says the connection must close: the client,
        # the app, the server's policy, an error or a close-delimited body.
        self._persistent = keep_alive_allowed
        self._writer: BodyWriter = NO_BODY
        self._continue_owed = False

    # -- the request side's moves that close the connection --------------------------

    def _fail(self, exc: RemoteProtocolError) -> NoReturn:
        """The client broke the protocol: nothing more is parsed; the connection closes."""
        self._request_state = REQ_ERROR
        self._error = exc
        self._persistent = False
        raise exc

    def _closed_between_requests(self) -> ConnectionClosed:
        self._request_state = advance_request(self._request_state, Step.EOF)
        self._persistent = False
        return ConnectionClosed()

    def _settled_event(self) -> Event:
        """next_event's answer once the request side parses nothing more."""
        state = self._request_state
        if state is REQ_DONE:
            return PAUSED
        if state is REQ_CLOSED:
            return ConnectionClosed()
        assert self._error is not None
        raise RemoteProtocolError(str(self._error), self._error.status)

    # -- sending -------------------------------------------------------------------

    def continue_bytes(self) -> bytes:
        """The 100 Continue interim response, once, if expected and no response began."""
        if self._continue_owed and self._response_state is RESP_IDLE:
            self._continue_owed = False
            return CONTINUE_RESPONSE
        return b""

    def start_response(self, status: int, reason: bytes,
                       headers: list[tuple[bytes, bytes]]) -> bytes:
        """The response head (with Date, Server and framing fields) as bytes."""
        if self._request is None:
            raise LocalProtocolError("no request to respond to")
        if self._response_state is not _HEAD_FROM:
            advance_response(self._response_state, Step.HEAD)  # raises: the table says why
        head, self._writer, self._persistent = framed_head(
            self._request, status, reason, headers, self._persistent, self._date_cache)
        self._response_state = _HEAD_TO
        self._continue_owed = False
        return head

    def send_body(self, data: bytes) -> bytes:
        """One piece of body, framed (b"" when the response carries no body)."""
        if self._response_state is not _END_FROM:
            raise LocalProtocolError(f"cannot send body while {self._response_state.value}")
        try:
            return self._writer.send(data)
        except LocalProtocolError:
            self._persistent = False  # the client can no longer find the next response
            raise

    def end_response(self) -> bytes:
        """The end of the body (the last chunk); LocalProtocolError if short of Content-Length."""
        if self._response_state is not _END_FROM:
            advance_response(self._response_state, Step.END)  # raises: the table says why
        self._response_state = _END_TO
        try:
            return self._writer.finish()
        except LocalProtocolError:
            self._persistent = False
            raise

    def respond_whole(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> bytes:
        """start_response, send_body(body) and end_response in one: a body wholly in hand.

        The event worker's common answer (a one-chunk list) in one call, without a
        body writer per response. Anything unusual takes the three calls, which
        raise and set the state exactly as when called one by one.
        """
        request = self._request
        if request is None or self._response_state is not _HEAD_FROM:
            return self._respond_in_steps(status, reason, headers, body)
        try:
            before, after, length, writer, persistent = head_parts(
                request, status, reason, headers, self._persistent)
        except TypeError:
            return self._respond_in_steps(status, reason, headers, body)
        if length is not None and len(body) != length:
            return self._respond_in_steps(status, reason, headers, body)  # raises
        self._persistent = persistent
        self._continue_owed = False
        self._response_state = _END_TO
        head = before if after is None else before + self._date_cache.current() + after
        if length is None:  # a shared, stateless writer (no body, chunked, close-delimited)
            return head + writer.send(body) + writer.finish()
        return head + body

    def _respond_in_steps(self, status: int, reason: bytes,
                          headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        data = self.start_response(status, reason, headers) + self.send_body(body)
        try:
            return data + self.end_response()
        except LocalProtocolError as exc:
            # A body short of its Content-Length: the head and body are framed and true
            # as far as they go. A caller that sends them and then cuts the connection
            # shows the client what the three calls one by one would have.
            exc.framed = data
            raise

    def error_response(self, status: int, message: str = "") -> bytes:
        """A whole plain-text response with Connection: close; only before any response began."""
        next_state = advance_response(self._response_state, Step.WHOLE)
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
        return self._persistent and self._request_state is not REQ_BODY

    @property
    def persistent(self) -> bool:
        """Nothing said close so far (keep_alive without its unread-body condition): a
        worker that reads the body on demand asks this before draining what is left."""
        return self._persistent

    @property
    def response_started(self) -> bool:
        return self._response_state is not RESP_IDLE

    def start_next_cycle(self) -> None:
        """Begin the next request after end_response, when keep_alive is True."""
        if not self._persistent or self._request_state is not _REQ_NEXT_FROM:
            if not self.keep_alive:
                raise LocalProtocolError("this connection cannot carry another request")
            advance_request(self._request_state, Step.NEXT_CYCLE)  # raises: the table says why
        if self._response_state is not _RESP_NEXT_FROM:
            advance_response(self._response_state, Step.NEXT_CYCLE)  # raises
        self._request_state = _REQ_NEXT_TO
        self._response_state = _RESP_NEXT_TO
        self._request = None
        self._writer = NO_BODY
        self._continue_owed = False
