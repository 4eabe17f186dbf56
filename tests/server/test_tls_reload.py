"""TLS through Polycorn's reloads: HUP and USR2 under HTTPS load fail no request, a HUP
serves a certificate rotated in place (new workers load the files), and a bad certificate
on HUP fails the new generation's boot, so the health-gated reload keeps the old workers
(and their certificate) with one log line naming the file and the reason.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
from support.load import Load
from support.procs import ROOT, alive, live_masters, wait_until
from support.tls import serial_of

APPS = ROOT / "tests" / "apps"
WORKERS = {"sync": (), "thread": ("--threads", "4"), "event": ()}


@pytest.fixture
def tls_site(tmp_path, pki, polycorn, port):
    """cert.pem/key.pem in a folder of their own (pair 1, serial 1001), and a starter."""
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = pki.use(1, certs)
    pid_path = tmp_path / "polycorn.pid"

    def start(worker: str, *extra: str):
        server = polycorn("-k", worker, *WORKERS[worker], "-w", "2", "-b", f"127.0.0.1:{port}",
                        "-p", str(pid_path), "--certfile", str(cert), "--keyfile", str(key),
                        *extra, "proxyapp:application", wait_port=port, cwd=APPS)
        # The port opens before the workers have loaded the files.
        wait_until(lambda: "workers serving" in server.log(), 20, what="the workers")
        return server
    return certs, pid_path, start


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_hup_rotates_the_certificate_without_a_restart(tls_site, pki, port, worker):
    certs, _, start = tls_site
    server = start(worker)
    client = pki.client_context()
    assert serial_of(port, client) == 1001
    pki.use(2, certs)  # the deploy writes the new pair over the old files
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload complete" in server.log(), 20, what="the reload")
    # Old workers may still finish what they hold; every new connection gets the new one.
    wait_until(lambda: serial_of(port, client) == 1002, 10, what="the new certificate")
    assert {serial_of(port, client) for _ in range(6)} == {1002}
    assert server.proc.poll() is None


@pytest.mark.parametrize("worker", ["sync", "event"])
def test_a_bad_certificate_on_hup_keeps_the_old_workers(tls_site, pki, port, worker):
    certs, _, start = tls_site
    server = start(worker)
    client = pki.client_context()
    before = set(server.workers())
    (certs / "cert.pem").write_bytes(pki.not_pem.read_bytes())  # a botched rotation
    with Load(port, "/who", threads=2, ssl_context=client) as load:
        load.wait_requests(20)
        server.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in server.log(), 20, what="the reload to fail")
        load.wait_requests(20)
    assert load.result.failed == 0, load.result.summary()
    assert serial_of(port, client) == 1001  # still the old workers' certificate
    assert set(server.workers()) == before
    failed = [line for line in server.log().splitlines() if "reload failed" in line]
    assert len(failed) == 1, failed
    assert f"certfile {certs / 'cert.pem'}: not a PEM certificate" in failed[0], failed[0]
    assert "the old workers keep serving" in failed[0]


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_hup_then_usr2_under_tls_load_fail_no_request(tls_site, pki, port, worker):
    certs, pid_path, start = tls_site
    server = start(worker)
    with Load(port, "/who", threads=4, ssl_context=pki.client_context()) as load:
        load.wait_requests(50)
        server.signal(signal.SIGHUP)
        wait_until(lambda: "reload complete" in server.log(), 20, what="the reload")
        load.wait_requests(50)
        pki.use(2, certs)  # the upgrade's generation loads the rotated files too
        upgrade = subprocess.run([sys.executable, "-m", "polycorn.server.main", "--upgrade",
                                  str(pid_path)], cwd=APPS, capture_output=True, text=True,
                                 timeout=120)
        assert upgrade.returncode == 0, upgrade.stderr
        wait_until(lambda: not alive(server.pid), 35, what="the old master to exit")
        load.wait_requests(50)
    result = load.result
    assert result.failed == 0, result.summary()
    assert result.ok >= 150
    assert serial_of(port, pki.client_context()) == 1002


class SlowHandshake:
    """A client whose ClientHello arrives in two halves, on our command (ssl.MemoryBIO)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self.hello = self.outgoing.read()
        self.sock.sendall(self.hello[:len(self.hello) // 2])

    def finish(self, request: bytes) -> bytes:
        self.sock.sendall(self.hello[len(self.hello) // 2:])
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    self.sock.sendall(self.outgoing.read())
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed during the handshake") from None
                self.incoming.write(chunk)
        self.tls.write(request)
        self.sock.sendall(self.outgoing.read())
        out = b""
        while True:
            try:
                data = self.tls.read(65536)
                if not data:
                    break
                out += data
                continue
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.incoming.write(chunk)
        self.sock.close()
        return out


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_handshake_in_flight_at_hup_is_finished_by_the_old_worker(tls_site, pki, port,
                                                                     worker):
    # Half a ClientHello is in when the HUP comes; the rest arrives after the new workers
    # took over. The old worker must finish that handshake and answer, not exit under it.
    _, _, start = tls_site
    server = start(worker, "--ssl-handshake-timeout", "8")
    client = SlowHandshake(port, pki.client_context())
    time.sleep(0.3)  # accepted by an old worker
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload complete" in server.log(), 20, what="the reload")
    time.sleep(0.5)  # the old workers are draining now
    reply = client.finish(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200"), reply[:100]


def test_two_masters_serve_tls_and_either_may_die(polycorn, pki, port, tmp_path):
    # --masters 2 shares the listeners by hand-off; each master's workers load the files.
    pid_path = tmp_path / "p.pid"
    polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "--masters", "2", "--handoff",
             str(tmp_path / "h.sock"), "-p", str(pid_path), "--certfile", str(pki.cert),
             "--keyfile", str(pki.key), "proxyapp:application", wait_port=port, cwd=APPS)
    wait_until(lambda: len(live_masters(pid_path)) == 2, 15, what="two masters")
    with Load(port, "/who", threads=4, ssl_context=pki.client_context()) as load:
        load.wait_requests(50)
        victim = live_masters(pid_path)[1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: live_masters(pid_path).get(1, victim) != victim, 15,
                   what="the killed master restarted")
        load.wait_requests(50)
    assert load.result.failed == 0, load.result.summary()
    assert serial_of(port, pki.client_context()) == 1001
