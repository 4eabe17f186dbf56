"""TLS served by every worker class, with certificates the session made (tests/conftest.py `pki`).

Clients: the system's curl (--cacert) and Python's ssl. What is proven: a request and
wsgi.url_scheme https on sync, thread and event (uvloop and asyncio); mutual TLS; the
PROXY header before the ClientHello, in one segment, on every worker; a client stalling
its handshake holds the sync worker no longer than --ssl-handshake-timeout; and
check-config's one line for a bad file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings

import pytest
from support.procs import ROOT, wait_until
from support.tls import tls_exchange

APPS = ROOT / "tests" / "apps"
# (worker, extra arguments, environment): the event worker on both of its loops.
WORKERS = {
    "sync": ((), {}),
    "thread": (("--threads", "4"), {}),
    "event": ((), {}),
    "event-asyncio": ((), {"POLYCORN_LOOP": "asyncio"}),
}
GET = b"GET /who HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def start_tls(polycorn, port, pki, worker: str, *extra: str, app: str = "proxyapp:application",
              certs: tuple = ()):
    args, env = WORKERS[worker]
    cert, key = certs or (pki.cert, pki.key)
    return polycorn("-k", worker.split("-")[0], *args, "-b", f"127.0.0.1:{port}",
                    "--certfile", str(cert), "--keyfile", str(key), *extra, app,
                    wait_port=port, cwd=APPS, env=env)


def body_json(reply: bytes) -> dict:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:200]
    return json.loads(body)


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_request_over_tls_with_curl_and_python(polycorn, port, pki, worker):
    server = start_tls(polycorn, port, pki, worker)
    # The master binds before it logs, so the port can answer before the line is out
    # (seen once under load with event-asyncio).
    wait_until(lambda: f"Listening at: https://127.0.0.1:{port}" in server.log(), 10,
               what="the 'Listening at: https://' line")
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca), "--max-time", "10",
                              f"https://localhost:{port}/who", f"https://127.0.0.1:{port}/two"],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        first = json.loads(out.stdout[:out.stdout.index("}") + 1])
        assert first["wsgi.url_scheme"] == "https"
    reply = tls_exchange(port, pki.client_context(), GET)
    assert body_json(reply)["wsgi.url_scheme"] == "https"
    assert body_json(reply)["REMOTE_ADDR"] == "127.0.0.1"
    # curl ends with close_notify: the event worker must not answer it with the loop's
    # "returning true from eof_received() has no effect when using ssl" on every connection.
    assert "has no effect" not in server.log()


@pytest.mark.parametrize("worker", ["thread", "event", "event-asyncio"])
def test_keep_alive_over_tls_serves_several_requests(polycorn, port, pki, worker):
    start_tls(polycorn, port, pki, worker)
    context = pki.client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        for i in range(3):
            sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data[:80]
        # Pipelined: two requests in one TLS record, both answered.
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_mutual_tls_requires_a_client_certificate(polycorn, port, pki, worker):
    start_tls(polycorn, port, pki, worker, "--ca-certs", str(pki.ca), "--cert-reqs", "2")
    reply = tls_exchange(port, pki.client_context(with_client_cert=True), GET)
    assert body_json(reply)["wsgi.url_scheme"] == "https"
    # TLS 1.3 sends the client's certificate after the client's handshake is done, so the
    # refusal may come as an alert on the first read instead of during the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        body_json(tls_exchange(port, pki.client_context(), GET))


@pytest.mark.parametrize("worker", sorted(WORKERS))
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_then_tls_in_one_segment(polycorn, port, pki, worker, version):
    # HAProxy's send-proxy to a TLS backend: the header, then the client's ClientHello,
    # often in one segment; the worker must start TLS from the bytes after the header.
    start_tls(polycorn, port, pki, worker, "--proxy-protocol", version)
    if version == "v1":
        header = b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n"
    else:
        header = (b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.7")
                  + socket.inet_aton("127.0.0.1") + (40000).to_bytes(2, "big")
                  + (443).to_bytes(2, "big"))
    seen = body_json(tls_exchange(port, pki.client_context(), GET, prefix=header))
    assert seen["REMOTE_ADDR"] == "203.0.113.7" and seen["REMOTE_PORT"] == "40000"
    assert seen["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_tls_without_the_required_proxy_header_is_refused(polycorn, port, pki, worker):
    start_tls(polycorn, port, pki, worker, "--proxy-protocol", "v1")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_exchange(port, pki.client_context(), GET)


def test_a_stalled_handshake_holds_the_sync_worker_no_longer_than_its_timeout(polycorn, port,
                                                                                    pki):
    # One sync worker: a client that connects and never finishes its handshake (here: half
    # a ClientHello) is dropped after --ssl-handshake-timeout, and the next client served.
    handshake_timeout = 1.5
    server = start_tls(polycorn, port, pki, "sync", "-w", "1", "--ssl-handshake-timeout",
                       str(handshake_timeout))
    body_json(tls_exchange(port, pki.client_context(), GET))  # the worker is up
    stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = pki.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    record = outgoing.read()
    stalled.sendall(record[:len(record) // 2])
    stall_began = time.monotonic()
    time.sleep(0.2)  # the worker has taken the stalled client first
    closed_after: list[float] = []

    def watch() -> None:
        try:
            stalled.recv(1)
        except OSError:
            pass
        closed_after.append(time.monotonic() - stall_began)
    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.monotonic()
    reply = tls_exchange(port, pki.client_context(), GET, timeout=10)
    waited = time.monotonic() - began
    watcher.join(10)
    stalled.close()
    assert body_json(reply)["wsgi.url_scheme"] == "https"
    # The second client waited for the stalled handshake's deadline, not for --timeout (30 s).
    assert waited < handshake_timeout + 2.0, waited
    assert closed_after and handshake_timeout - 0.1 <= closed_after[0] < handshake_timeout + 2.0
    assert server.proc.poll() is None


def check_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polycorn.server.main", "--check-config",
                           *args, "proxyapp:application"], cwd=APPS, capture_output=True,
                          text=True, timeout=60)


def test_check_config_passes_with_good_files(pki):
    result = check_config("--certfile", str(pki.cert), "--keyfile", str(pki.key))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", ["missing", "not pem", "mismatched key", "bad ca"])
def test_check_config_names_a_bad_tls_file(pki, tmp_path, case):
    cert, key, extra = str(pki.cert), str(pki.key), []
    if case == "missing":
        cert = str(tmp_path / "nope.pem")
        expected = f"certfile {cert}: No such file"
    elif case == "not pem":
        cert = str(pki.not_pem)
        expected = f"certfile {cert}: not a PEM certificate"
    elif case == "mismatched key":
        key = str(pki.key2)
        expected = f"keyfile {key} does not match certfile {cert}"
    else:
        extra = ["--ca-certs", str(pki.not_pem)]
        expected = f"ca_certs {pki.not_pem}:"
    result = check_config("--certfile", cert, "--keyfile", key, *extra)
    assert result.returncode == 1, result.stderr
    assert f"polycorn: error: TLS: {expected}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_ssl_context_hook_builds_on_the_default_factory(polycorn, port, pki, tmp_path):
    conf = tmp_path / "tls.conf.py"
    conf.write_text("import ssl\n\n"
                    "def ssl_context(config, default_ssl_context_factory):\n"
                    "    context = default_ssl_context_factory()\n"
                    "    context.minimum_version = ssl.TLSVersion.TLSv1_3\n"
                    "    return context\n")
    start_tls(polycorn, port, pki, "sync", "-c", str(conf))
    tls13 = pki.client_context()
    assert body_json(tls_exchange(port, tls13, GET))["wsgi.url_scheme"] == "https"
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        tls_exchange(port, tls12, GET)


def tls11_client(pki) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        old = pki.client_context()
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    return old


@pytest.mark.parametrize("allow_old", [False, True])
def test_tls_12_is_the_minimum_by_default(polycorn, port, pki, tmp_path, allow_old):
    # The control case (a hook that allows TLS 1.0) shows this client can speak TLS 1.1
    # here, so the default's refusal is the server's minimum, not the client's.
    extra = ()
    if allow_old:
        conf = tmp_path / "old.conf.py"
        conf.write_text("import ssl, warnings\n\n"
                        "def ssl_context(config, default_ssl_context_factory):\n"
                        "    context = default_ssl_context_factory()\n"
                        "    warnings.simplefilter('ignore', DeprecationWarning)\n"
                        "    context.minimum_version = ssl.TLSVersion.TLSv1\n"
                        "    context.set_ciphers('ALL:@SECLEVEL=0')\n"
                        "    return context\n")
        extra = ("-c", str(conf))
    start_tls(polycorn, port, pki, "sync", *extra)
    if allow_old:
        assert body_json(tls_exchange(port, tls11_client(pki), GET))["wsgi.url_scheme"] == "https"
        return
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_exchange(port, tls11_client(pki), GET)


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_file_response_goes_through_tls(polycorn, port, pki, tmp_path, worker):
    # wsgi.file_wrapper takes os.sendfile on a plain socket; over TLS that would send the
    # file unencrypted, so every worker must send it through the TLS layer.
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "blob").write_bytes(data)
    args, env = WORKERS[worker]
    polycorn("-k", worker.split("-")[0], *args, "-b", f"127.0.0.1:{port}", "--certfile",
             str(pki.cert), "--keyfile", str(pki.key), "fileapp:application", wait_port=port,
             cwd=APPS, env={**env, "FILE_APP_PATH": str(tmp_path / "blob")})
    reply = tls_exchange(port, pki.client_context(), GET, timeout=20)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == data


@pytest.mark.parametrize("worker", ["thread", "event", "event-asyncio"])
def test_a_stalled_handshake_is_dropped_after_the_timeout(polycorn, port, pki, worker):
    # The other workers serve others meanwhile anyway; the stalled client is still dropped.
    start_tls(polycorn, port, pki, worker, "--ssl-handshake-timeout", "1.5")
    body_json(tls_exchange(port, pki.client_context(), GET))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        began = time.monotonic()
        body_json(tls_exchange(port, pki.client_context(), GET))  # served meanwhile
        served_after = time.monotonic() - began
        try:
            stalled.recv(1)
        except OSError:
            pass
        dropped_after = time.monotonic() - began
    assert served_after < 1.5
    assert 1.4 <= dropped_after < 1.5 + 2.0, dropped_after
