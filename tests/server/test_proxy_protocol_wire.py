"""The PROXY protocol on real sockets, hand-made bytes, every worker class.

One server per worker class runs with `--proxy-protocol` (bare: auto) and
`--proxy-allow-from 127.0.0.2`; a client bound to 127.0.0.2 is the allowed front end
(it must send a header), one from 127.0.0.1 is any other peer (plain HTTP; a header
from it is answered 403, as Gunicorn does). Refused connections must never reach the
app (its request log proves it), and each refusal is one log line naming the peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from polycorn.server.http.proxy_protocol import V2_SIGNATURE
from polycorn.server.workers.proxy_gate import PROXY_HEADER_TIMEOUT
from support.procs import ROOT, Polycorn, descendants, free_port, kill_all, port_open, wait_until

APPS = ROOT / "tests" / "apps"
WORKERS = ("sync", "thread", "event")
FRONT = "127.0.0.2"  # the allowed front end
OTHER = "127.0.0.1"  # any other peer


class Server:
    def __init__(self, proc: Polycorn, port: int, app_log: Path, access_log: Path) -> None:
        self.proc, self.port, self.app_log, self.access_log = proc, port, app_log, access_log

    def app_saw(self, path: str) -> bool:
        return self.app_log.exists() and f" {path}\n" in self.app_log.read_text()

    def error_log(self) -> str:
        return self.proc.log()


def start_server(tmp: Path, worker: str, *extra: str) -> Server:
    port = free_port()
    app_log, access_log = tmp / "app.log", tmp / "access.log"
    threads = ("--threads", "4") if worker == "thread" else ()
    proc = Polycorn(["-k", worker, *threads, "-w", "1", "-b", f"127.0.0.1:{port}",
                     "--access-logfile", str(access_log),
                     "--access-logformat", "%(h)s %(r)s %(s)s",
                     "proxyapp:application", *extra],  # the app first: the bare flag last
                    cwd=APPS, env={"PROXY_APP_LOG": str(app_log)}, log_path=tmp / "server.log")
    try:
        proc.wait_port(port)
    except BaseException:
        proc.stop()
        raise
    return Server(proc, port, app_log, access_log)


@pytest.fixture(scope="module", params=WORKERS)
def server(request, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp(request.param), request.param,
                       "--proxy-allow-from", FRONT, "--proxy-protocol")
    yield srv
    srv.proc.stop()


def connect(port: int, source: str = FRONT, timeout: float = 15.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def request(path: str, close: bool = True) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: h\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def exchange(port: int, data: bytes, source: str = FRONT) -> tuple[bytes, tuple[str, int]]:
    with connect(port, source) as sock:
        local = sock.getsockname()
        sock.sendall(data)
        return read_all(sock), local


def answer_json(reply: bytes) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), reply
    return json.loads(body)


def v2(command: int, fam: int, block: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, fam]) + struct.pack("!H", len(block)) + block


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    return v2(1, 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
              + struct.pack("!HH", sport, dport) + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    return v2(1, 0x21, socket.inet_pton(socket.AF_INET6, src)
              + socket.inet_pton(socket.AF_INET6, dst) + struct.pack("!HH", sport, dport) + tlvs)


def refusal_logged(server: Server, local: tuple[str, int], fragment: str) -> None:
    needle = f"PROXY protocol refused for {local[0]}:{local[1]}: "
    wait_until(lambda: needle in server.error_log(), 10, what=f"the refusal of {local}")
    lines = [line for line in server.error_log().splitlines() if needle in line]
    assert len(lines) == 1, lines  # one line per refusal
    assert fragment in lines[0] and "worker " in lines[0], lines[0]


# -- accepted headers -------------------------------------------------------------------

def test_v1_header_sets_remote_addr_and_the_access_log(server) -> None:
    reply, _ = exchange(server.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"
                        + request("/v1"))
    env = answer_json(reply)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["PROXY_PROTOCOL"],
            env["PROXY_ADDR"], env["PROXY_PORT"]) == ("203.0.113.7", "51234", "TCP4",
                                                      "192.0.2.1", "443")
    wait_until(lambda: "/v1" in server.access_log.read_text(), 10, what="the access log line")
    line = next(ln for ln in server.access_log.read_text().splitlines() if "/v1" in ln)
    assert line.startswith("203.0.113.7 GET /v1 "), line


def test_v2_tcp6_with_tlvs_sets_remote_addr(server) -> None:
    tlvs = b"\x01\x00\x02h2" + b"\x20\x00\x05\x01\x00\x00\x00\x00" + b"\xe0\x01\x00" + b"x" * 256
    reply, _ = exchange(server.port, v2_tcp6("2001:db8::7", "2001:db8::1", 4242, 8443, tlvs)
                        + request("/v2-tcp6"))
    env = answer_json(reply)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["PROXY_PROTOCOL"]) == (
        "2001:db8::7", "4242", "TCP6")


def test_v2_local_keeps_the_real_endpoints(server) -> None:
    reply, local = exchange(server.port, v2(0, 0x00, b"") + request("/v2-local"))
    env = answer_json(reply)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["PROXY_PROTOCOL"]) == (
        FRONT, str(local[1]), "LOCAL")


def test_header_and_request_one_byte_at_a_time(server) -> None:
    data = v2_tcp4("198.51.100.9", "192.0.2.1", 1000, 80) + request("/bytewise")
    with connect(server.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            sock.send(data[i:i + 1])
            time.sleep(0.002)
        env = answer_json(read_all(sock))
    assert env["REMOTE_ADDR"] == "198.51.100.9"


def test_every_request_of_a_keep_alive_connection_has_the_header_address(server) -> None:
    if "sync" in server.proc.args:
        pytest.skip("the sync worker closes after each response, as Gunicorn's does")
    with connect(server.port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.8 192.0.2.1 1 2\r\n" + request("/ka1", close=False))
        first = b""
        while b'"wsgi.url_scheme"' not in first:
            first += sock.recv(65536)
        sock.sendall(request("/ka2"))
        second = read_all(sock)
    assert answer_json(first)["REMOTE_ADDR"] == answer_json(second)["REMOTE_ADDR"] == "203.0.113.8"


# -- refused connections from the allowed front end --------------------------------------

@pytest.mark.parametrize("name, data, fragment", [
    ("no-header", b"", "does not start with a PROXY v1 line or v2 signature"),
    ("bad-v1-port", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n", "v1 port 99999 is out of range"),
    ("bad-v1-lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\n", "without CRLF"),
    ("bad-v2-command", V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12, "v2 command 2"),
    ("bad-v2-tlv", v2_tcp4("1.2.3.4", "5.6.7.8", 1, 2, b"\x01\x00\x09ab"), "overruns"),
])
def test_malformed_or_missing_header_closes_without_reaching_the_app(server, name, data,
                                                                     fragment) -> None:
    path = f"/refused-{name}"
    reply, local = exchange(server.port, data + request(path))
    assert reply == b""  # no answer: the connection is dropped (spec, section 2.1)
    refusal_logged(server, local, fragment)
    assert not server.app_saw(path)


def test_truncated_header_closes_without_reaching_the_app(server) -> None:
    with connect(server.port) as sock:
        local = sock.getsockname()
        sock.sendall(v2_tcp4("1.2.3.4", "5.6.7.8", 1, 2)[:20])
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b""
    refusal_logged(server, local, "closed after 20 bytes of a PROXY header")


def test_slow_header_is_dropped_after_the_timeout(server) -> None:
    with connect(server.port) as sock:
        local = sock.getsockname()
        sock.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 ")
        started = time.monotonic()
        reply = read_all(sock)
        waited = time.monotonic() - started
        with contextlib.suppress(OSError):  # the rest, too late: the app never sees it
            sock.sendall(b"1 2\r\n" + request("/slow"))
    assert reply == b""
    # The timeout, with margin for a busy 2-core machine on the upper side.
    assert PROXY_HEADER_TIMEOUT - 0.5 <= waited <= PROXY_HEADER_TIMEOUT + 5, waited
    refusal_logged(server, local, f"no complete PROXY header within {PROXY_HEADER_TIMEOUT:g}s")
    assert not server.app_saw("/slow")


def test_slow_header_does_not_stop_others_being_served(server) -> None:
    if "sync" in server.proc.args:
        pytest.skip("the sync worker serves one connection at a time, as Gunicorn's does")
    with connect(server.port) as slow:
        slow.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        reply, _ = exchange(server.port, b"PROXY TCP4 203.0.113.9 192.0.2.1 1 2\r\n"
                            + request("/while-slow"))
        assert answer_json(reply)["REMOTE_ADDR"] == "203.0.113.9"
        assert time.monotonic() - started < PROXY_HEADER_TIMEOUT - 1


# -- other peers ------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.66 192.0.2.1 1 2\r\n",
    v2_tcp4("203.0.113.66", "192.0.2.1", 1, 2),
], ids=["v1", "v2"])
def test_header_from_a_disallowed_peer_is_answered_403(server, header) -> None:
    path = "/forbidden-v1" if header.startswith(b"PROXY") else "/forbidden-v2"
    reply, local = exchange(server.port, header + request(path), source=OTHER)
    assert reply.startswith(b"HTTP/1.1 403 Forbidden\r\n"), reply
    assert reply.endswith(b"Request forbidden\n")
    refusal_logged(server, local, "from a peer not in --proxy-allow-from; answered 403")
    assert not server.app_saw(path)


def test_disallowed_peer_without_header_is_a_plain_client(server) -> None:
    reply, local = exchange(server.port, request("/plain"), source=OTHER)
    env = answer_json(reply)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["PROXY_PROTOCOL"]) == (
        OTHER, str(local[1]), None)


def test_connect_only_probe_is_not_a_logged_refusal(server) -> None:
    with connect(server.port) as sock:
        local = sock.getsockname()
    time.sleep(0.3)
    exchange(server.port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + request("/after-probe"))
    assert f"refused for {local[0]}:{local[1]}:" not in server.error_log()


# -- modes ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, accepted, refused", [
    ("v1", b"PROXY TCP4 203.0.113.1 192.0.2.1 1 2\r\n", v2_tcp4("203.0.113.1", "192.0.2.1", 1, 2)),
    ("v2", v2_tcp4("203.0.113.1", "192.0.2.1", 1, 2), b"PROXY TCP4 203.0.113.1 192.0.2.1 1 2\r\n"),
])
def test_a_version_mode_accepts_only_its_version(tmp_path, mode, accepted, refused) -> None:
    srv = start_server(tmp_path, "event", "--proxy-protocol", mode)  # allow-from: 127.0.0.1
    try:
        reply, _ = exchange(srv.port, accepted + request("/mode-ok"), source=OTHER)
        assert answer_json(reply)["REMOTE_ADDR"] == "203.0.113.1"
        reply, local = exchange(srv.port, refused + request("/mode-refused"), source=OTHER)
        assert reply == b""
        refusal_logged(srv, local, f"does not start with a PROXY {mode}")
        assert not srv.app_saw("/mode-refused")
    finally:
        srv.proc.stop()


def test_off_by_default_a_header_is_a_bad_request(tmp_path) -> None:
    srv = start_server(tmp_path, "sync")
    try:
        reply, _ = exchange(srv.port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + request("/off"),
                            source=OTHER)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
    finally:
        srv.proc.stop()


# -- Gunicorn, for the answers it shares with us ----------------------------------------

@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--no-control-socket", "-b", f"127.0.0.1:{port}",
             "--proxy-protocol", "--proxy-allow-from", FRONT, "proxyapp:application"],
            cwd=APPS, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 20, what="gunicorn")
        assert proc.poll() is None, log.read_text()
        yield port
    finally:
        kill_all([*descendants(proc.pid), proc.pid])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def test_gunicorn_answers_the_same_to_a_header_and_a_forbidden_peer(server, gunicorn_port
                                                                    ) -> None:
    header = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n" + request("/parity")
    for port in (gunicorn_port, server.port):
        env = answer_json(exchange(port, header)[0])
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["PROXY_PROTOCOL"]) == (
            "203.0.113.7", "51234", "TCP4")
        forbidden = exchange(port, header, source=OTHER)[0]
        assert forbidden.startswith(b"HTTP/1.1 403 Forbidden\r\n"), (port, forbidden)


@pytest.mark.parametrize("worker", WORKERS)
def test_unix_socket_peers_must_send_a_header(worker) -> None:
    # Gunicorn: a peer without an IP address is always an allowed front end.
    short = Path(tempfile.mkdtemp(prefix="ppu-"))
    path = str(short / "s.sock")
    threads = ("--threads", "2") if worker == "thread" else ()
    proc = Polycorn(["-k", worker, *threads, "-b", f"unix:{path}", "proxyapp:application",
                     "--proxy-protocol"], cwd=APPS, log_path=short / "server.log")
    try:
        wait_until(lambda: os.path.exists(path) and proc.workers(), 15, what="the unix socket")

        def over_unix(data: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                sock.sendall(data)
                return read_all(sock)

        env = answer_json(over_unix(b"PROXY TCP6 2001:db8::5 2001:db8::1 7 8\r\n"
                                    + request("/unix")))
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::5", "7")
        assert over_unix(request("/unix-no-header")) == b""
        wait_until(lambda: "PROXY protocol refused for unix socket peer" in proc.log(), 10,
                   what="the refusal line")
    finally:
        proc.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_the_one_difference_from_gunicorn_no_header_from_an_allowed_source(server,
                                                                           gunicorn_port
                                                                           ) -> None:
    # Gunicorn's auto guesses: without a header it serves the request as the front end's
    # own. The spec forbids guessing, so Polycorn drops the connection (README).
    plain = request("/difference")
    assert answer_json(exchange(gunicorn_port, plain)[0])["REMOTE_ADDR"] == FRONT
    assert exchange(server.port, plain)[0] == b""
