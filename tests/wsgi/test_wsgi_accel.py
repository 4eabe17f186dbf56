"""The compiled accelerator (server/_accel.c) against the pure path: identical heads,
environs, response bytes and errors, over the HTTP corpus and generated requests.

The compiled functions accept a subset and answer None for the rest; each test
below holds an answer they give to the pure code's answer for the same input, and
checks that the subset is not trivially empty. Pure functions and in-process
protocol objects only (no sockets); `make test-asan` runs this file under
AddressSanitizer and UBSan (tests/wsgi/test_wsgi_accel_asan.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re

import pytest
from corpus.invalid import CASES as INVALID
from corpus.valid import CASES as VALID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polycorn.server import accel
from polycorn.server.http.connection import Limits, ServerConnection
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, PAUSED, ConnectionClosed, Data, Request
from polycorn.server.http.head import parse_request_head
from polycorn.server.http.httpdate import DateCache
from polycorn.server.wsgi.body import EMPTY_INPUT
from polycorn.server.wsgi.environ import EnvironBuilder
from wsgi_support import RecordingAccessLog, make_cfg

pytestmark = [
    pytest.mark.skipif(accel.native is None, reason=f"no compiled accelerator: {accel.describe()}"),
    # ServingContext resumes accepting when a connection ends: no loop runs here.
    pytest.mark.filterwarnings("ignore:coroutine 'ServingContext.start_accepting'"),
]
if accel.native is not None:
    from polycorn.server.http.accel_connection import AccelConnection
    from polycorn.server.http.accel_server import AccelServerConnection

FUZZ = settings(max_examples=int(os.environ.get("POLYCORN_ACCEL_EXAMPLES", "200")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow])
PINNED_DATE = DateCache(clock=lambda: 0.0)

# --- generated requests: mostly plain, with every kind of odd byte mixed in ------------

TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ODD = b" \t\r\n\x00\x7f\x80\xff:;,\"()/?=@[]{}\\"
methods = st.one_of(st.sampled_from([b"GET", b"POST", b"HEAD", b"get", b"PURGE", b"CONNECT",
                                     b"OPTIONS", b"A!#", b""]),
                    st.binary(min_size=1, max_size=8))
targets = st.one_of(
    st.sampled_from([b"/", b"/a?b=c", b"/%41%2F?q=%20", b"/a#f", b"*", b"http://h/p", b"h:80",
                     b"/\xff", b"/a b", b"//x", b"/?", b"/a?b?c"]),
    st.binary(max_size=20).map(lambda b: b"/" + b),
    st.text(alphabet="/abc%?=&;:@+.-_~!$'()*,09AF", max_size=20).map(
        lambda t: b"/" + t.encode()))
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0",
                            b"http/1.1", b"HTTP/1.1 "])
names = st.one_of(
    st.sampled_from([b"Host", b"host", b"HOST", b"Content-Length", b"Transfer-Encoding",
                     b"Connection", b"Expect", b"Content-Type", b"X_Forwarded_For",
                     b"X-Forwarded-Proto", b"Script_Name", b"User-Agent", b"Cookie"]),
    st.binary(min_size=1, max_size=6).filter(lambda b: all(c in TCHARS for c in b)),
    st.binary(max_size=6))
values = st.one_of(
    st.sampled_from([b"h", b"example.com:8080", b" close ", b"keep-alive", b"chunked",
                     b"100-continue", b"3", b"0", b"", b"\t", b"https", b"[::1]:80",
                     b"Close", b"close, x", b"a\xffb"]),
    st.binary(max_size=12).filter(lambda b: all(c in TCHARS or c in _ODD for c in b)),
    st.binary(max_size=12))
separators = st.sampled_from([b":", b":", b": ", b" :", b":\t"])


@st.composite
def requests(draw) -> bytes:
    sp = draw(st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"]))
    eol = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]))
    line = draw(methods) + sp + draw(targets) + b" " + draw(versions)
    fields = draw(st.lists(st.tuples(names, separators, values), max_size=6))
    if draw(st.booleans()):
        fields.insert(0, (b"Host", b": ", b"example.com"))
    head = line + b"\r\n" + b"".join(n + s + v + eol for n, s, v in fields) + b"\r\n"
    return draw(st.sampled_from([b"", b"\r\n", b"abc"])) * draw(st.integers(0, 1)) + head \
        + draw(st.sampled_from([b"", b"abc", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))


limits_st = st.one_of(st.just(Limits()), st.builds(
    Limits, max_request_line=st.integers(0, 60), max_header_count=st.integers(0, 4),
    max_header_size=st.integers(0, 40)))


# --- split_head: what it accepts, the pure parser accepts and splits the same -----------

def check_split(raw: bytes, limits: Limits) -> bool:
    """split_head's answer for raw holds to parse_request_head's; whether it answered."""
    conn = AccelConnection(limits)
    split = accel.split_head(raw, conn._header_count, conn._small_head)
    if split is None:
        return False
    end, method, target, version, fields, framing_fields, host, connection = split
    pure = parse_request_head(raw[:end], limits) if not _framing_refused(raw[:end], limits) \
        else None
    if pure is not None:
        assert (pure.method, pure.target, pure.http_version, pure.headers) == (
            method, target, version, fields)
    assert raw[:end].endswith(b"\r\n\r\n") and b"\r\n\r\n" not in raw[:end - 1]
    # With the Request class, a plainly framed head comes whole: as the pure parser's.
    whole = accel.split_head(raw, conn._header_count, conn._small_head, Request)
    if len(whole) == 2:
        assert whole == (end, parse_request_head(raw[:end], limits))
        assert type(whole[1]) is Request
    else:
        assert whole == split
    return True


def _framing_refused(head: bytes, limits: Limits) -> bool:
    """True when the pure parser refuses head only for its framing fields (which the
    caller of split_head judges with the same Python rules, framing.decide_framing)."""
    try:
        parse_request_head(head, limits)
    except RemoteProtocolError as exc:
        text = str(exc)
        assert any(word in text for word in ("Host", "Content", "Transfer", "transfer",
                                             "expectation", "chunked", "coding")), text
        return True
    return False


def test_split_head_over_the_corpus() -> None:
    answered = 0
    for case in [*VALID, *INVALID]:
        answered += check_split(case.raw, case.limits)
    assert answered >= 40  # the plain subset is most of the valid corpus, not nothing


@FUZZ
@given(raw=requests(), limits=limits_st)
def test_split_head_over_generated_requests(raw: bytes, limits: Limits) -> None:
    check_split(raw, limits)


@FUZZ
@given(raw=st.binary(max_size=300), max_fields=st.integers(-1, 5), max_len=st.integers(-1, 400))
def test_split_head_on_any_bytes_answers_or_declines(raw, max_fields, max_len) -> None:
    """Never raises, never reads past the head it names (ASan checks the reads)."""
    split = accel.split_head(raw, max_fields, max_len)
    assert split is None or 0 < split[0] <= min(len(raw), max_len)


# --- the connection: AccelConnection's events and errors are ServerConnection's ----------

def events_of(conn_class: type, raw: bytes, limits: Limits, bytewise: bool) -> tuple:
    conn = conn_class(limits, date_cache=PINNED_DATE)
    out: list = []
    chunks = [raw[i:i + 1] for i in range(len(raw))] if bytewise else [raw]
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is PAUSED:
                    out.append(conn.respond_whole(200, b"OK", [(b"Content-Length", b"2")], b"ok"))
                    if not conn.keep_alive:
                        return tuple(out), None
                    conn.start_next_cycle()
                    continue
                out.append(event)
                if isinstance(event, ConnectionClosed):
                    return tuple(out), None
    except RemoteProtocolError as exc:
        return tuple(out), (exc.status, str(exc), conn.error_response(exc.status, str(exc)))
    return tuple(out), None


# Plain heads at the edges of what split_head takes (each with a valid Host, so that a
# mistake cannot hide behind a framing refusal, which hands the head to the pure parser).
EDGES = [b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n" for line in (
    b"X-A: b ", b"X-A:\tb\t", b"X-A:   ", b"X-A:", b"X-A: b  c", b"X-A: \xff\x80", b"X-A: \x7f",
    b"X-A: a\x00", b"X-A: a\rb", b"X-A: a\nb", b"X-Mixed-CASE: V", b"x_a: 1", b"X-A : b",
    b" X-A: b", b"X-A: b\r\nX-A: c", b"Cookie: a=b; c=d\r\nCookie: e=f", b"Content-Length: 0",
    b"Connection: Close", b"Connection: close ", b"Connection: close, te",
)] + [b"GET /%s HTTP/1.1\r\nHost: h\r\n\r\n" % target for target in (
    b"a%41?b=%42", b"a?", b"?q", b"a b", b"a#b", b"\xff", b"a\x7f", b"a?b?c", b"/")]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_corpus_same_events_and_errors(bytewise: bool) -> None:
    for conn_class in (AccelConnection, AccelServerConnection):
        for case in [*VALID, *INVALID]:
            assert events_of(conn_class, case.raw, case.limits, bytewise) == events_of(
                ServerConnection, case.raw, case.limits, bytewise), case.name
        for raw in EDGES:
            assert events_of(conn_class, raw, Limits(), bytewise) == events_of(
                ServerConnection, raw, Limits(), bytewise), raw


@FUZZ
@given(raw=requests(), limits=limits_st, bytewise=st.booleans())
def test_generated_requests_same_events_and_errors(raw, limits, bytewise) -> None:
    pure = events_of(ServerConnection, raw, limits, bytewise)
    assert events_of(AccelConnection, raw, limits, bytewise) == pure
    assert events_of(AccelServerConnection, raw, limits, bytewise) == pure


# --- the environ: build_environ's entries are EnvironBuilder's -----------------------------

CONFIGS = {
    "tcp": (make_cfg(), ("127.0.0.1", 8000), ""),
    "wildcard": (make_cfg(), ("0.0.0.0", 8000), ""),
    "unix": (make_cfg(), "/run/app.sock", ""),
    "script-name": (make_cfg(), ("127.0.0.1", 8000), "/app"),
    "refuse-underscores": (make_cfg(header_map="refuse"), ("127.0.0.1", 8000), ""),
    "dangerous": (make_cfg(header_map="dangerous", forwarded_allow_ips=["*"]),
                  ("127.0.0.1", 8000), ""),
}
CLIENTS = [("127.0.0.1", 40000), ("10.1.2.3", 40001), ""]


def builders(config: str) -> tuple[EnvironBuilder, EnvironBuilder]:
    cfg, listener, script_name = CONFIGS[config]
    previous = os.environ.get("SCRIPT_NAME")
    os.environ["SCRIPT_NAME"] = script_name
    try:
        return (EnvironBuilder(cfg, listener, "http", accelerated=True),
                EnvironBuilder(cfg, listener, "http", accelerated=False))
    finally:
        if previous is None:
            del os.environ["SCRIPT_NAME"]
        else:
            os.environ["SCRIPT_NAME"] = previous


BUILDERS = {name: builders(name) for name in CONFIGS}


def environ_or_error(builder: EnvironBuilder, request: Request, client) -> object:
    try:
        environ = builder.build(request, client, EMPTY_INPUT)
    except RemoteProtocolError as exc:
        return ("refused", exc.status, str(exc))
    # Each builder has its own wsgi.errors stream: compare its type, keep the order.
    return [(k, type(v).__name__ if k == "wsgi.errors" else v) for k, v in environ.items()]


def same_environ(request: Request) -> bool:
    """Both builders agree for every config and client; whether the compiled part answered."""
    for compiled, pure in BUILDERS.values():
        for client in CLIENTS:
            assert environ_or_error(compiled, request, client) == environ_or_error(
                pure, request, client)
    return accel.build_environ(
        {}, None, request.method, request.http_version, request.target, request.headers,
        request.content_length, BUILDERS["tcp"][0]._header_keys) is not None


def test_environ_over_the_corpus() -> None:
    answered = sum(same_environ(case.request) for case in VALID)
    assert answered >= 40


@FUZZ
@given(raw=requests())
def test_environ_over_generated_requests(raw: bytes) -> None:
    try:
        request = parse_request_head(raw[:raw.find(b"\r\n\r\n") + 4], Limits())
    except RemoteProtocolError:
        return
    same_environ(request)


def test_build_environ_refuses_what_is_not_its_to_map() -> None:
    keys = BUILDERS["tcp"][0]._header_keys
    host = ((b"host", b"h"),)
    build = accel.build_environ
    assert build({}, None, b"GET", b"1.1", b"/%41", host, None, keys) is None
    assert build({}, None, b"GET", b"1.1", b"http://h/", host, None, keys) is None
    assert build({}, None, b"GET", b"2.0", b"/", host, None, keys) is None
    assert build({}, None, b"GET", b"1.1", b"/", ((b"x_y", b"1"),), None, keys) is None
    assert build({}, None, b"GET", b"1.1", b"/", ((b"never-seen-name", b"1"),), None,
                 keys) is None
    with pytest.raises(TypeError):
        build({}, None, "GET", b"1.1", b"/", host, None, keys)
    with pytest.raises(TypeError):
        accel.split_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 100, 8190, 42)


# --- the event worker's bytes: the compiled path writes what the pure one writes ----------

DATE_LINE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def echo_app(environ: dict, start_response) -> list[bytes]:
    body = json.dumps({k: v for k, v in sorted(environ.items())
                       if type(v) is str and k != "wsgi.errors"}).encode()
    body += environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class _Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts) -> None:
        for part in parts:
            self.out += part

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


def wire(compiled: bool, raw: bytes | list[bytes], limits: Limits, bytewise: bool) -> bytes:
    """The bytes the event worker's protocol writes for raw (then EOF); raw a list: the
    reads, as given."""
    from polycorn.server.http.fast import FastConnection
    from polycorn.server.workers.base import RunState
    from polycorn.server.workers.event_context import ServingContext
    from polycorn.server.workers.event_protocol import HTTPProtocol
    from polycorn.server.wsgi.handler import WSGIHandler

    cfg = make_cfg(worker_connections=10, backlog=16, health_check=None)
    handler = WSGIHandler(echo_app, cfg, None, RecordingAccessLog(enabled=False))

    class Worker:
        state = RunState.RUNNING
        alive = True
        app = staticmethod(echo_app)
        ssl_context = None

        def __init__(self) -> None:
            self.cfg, self.handler = cfg, handler

        def count_request(self) -> None: ...

    loop = asyncio.new_event_loop()
    try:
        ctx = ServingContext(Worker(), loop, on_last_connection=lambda: None)
        ctx.limits = limits
        ctx.parser = AccelConnection if compiled else FastConnection
        if not compiled:
            ctx.native_respond = ctx.serve_plain = None  # the app call and response in Python too
        assert (ctx.native_respond is not None) is compiled
        builder = EnvironBuilder(cfg, ("127.0.0.1", 8000), "http", accelerated=compiled)
        proto = HTTPProtocol(ctx, builder)
        transport = _Transport()
        proto.connection_made(transport)
        if isinstance(raw, list):
            chunks = raw
        else:
            chunks = [raw[i:i + 1] for i in range(len(raw))] if bytewise else [raw]
        for chunk in chunks:
            if transport.closed:
                break
            proto.data_received(chunk)
        if not transport.closed:
            proto.eof_received()
        proto.connection_lost(None)
    finally:
        with contextlib.suppress(Exception):
            loop.close()
    return DATE_LINE.sub(b"\r\nDate: -\r\n", bytes(transport.out))


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_event_worker_writes_the_same_bytes_over_the_corpus(bytewise: bool) -> None:
    for case in [*VALID, *INVALID]:
        compiled = wire(True, case.raw, case.limits, bytewise)
        assert compiled == wire(False, case.raw, case.limits, bytewise), case.name
        assert compiled.startswith(b"HTTP/1.1 "), case.name
    for raw in EDGES:
        assert wire(True, raw, Limits(), bytewise) == wire(False, raw, Limits(), bytewise), raw


@FUZZ
@given(raw=requests())
def test_event_worker_writes_the_same_bytes_for_generated_requests(raw: bytes) -> None:
    assert wire(True, raw, Limits(), False) == wire(False, raw, Limits(), False)


NEXT = [b"", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /q HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok"]


@FUZZ
@given(size=st.one_of(st.integers(0, 40), st.sampled_from(
           [4096, 16384, 16385, 1024 * 1024, 1024 * 1024 + 1])),
       short=st.sampled_from([0, 0, 0, 1, 2]), then=st.sampled_from(NEXT),
       cuts=st.lists(st.floats(0, 1), max_size=3))
def test_event_worker_writes_the_same_bytes_for_bodies_in_any_reads(size: int, short: int,
                                                                     then: bytes,
                                                                     cuts: list[float]) -> None:
    # A Content-Length body all received is taken with its head in C (accel_take.c); one
    # split across reads, short of its length (then EOF) or past SPOOL_LIMIT is Python's.
    body = (bytes(range(256)) * (size // 256 + 1))[:max(0, size - short)]
    raw = b"POST /p?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size + body
    raw += b"" if short else then
    at = sorted({int(f * len(raw)) for f in cuts} | {0, len(raw)})
    reads = [raw[a:b] for a, b in zip(at, at[1:], strict=False) if b > a]
    compiled = wire(True, reads, Limits(), False)
    assert compiled == wire(False, reads, Limits(), False)
    truncated = size and short  # then EOF: "closed before the request body was complete"
    assert compiled.startswith(b"HTTP/1.1 400 " if truncated else b"HTTP/1.1 200 OK\r\n")


def test_the_compiled_path_is_taken_for_plain_requests() -> None:
    conn = AccelConnection()
    raw = b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: x\r\nConnection: close\r\n\r\n"
    assert accel.split_head(raw, 100, 8190) is not None
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, Request) and not request.keep_alive
    assert conn.fallback_reason is None and conn._parser is None  # llhttp never ran
    assert isinstance(conn.next_event(), Data) is False


def test_a_slot_descriptor_of_another_class_is_not_read_at_its_offset() -> None:
    """accel_slots.c reads a __slots__ member at its offset only where the descriptor
    belongs to the object's own layout: one of a bigger class, set as a class attribute,
    would have it read past the object's end; Python raises TypeError for it."""
    from polycorn.server.workers import event_native

    if event_native.DATA_RECEIVED is None:
        pytest.skip("the compiled data_received needs httptools (the fast extra)")

    class Big:
        __slots__ = (*(f"pad{n}" for n in range(64)), "phase")

    class Foreign:
        __slots__ = ()
        phase = Big.__dict__["phase"]

    with pytest.raises(TypeError, match="doesn't apply to a 'Foreign' object"):
        event_native.DATA_RECEIVED(Foreign(), b"GET / HTTP/1.1\r\n\r\n")


def test_take_plain_reads_a_class_changed_after_its_slots_were_remembered() -> None:
    """The compiled path reads the connection's __slots__ at their offsets (accel_slots.c),
    remembered per type with its version tag: a class changed at run time must be read
    as Python reads it, not at the remembered offset."""
    from polycorn.server.http.fast import FastConnection
    from polycorn.server.workers import event_native

    if event_native.TAKE_PLAIN is None:
        pytest.skip("take_plain needs httptools (the fast extra)")
    builder = BUILDERS["tcp"][0]
    client = builder.client_entries(("127.0.0.1", 40000))

    class Changing(AccelConnection):
        __slots__ = ()

    def take(conn):
        return event_native.TAKE_PLAIN(conn, event_native.REQUEST_TYPE, client, EMPTY_INPUT,
                                       *builder.plain_keys)

    first = Changing()
    first.receive_data(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
    request, environ = take(first)
    assert environ["PATH_INFO"] == "/first" and first._request is request
    # Every Changing now says its buffer holds this head, whatever its slot holds.
    Changing._received = property(lambda self: b"GET /changed HTTP/1.1\r\nHost: h\r\n\r\n",
                                   lambda self, value: None)
    second = Changing()
    second.receive_data(b"GET /slot HTTP/1.1\r\nHost: h\r\n\r\n")
    request, environ = take(second)
    assert environ["PATH_INFO"] == "/changed"
    # Writes went through the class too: its setter kept nothing, the slot was never set.
    with pytest.raises(AttributeError):
        FastConnection._received.__get__(second)
    del Changing._received
    third = Changing()
    third.receive_data(b"GET /third HTTP/1.1\r\nHost: h\r\n\r\n")
    request, environ = take(third)
    assert environ["PATH_INFO"] == "/third" and third._received == b""


# --- start_response: the compiled look-up of a remembered header list -------------------

class Text(str):
    """A str subclass: never passes for the str it equals."""


class Pair(tuple):
    """A tuple subclass: likewise."""


_names = st.sampled_from(["Content-Type", "Content-Length", "X-A", "Keep-Alive", "Connection",
                          "Bad Name", "X\r\nY", "content-length"])
_values = st.sampled_from(["text/plain", "5", " 7 ", "x", "a\nb", "close", "", "\xff"])
header_items = st.one_of(
    st.tuples(_names, _values), st.tuples(_names, _values),
    st.builds(lambda n, v: [n, v], _names, _values),
    st.builds(lambda n, v: Pair((n, v)), _names, _values),
    st.builds(lambda n, v: (Text(n), v), _names, _values),
    st.builds(lambda n, v: (n, Text(v)), _names, _values),
    st.just(("a", "b", "c")), st.just(42), st.just((b"X-A", b"b")))


def declare(headers, compiled: bool) -> tuple:
    from polycorn.server.wsgi import response
    from polycorn.server.wsgi.response import StartResponse

    saved = response._known_list
    response._known_list = saved if compiled else None
    try:
        start = StartResponse()
        try:
            start("200 OK", headers)
        except (TypeError, ValueError) as exc:
            return ("refused", type(exc), str(exc))
        return (start.headers, start.wire_headers, start.content_length)
    finally:
        response._known_list = saved


@FUZZ
@given(headers=st.lists(header_items, max_size=4))
def test_start_response_same_declaration(headers) -> None:
    for _ in range(2):  # the second time the list is a remembered one
        assert declare(list(headers), True) == declare(list(headers), False)


def test_known_header_list_answers_only_plain_lists() -> None:
    from polycorn.server.wsgi.response import _KNOWN_HEADER_LISTS

    plain = [("Content-Type", "text/plain"), ("Content-Length", "5")]
    declare(list(plain), False)  # remembered
    assert accel.native.known_header_list(plain, _KNOWN_HEADER_LISTS) is not None
    assert accel.native.known_header_list([Pair(p) for p in plain], _KNOWN_HEADER_LISTS) is None
    assert accel.native.known_header_list([(Text("Content-Type"), "text/plain"), plain[1]],
                                          _KNOWN_HEADER_LISTS) is None
    assert accel.native.known_header_list([["a", "b"]], _KNOWN_HEADER_LISTS) is None
