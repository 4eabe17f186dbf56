"""EnvironBuilder and ProxyTrust: pure functions of a Request event, no sockets."""

from __future__ import annotations

import io
import logging

import pytest
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Request
from polycorn.server.wsgi.environ import EnvironBuilder, ErrorStream
from polycorn.server.wsgi.forwarded import ProxyTrust, scheme_from_secure_headers
from polycorn.server.wsgi.response import FileWrapper
from wsgi_support import make_cfg

LISTENER = ("127.0.0.1", 8000)
CLIENT = ("127.0.0.1", 50123)


def request(target: bytes = b"/", headers=(), method: bytes = b"GET",
            version: bytes = b"1.1", **kw) -> Request:
    return Request(method=method, target=target, http_version=version,
                   headers=tuple(headers), **kw)


def build(target=b"/", headers=(), *, client=CLIENT, cfg=None, listener=LISTENER,
          scheme="http", **kw) -> dict:
    builder = EnvironBuilder(cfg or make_cfg(), listener, scheme)
    wsgi_input = io.BytesIO()
    env = builder.build(request(target, headers, **kw), client, wsgi_input)
    # A connection computes its client's entries once: every test checks that way too.
    entries = builder.client_entries(client)
    assert builder.build(request(target, headers, **kw), client, wsgi_input, entries) == env
    return env


def test_constant_entries():
    env = build(cfg=make_cfg(workers=4, threads=1))
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["SERVER_SOFTWARE"].startswith("polycorn/")
    assert env["SCRIPT_NAME"] == ""
    env = build(cfg=make_cfg(workers=1, threads=8))
    assert env["wsgi.multiprocess"] is False and env["wsgi.multithread"] is True


def test_builds_are_independent_copies():
    builder = EnvironBuilder(make_cfg(), LISTENER, "http")
    first = builder.build(request(b"/a", [(b"x-one", b"1")]), CLIENT, io.BytesIO())
    second = builder.build(request(b"/b"), CLIENT, io.BytesIO())
    first["app.scratch"] = 1
    assert "HTTP_X_ONE" not in second and "app.scratch" not in second
    assert second["PATH_INFO"] == "/b"


def test_one_clients_entries_serve_many_requests_unchanged():
    cfg = make_cfg(forwarded_allow_ips=["127.0.0.1"])
    builder = EnvironBuilder(cfg, LISTENER, "http")
    entries = builder.client_entries(CLIENT)
    shared = dict(entries[0])
    proxied = builder.build(request(headers=[(b"x-forwarded-proto", b"https"),
                                             (b"script_name", b"/mount")]),
                            CLIENT, io.BytesIO(), entries)
    assert proxied["wsgi.url_scheme"] == "https" and proxied["SCRIPT_NAME"] == "/mount"
    plain = builder.build(request(), CLIENT, io.BytesIO(), entries)
    assert plain["REMOTE_ADDR"] == "127.0.0.1" and plain["wsgi.url_scheme"] == "http"
    assert plain["REMOTE_PORT"] == "50123" and plain["SCRIPT_NAME"] == ""
    assert entries[0] == shared  # no request's changes leak into the next one


def test_request_line_entries():
    env = build(b"/p/a?x=1&y=%20", method=b"POST", version=b"1.0")
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["PATH_INFO"] == "/p/a"
    assert env["QUERY_STRING"] == "x=1&y=%20"  # the query stays encoded
    assert env["RAW_URI"] == "/p/a?x=1&y=%20"


def test_path_is_percent_decoded_then_latin1():
    env = build(b"/caf%C3%A9/%2F?q")
    # PEP 3333: the bytes as latin-1 code points (the app re-encodes to get UTF-8 back)
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9//"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café//"
    assert env["RAW_URI"] == "/caf%C3%A9/%2F?q"


def test_server_name_is_the_listeners_address_not_the_host_header():
    # RFC 3875 4.1.14-15 and Gunicorn: the address the request arrived on. The Host
    # header is the client's to choose, and stays in HTTP_HOST.
    for host in (b"example.com:8080", b"example.com", b"[::1]:9000"):
        for scheme in ("http", "https"):
            env = build(headers=[(b"host", host)], scheme=scheme)
            assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8000")
            assert env["HTTP_HOST"] == host.decode()
    env = build(version=b"1.0")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8000")
    env = build(listener=("::1", 8001, 0, 0), headers=[(b"host", b"example.com")])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "8001")


def test_a_wildcard_listener_names_the_connections_local_address():
    for listener, local, name in [(("0.0.0.0", 8000), ("127.0.0.2", 8000), "127.0.0.2"),
                                  (("::", 8001, 0, 0), ("::1", 8001, 0, 0), "[::1]")]:
        builder = EnvironBuilder(make_cfg(), listener, "http")
        assert builder.wants_local_addr
        entries = builder.client_entries(CLIENT, local)
        env = builder.build(request(headers=[(b"host", b"example.com")]), CLIENT,
                            io.BytesIO(), entries)
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, str(listener[1]))
        # Without a local address (none known) the listener's own is the answer.
        env = builder.build(request(), CLIENT, io.BytesIO())
        assert env["SERVER_PORT"] == str(listener[1])
    builder = EnvironBuilder(make_cfg(), LISTENER, "http")
    assert not builder.wants_local_addr  # a named listener is the answer: no getsockname
    entries = builder.client_entries(CLIENT, ("127.0.0.9", 1))
    assert (entries[0]["SERVER_NAME"], entries[0]["SERVER_PORT"]) == ("127.0.0.1", "8000")


def test_remote_addr_tcp_and_unix():
    env = build(client=("10.1.2.3", 4444))
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.1.2.3", "4444")
    env = build(client="", listener="/run/app.sock")
    assert env["REMOTE_ADDR"] == "" and "REMOTE_PORT" not in env
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("/run/app.sock", "")
    # A Unix socket has no host or port: Host names the server there, as in Gunicorn.
    env = build(client=b"", listener=b"/run/app.sock", headers=[(b"host", b"site")])
    assert env["REMOTE_ADDR"] == ""
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("site", "80")
    env = build(client="", listener="/run/app.sock", headers=[(b"host", b"site")], scheme="https")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("site", "443")
    env = build(client="", listener="/run/app.sock", headers=[(b"host", b"[::1]:9000")])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "9000")
    env = build(client="", listener="/run/app.sock", headers=[(b"host", b"ignored")],
                target=b"http://api.example.com:81/x")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("api.example.com", "81")


def test_http_headers_mapping_and_repeats():
    env = build(headers=[
        (b"user-agent", b"t/1"),
        (b"x-custom-thing", b"a"),
        (b"accept", b"text/html"),
        (b"x-custom-thing", b"b"),
        (b"x-custom-thing", b"c"),
        (b"content-type", b"application/json"),
        (b"content-length", b"5"),
    ], method=b"POST", content_length=5)
    assert env["HTTP_USER_AGENT"] == "t/1"
    assert env["HTTP_X_CUSTOM_THING"] == "a,b,c"
    assert env["HTTP_ACCEPT"] == "text/html"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_latin1_header_values_pass_through():
    env = build(headers=[(b"x-name", "Jos\u00e9".encode("latin-1"))])
    assert env["HTTP_X_NAME"] == "Jos\u00e9"


def test_underscore_headers_are_dropped():
    env = build(headers=[
        (b"x-forwarded-for", b"10.0.0.9"),
        (b"x_forwarded_for", b"6.6.6.6"),
        (b"script_name", b"/evil"),
        (b"content_length", b"999"),
    ], client=("203.0.113.7", 1))
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.9"
    assert env["SCRIPT_NAME"] == ""
    assert "CONTENT_LENGTH" not in env
    assert not any("6.6.6.6" in str(v) or "/evil" in str(v) for v in env.values())


def test_header_map_refuse_answers_400_unless_a_trusted_forwarder_header():
    cfg = make_cfg(header_map="refuse")
    with pytest.raises(RemoteProtocolError) as refused:
        build(headers=[(b"x_custom", b"1")], cfg=cfg)
    assert refused.value.status == 400 and "X_CUSTOM" in str(refused.value)
    # Gunicorn: a trusted front end's forwarder_headers pass whatever header_map says...
    env = build(headers=[(b"script_name", b"/app")], cfg=cfg)
    assert env["SCRIPT_NAME"] == "/app"
    # ...but the same header from anyone else is refused.
    with pytest.raises(RemoteProtocolError):
        build(headers=[(b"script_name", b"/app")], cfg=cfg, client=("203.0.113.7", 1))


def test_header_map_dangerous_maps_underscores_like_dashes():
    env = build(headers=[(b"x_custom", b"1"), (b"x-custom", b"2"), (b"content_length", b"7")],
                cfg=make_cfg(header_map="dangerous"), client=("203.0.113.7", 1))
    assert env["HTTP_X_CUSTOM"] == "1,2"  # the collision the default avoids
    assert env["HTTP_CONTENT_LENGTH"] == "7" and "CONTENT_LENGTH" not in env


@pytest.mark.parametrize("header_map,trusted,kept", [
    ("drop", False, [(b"x-custom", b"2")]),
    ("drop", True, [(b"x-custom", b"2"), (b"script_name", b"/app")]),
    ("dangerous", False, [(b"x_custom", b"1"), (b"x-custom", b"2"), (b"script_name", b"/app")]),
])
def test_scope_headers_let_through_what_the_environ_maps(header_map, trusted, kept):
    """The ASGI scope's headers: a name with "_" only where the environ maps it
    (forwarder_headers of a trusted front end, header_map dangerous)."""
    builder = EnvironBuilder(make_cfg(header_map=header_map), LISTENER, "http")
    headers = ((b"x_custom", b"1"), (b"x-custom", b"2"), (b"script_name", b"/app"))
    assert builder.scope_headers(headers, trusted) == kept
    plain = ((b"host", b"h"), (b"x-custom", b"2"))
    assert builder.scope_headers(plain, trusted) == list(plain)


def test_content_length_comes_from_framing_not_header():
    # A chunked request may carry a stray Content-Length: the parser's framing wins.
    env = build(headers=[(b"transfer-encoding", b"chunked"), (b"content-length", b"3")],
                method=b"POST", chunked=True)
    assert "CONTENT_LENGTH" not in env
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_many_distinct_header_names_do_not_grow_the_cache_without_bound():
    builder = EnvironBuilder(make_cfg(), LISTENER, "http")
    for i in range(3000):
        env = builder.build(request(headers=[(b"x-h%d" % i, b"v")]), CLIENT, io.BytesIO())
        assert env[f"HTTP_X_H{i}"] == "v"
    assert len(builder._header_keys) <= 1024


def test_script_name_from_environment(monkeypatch):
    monkeypatch.setenv("SCRIPT_NAME", "/app/")
    env = build(b"/app/users/1?x")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/users/1")
    env = build(b"/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")
    # only a whole path segment is a prefix: /application is not under /app
    env = build(b"/application")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/application")
    env = build(b"/other")
    assert env["PATH_INFO"] == "/other"


def test_absolute_form_target():
    env = build(b"http://api.example.com:81/v1/x?y=2", headers=[(b"host", b"ignored")])
    assert env["PATH_INFO"] == "/v1/x"
    assert env["QUERY_STRING"] == "y=2"
    assert env["HTTP_HOST"] == "api.example.com:81"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8000")  # where it arrived
    assert env["RAW_URI"] == "http://api.example.com:81/v1/x?y=2"
    env = build(b"HTTPS://h.example?q")
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_HOST"]) == ("/", "q", "h.example")
    assert env["wsgi.url_scheme"] == "http"  # the connection's scheme, not the client's claim
    env = build(b"http://[::1]:8080")
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_HOST"]) == ("/", "", "[::1]:8080")
    env = build(b"http://h/a%20b/")
    assert env["PATH_INFO"] == "/a b/"


def test_remote_addr_is_the_peer_whatever_x_forwarded_for_says():
    # Gunicorn never rewrites REMOTE_ADDR: with "*" any client could choose its own.
    for allowed in (["127.0.0.1"], ["*"], ["127.0.0.1", "10.0.0.0/8"]):
        for client in (CLIENT, ("203.0.113.7", 1)):
            env = build(headers=[(b"x-forwarded-for", b"1.2.3.4, 10.0.0.2")],
                        cfg=make_cfg(forwarded_allow_ips=allowed), client=client)
            assert env["REMOTE_ADDR"] == client[0]
            assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4, 10.0.0.2"  # the app may read it
    env = build(headers=[(b"x-forwarded-for", b"192.0.2.1")], client="", listener="/tmp/s.sock")
    assert env["REMOTE_ADDR"] == ""


def test_scheme_headers_only_from_a_trusted_peer():
    headers = [(b"x-forwarded-proto", b"https")]
    assert build(headers=headers)["wsgi.url_scheme"] == "https"
    assert build(headers=headers, client=("203.0.113.7", 1))["wsgi.url_scheme"] == "http"
    star = make_cfg(forwarded_allow_ips=["*"])
    assert build(headers=headers, cfg=star, client=("203.0.113.7", 1))["wsgi.url_scheme"] == "https"
    env = build(headers=[*headers, (b"host", b"site")], client="", listener="/tmp/s.sock")
    assert (env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("https", "443")  # Unix: trusted


def test_secure_scheme_headers_setting():
    env = build(headers=[(b"x-forwarded-ssl", b"on")])
    assert env["wsgi.url_scheme"] == "https"
    env = build(headers=[(b"x-forwarded-proto", b"http")], scheme="https")
    assert env["wsgi.url_scheme"] == "http"  # the proxy spoke plain HTTP to the client
    # Gunicorn compares the whole value, case-sensitively
    assert build(headers=[(b"x-forwarded-proto", b"HTTPS")])["wsgi.url_scheme"] == "http"
    assert build(headers=[(b"x-forwarded-proto", b"https, http")])["wsgi.url_scheme"] == "http"
    env = build(headers=[(b"x-forwarded-proto", b"https"), (b"x-forwarded-proto", b"https")])
    assert env["wsgi.url_scheme"] == "https"
    # two trusted headers that disagree: the request is refused (Gunicorn's 400)
    with pytest.raises(RemoteProtocolError) as refused:
        build(headers=[(b"x-forwarded-proto", b"https"), (b"x-forwarded-ssl", b"off")])
    assert refused.value.status == 400 and "Contradictory" in str(refused.value)
    # ...but from an untrusted peer they are only headers
    env = build(headers=[(b"x-forwarded-proto", b"https"), (b"x-forwarded-ssl", b"off")],
                client=("203.0.113.7", 1))
    assert env["wsgi.url_scheme"] == "http"
    env = build(headers=[(b"x-forwarded-proto", b"https")],
                cfg=make_cfg(secure_scheme_headers={}))
    assert env["wsgi.url_scheme"] == "http"


def test_trusted_front_end_sets_script_name():
    env = build(b"/app/users/1?x", headers=[(b"script_name", b"/app"), (b"path_info", b"/zz")])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/users/1")
    assert env["HTTP_SCRIPT_NAME"] == "/app"
    assert env["HTTP_PATH_INFO"] == "/zz"  # passed on, as Gunicorn does; PATH_INFO is the path
    env = build(b"/app", headers=[(b"script_name", b"/app/")])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")
    env = build(b"/users/1", headers=[(b"script_name", b"/app")])  # a proxy that strips it
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/users/1")
    env = build(b"/application", headers=[(b"script_name", b"/app")])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/application")
    # not from an untrusted peer, nor when forwarder_headers leaves it out
    env = build(b"/app/x", headers=[(b"script_name", b"/app")], client=("203.0.113.7", 1))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/app/x")
    env = build(b"/app/x", headers=[(b"script_name", b"/app")],
                cfg=make_cfg(forwarder_headers=["PATH_INFO"]))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/app/x")
    env = build(b"/app/x", headers=[(b"script_name", b"/app"), (b"remote_user", b"bob")],
                cfg=make_cfg(forwarder_headers=["*"]))
    assert (env["SCRIPT_NAME"], env["HTTP_REMOTE_USER"]) == ("/app", "bob")


def test_proxy_trust_forms():
    trust = ProxyTrust("127.0.0.1, 10.0.0.0/8 ,2001:db8::/32")
    assert trust.trusts("127.0.0.1") and trust.trusts("10.200.0.1")
    assert trust.trusts("2001:db8::5") and trust.trusts("::ffff:10.1.1.1")
    assert not trust.trusts("11.0.0.1") and not trust.trusts("not-an-ip")
    assert ProxyTrust("*").trusts("203.0.113.7") and not ProxyTrust([]).trusts("127.0.0.1")
    secure = {b"x-forwarded-proto": b"https", b"x-forwarded-ssl": b"on"}
    assert scheme_from_secure_headers(((b"host", b"h"),), secure) is None
    assert scheme_from_secure_headers(((b"x-forwarded-ssl", b"on"),), secure) == "https"


def test_remembered_proxy_trust_verdicts_are_the_parsed_ones_and_bounded():
    from polycorn.server.wsgi import forwarded

    allowed = "127.0.0.1, 10.0.0.0/8 ,2001:db8::/32"
    peers = ["10.0.0.1", "11.0.0.1", "::ffff:10.1.1.1", "2001:db8::5", "2001:db9::5",
             "not-an-ip", "", "10.255.255.255"]
    trust = ProxyTrust(allowed)
    for _ in range(3):  # first parsed, then remembered: the same answers
        assert [trust.trusts(p) for p in peers] == [True, False, True, True, False,
                                                     False, False, True]
    for i in range(forwarded.MAX_REMEMBERED_PEERS + 50):
        high, low = divmod(i % 65536, 256)
        assert trust.trusts(f"10.0.{high}.{low}")
        assert not trust.trusts(f"192.0.{high}.{low}")
    assert len(trust._verdicts) <= forwarded.MAX_REMEMBERED_PEERS


def test_error_stream_logs_whole_lines(caplog):
    stream = ErrorStream()
    with caplog.at_level(logging.ERROR, logger="polycorn.error"):
        stream.write("one ")
        stream.write("line\ntwo")
        stream.writelines(["\n", "three"])
        stream.flush()
    assert [r.getMessage() for r in caplog.records] == ["one line", "two", "three"]


@pytest.mark.parametrize("target", [b"/", b"/x?", b"*", b"/%zz%"])
def test_odd_targets_never_crash(target):
    env = build(target)
    assert env["RAW_URI"] == target.decode()
