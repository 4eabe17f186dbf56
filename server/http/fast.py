"""FastConnection: a ServerConnection whose request heads llhttp (httptools) splits.

Only the request half is its own: the response half and the cycle are
ConnectionCycle's (cycle.py), the same code as ServerConnection's.

Strategy: the fast path only ever accepts. It hands llhttp a head that is
complete, within every limit and made of CRLF lines only; llhttp splits it into
method, target, version and fields (its byte classes for names, values and
targets are exactly RFC 9110's, as ours), and the HTTP layer's own rules
(framing.decide_framing) judge the fields. Anything it does not accept as plain
(an llhttp error, a limit reached, a leading empty line, a target that is not
origin-form, a chunked body, an Upgrade) hands the unparsed bytes to the pure
request half inherited from ServerConnection, which gives that request its
verdict and parses the rest of the connection. Every refusal is therefore the
pure parser's, and strictness never depends on whether httptools is installed.
"""

from __future__ import annotations

import httptools
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.cycle import Event
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, Data, EndOfMessage, Request
from polycorn.server.http.framing import RequestFraming, decide_framing
from polycorn.server.http.grammar import host_re
from polycorn.server.http.head import parse_request_line
from polycorn.server.http.state import REQ_BODY, REQ_DONE, REQ_ERROR, REQ_IDLE

__all__ = ["FastConnection", "LLHTTP_ERRORS"]

# httptools raises these for what llhttp refuses; HttpParserUpgrade (CONNECT, or
# "Connection: upgrade") is not an HttpParserError subclass.
LLHTTP_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)
_RAW_VERSIONS = {b"HTTP/1.1": b"1.1", b"HTTP/1.0": b"1.0"}
# The fields framing.decide_framing reads; a head whose only such field is one valid
# Host on HTTP/1.1 gets PLAIN_HTTP11 without the call (what the call would return).
FRAMING_FIELDS = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection",
                            b"expect", b"content-type"))
PLAIN_HTTP11 = RequestFraming(content_length=None, chunked=False, keep_alive=True,
                              expect_continue=False)
# host_re's verdict on the Host values seen (clients repeat theirs), bounded: the
# regex costs more than the rest of a plain head together.
MAX_KNOWN_HOSTS = 256
_known_hosts: dict[bytes, bool] = {}
_END = EndOfMessage()


def _request_constructor() -> object:
    """Request(...) without the frozen dataclass's __init__ (one object.__setattr__ per field).

    Sets the slots through their descriptors, about half the cost, and makes the
    same frozen, equal Request. Used only while Request is a slots dataclass with
    these fields; otherwise the class itself builds it.
    """
    names = ("method", "target", "http_version", "headers", "content_length", "chunked",
             "keep_alive", "expect_continue")
    descriptors = [Request.__dict__.get(name) for name in names]
    if (tuple(getattr(Request, "__slots__", ())) != names
            or any(type(d).__name__ != "member_descriptor" for d in descriptors)):
        return Request
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6, s7 = (d.__set__ for d in descriptors)

    def build(method: bytes, target: bytes, http_version: bytes, headers: tuple,
              content_length: int | None, chunked: bool, keep_alive: bool,
              expect_continue: bool) -> Request:
        request = new(Request)
        s0(request, method)
        s1(request, target)
        s2(request, http_version)
        s3(request, headers)
        s4(request, content_length)
        s5(request, chunked)
        s6(request, keep_alive)
        s7(request, expect_continue)
        return request
    return build


_new_request = _request_constructor()
_OWS = b" \t"
# With both size limits off, an unfinished head is still not held past this in the
# fast path: the pure parser then holds it, under its own rules.
UNLIMITED_HEAD_HOLD = 64 * 1024


def _valid_host(host: bytes) -> bool:
    """host_re's verdict on a Host value, remembered (see MAX_KNOWN_HOSTS)."""
    valid = _known_hosts.get(host)
    if valid is None:
        valid = host_re.fullmatch(host) is not None
        if len(_known_hosts) >= MAX_KNOWN_HOSTS:
            _known_hosts.clear()
        _known_hosts[host] = valid
    return valid


class _HeadTokens:
    """The llhttp callbacks: what one head was split into (names lower-cased, values stripped)."""

    __slots__ = ("url", "fields", "framing_fields", "host")

    def __init__(self) -> None:
        # Reset by FastConnection._split_head for each head (inline: the hot path).
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.framing_fields = 0  # fields that decide_framing reads
        self.host: bytes | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp drops the leading OWS, not the trailing (RFC 9112 5: both are not part of the value).
        value = value.rstrip(_OWS)
        self.fields.append((name, value))
        if name in FRAMING_FIELDS:
            self.framing_fields += 1
            if name == b"host":
                self.host = value


class FastConnection(ServerConnection):
    """A drop-in ServerConnection (same methods, same events, same errors) for the event worker.

    Until a head is not plain, the bytes wait in ``_received`` (bytes, not the
    pure parser's buffer) and llhttp splits each head; from then on, the inherited
    pure request half parses everything in its own buffer (``fallback_reason``
    says why).
    """

    __slots__ = ("fallback_reason", "_eof_pending", "_received", "_tokens", "_parser",
                 "_body_remaining", "_small_head", "_header_count")

    def _start_parsing(self) -> None:
        # Not the pure parser's buffer: _fall_back makes it, and most connections never
        # get there (this runs once per accepted connection).
        self.fallback_reason: str | None = None  # why the pure parser took over, if it did
        self._eof_pending = False  # EOF the pure parser has yet to be told (see _pure_event)
        self._received = b""
        self._eof = False
        self._line_judged = False  # the request line of a head still arriving was judged
        self._parser: httptools.HttpRequestParser | None = None  # and _tokens: made with it
        self._body_remaining = 0
        limits = self.limits
        # A head no longer than the smallest size limit cannot break either, so needs no
        # line scan; an unfinished head longer than it might already break one, and the
        # pure parser's incremental check (check_incomplete_head) must judge it now.
        self._small_head = limits.smallest_size_limit or UNLIMITED_HEAD_HOLD
        self._header_count = limits.header_count

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; b"" means the client closed its side."""
        if data and self.fallback_reason is None and not self._eof and (
                self._request_state is not REQ_ERROR):
            self._received = self._received + data if self._received else data
        else:  # the pure half's buffer, or its rules for EOF, data after EOF, a dead connection
            super().receive_data(data)

    def next_event(self) -> Event:
        """The next event, NEED_DATA or PAUSED; raises RemoteProtocolError(status)."""
        if self.fallback_reason is not None:
            return self._pure_event()
        state = self._request_state
        # The two commonest answers are given here, without a further call.
        if state is REQ_IDLE:
            if not self._received and not self._eof:
                return NEED_DATA
            return self._split_next_head()
        if state is REQ_BODY:
            if not self._body_remaining:
                self._request_state = REQ_DONE
                return _END
            return self._next_body_piece()
        return self._settled_event()

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """The bytes received and not parsed, and whether EOF was seen."""
        if self.fallback_reason is None:
            return self._received, self._eof
        data, eof = super().trailing_data
        return data, eof or self._eof_pending

    def _split_next_head(self) -> Event:
        buf = self._received
        end = buf.find(b"\r\n\r\n") + 4
        if end == 3:
            return self._unfinished_head(buf)
        head = buf[:end] if end != len(buf) else buf
        lines = head.count(b"\r\n")
        # RFC 9112 2.2: bare CR or LF, and empty lines before the request line, are the
        # pure parser's to judge (it may also see a different end of head).
        if head.count(b"\n") != lines or head.count(b"\r") != lines or head[0] == 0x0D:
            return self._fall_back("bare CR/LF or a leading empty line")
        if lines - 2 > self._header_count:
            return self._fall_back("header count limit")
        if end > self._small_head and self._breaks_size_limit(head):
            return self._fall_back("size limit")
        request = self._split_head(head)
        if request.__class__ is str:
            return self._fall_back(request)
        return self._take_head(buf, end, request)

    def _take_head(self, buf: bytes, end: int, request: Request) -> Request:
        """The head of buf[:end] is this Request: on to its body."""
        self._received = buf[end:]
        self._line_judged = False
        self._request = request
        self._request_state = REQ_BODY
        self._continue_owed = request.expect_continue
        if not request.keep_alive:
            self._persistent = False
        length = request.content_length
        self._body_remaining = length or 0
        if length:
            self._parser = None  # llhttp now expects the body we read ourselves: start afresh
        return request

    def _unfinished_head(self, buf: bytes) -> Event:
        if self._eof:
            if not buf:
                return self._closed_between_requests()
            return self._fall_back("EOF inside a head")
        if len(buf) > self._small_head or buf.count(b"\n") - 1 > self._header_count:
            return self._fall_back("unfinished head near a limit")
        if b"\n\n" in buf or b"\n\r\n" in buf:
            return self._fall_back("a head ended by a bare LF")
        if not self._line_judged:
            # The pure parser refuses a bad request line as soon as its LF is in (an
            # HTTP/0.9 "GET /" is all its client sends): so must we, once per head.
            first = buf.find(b"\n")
            if first >= 0:
                try:
                    parse_request_line(buf, first)
                except RemoteProtocolError:
                    return self._fall_back("request line")
                self._line_judged = True
        return NEED_DATA

    def _breaks_size_limit(self, head: bytes) -> bool:
        limits = self.limits
        lines = head.split(b"\r\n")
        if limits.max_request_line and len(lines[0]) > limits.max_request_line:
            return True
        max_size = limits.max_header_size
        return bool(max_size) and max(map(len, lines[1:])) > max_size

    def _split_head(self, head: bytes) -> Request | str:
        """The Request for a plain head, or why the pure parser must judge it."""
        parser = self._parser
        if parser is None:
            # Made at the first head llhttp splits, not per connection: on the compiled
            # path (accel_connection.py) most connections never need one.
            tokens = self._tokens = _HeadTokens()
            parser = self._parser = httptools.HttpRequestParser(tokens)
        else:
            tokens = self._tokens
            tokens.url = b""
            tokens.fields = []
            tokens.framing_fields = 0
            tokens.host = None
        try:
            parser.feed_data(head)
        except LLHTTP_ERRORS:
            self._parser = None  # llhttp stays in its error state
            return "llhttp refused or upgrade"
        # The request line is taken from the raw bytes, checked against llhttp's target:
        # "method SP target SP HTTP/1.x" with exactly one SP each (RFC 9112 3; llhttp
        # skips extra spaces), so the Request holds what the pure parser would give.
        line_end = head.find(b"\r\n")
        version = _RAW_VERSIONS.get(head[line_end - 8:line_end])
        if version is None:
            return "HTTP version"
        target = tokens.url
        method_end = line_end - len(target) - 10
        if (method_end <= 0 or head.find(b" ") != method_end or head[line_end - 9] != 0x20
                or head[method_end + 1:line_end - 9] != target):
            return "request-line spacing"
        method = head[:method_end]
        # RFC 9112 3.2: only origin-form without a fragment is plain.
        # 0x23 is "#": an int operand makes `in` search at once, where a bytes one first
        # fails (and formats) a TypeError trying the int form (CPython _Py_bytes_contains).
        if target[:1] != b"/" or 0x23 in target:
            return "request-target form"
        host = tokens.host
        if tokens.framing_fields == 1 and host is not None and version == b"1.1" and (
                _known_hosts.get(host) or _valid_host(host)):
            framing = PLAIN_HTTP11
        else:
            try:
                framing = decide_framing(version, tokens.fields)
            except RemoteProtocolError:
                return "framing refused"
            if framing.chunked:
                self._parser = None
                return "chunked body"
        return _new_request(method, target, version, tuple(tokens.fields), *framing)

    def _next_body_piece(self) -> Event:
        remaining = self._body_remaining
        buf = self._received
        if not buf:
            if self._eof:
                self._fail(RemoteProtocolError(
                    "connection closed before the request body was complete"))
            return NEED_DATA
        if len(buf) <= remaining:
            data, self._received = buf, b""
        else:
            data, self._received = buf[:remaining], buf[remaining:]
        self._body_remaining = remaining - len(data)
        return Data(data)

    # -- the pure parser's turn ----------------------------------------------------

    def _fall_back(self, reason: str) -> Event:
        """Give the unparsed bytes (from the start of this request) to the pure request half."""
        self.fallback_reason = reason
        received, eof = self._received, self._eof
        self._received = b""
        super()._start_parsing()  # the pure parser's buffer and fields, fresh for this head
        self._buffer.append(received)
        # Told later: with the bytes and EOF given at once, the pure parser would judge an
        # unfinished head by its EOF (400) before its size limits (414/431).
        self._eof_pending = eof
        return self._pure_event()

    def _pure_event(self) -> Event:
        event = super().next_event()
        if event is NEED_DATA and self._eof_pending:
            self._eof_pending = False
            super().receive_data(b"")
            event = super().next_event()
        return event
