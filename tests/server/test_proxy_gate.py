"""The PROXY gate's own promises, on real loopback sockets: it consumes exactly the header,
so a TLS handshake that follows on the same connection works; the event worker's gate
hands the bytes after the header over untouched; the environ entries it sets."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading

import pytest
from polycorn.server.http.proxy_protocol import ProxyHeader
from polycorn.server.workers.proxy_gate import Proxied, ProxyGate
from polycorn.server.workers.proxy_gate_event import ProxyGateProtocol, gated_factory

V1 = b"PROXY TCP4 203.0.113.5 192.0.2.1 40000 443\r\n"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "c.pem", tmp / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_header_then_tls_client_hello_on_one_connection(tls_files) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    gate = ProxyGate("auto", ["127.0.0.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    result: dict = {}

    def serve() -> None:
        sock, addr = listener.accept()
        admitted, proxied = gate.admit(sock, addr)
        result["admitted"], result["proxied"] = admitted, proxied
        with server_ctx.wrap_socket(sock, server_side=True) as tls:  # reads the ClientHello
            result["got"] = tls.recv(100)
            tls.sendall(b"pong")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        raw.sendall(V1)  # then the ClientHello, on the same connection
        with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"ping")
            assert tls.recv(100) == b"pong"
    finally:
        thread.join(10)
        listener.close()
    assert result["admitted"] is True and result["got"] == b"ping"
    assert result["proxied"].header.source == ("203.0.113.5", 40000)


def test_admit_leaves_everything_after_the_header_in_the_socket() -> None:
    gate = ProxyGate("v1", ["127.0.0.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname(), timeout=10) as client:
        client.sendall(V1 + b"GET / HTTP/1.1\r\n\r\n")
        sock, addr = listener.accept()
        with sock:
            admitted, proxied = gate.admit(sock, addr)
            sock.settimeout(5)
            assert admitted and proxied is not None
            assert sock.recv(100) == b"GET / HTTP/1.1\r\n\r\n"


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.client_entries = ({"REMOTE_ADDR": "peer", "REMOTE_PORT": "1"}, True)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"END"):
            environ, trusted = self.client_entries
            self.transport.write(json.dumps([environ, trusted, self.data.decode("latin-1")]
                                            ).encode())
            self.transport.close()


def test_event_gate_hands_over_the_rest_untouched_and_sets_the_client() -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        gate = ProxyGate("auto", ["127.0.0.1"])
        server = await loop.create_server(gated_factory(gate, Recorder), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for piece in (V1[:5], V1[5:] + b"\x16\x03\x01", b"rest END"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        return reply

    reply = asyncio.run(main())
    environ, trusted, data = json.loads(reply)
    assert data == "\x16\x03\x01rest END"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"], trusted) == ("203.0.113.5", "40000",
                                                                          True)


def test_gated_factory_is_the_factory_itself_when_off() -> None:
    assert gated_factory(None, Recorder) is Recorder
    assert isinstance(gated_factory(ProxyGate("v2", ["*"]), Recorder)(), ProxyGateProtocol)


def test_environ_entries() -> None:
    base = ({"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5"}, True)
    local = Proxied(ProxyHeader(2, "LOCAL", "UNKNOWN", None, None, 16))
    assert local.environ_entries((dict(base[0]), True)) == (
        {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5", "PROXY_PROTOCOL": "LOCAL"}, True)
    unix = Proxied(ProxyHeader(2, "PROXY", "UNIX", ("/a", None), ("/b", None), 232))
    assert unix.environ_entries((dict(base[0]), False)) == (
        {"REMOTE_ADDR": "/a", "PROXY_PROTOCOL": "UNIX", "PROXY_ADDR": "/b"}, False)


@pytest.mark.parametrize("peer, required", [
    (("127.0.0.1", 1), False), (("10.1.2.3", 1), True), (("10.9.0.1", 1), False),
    (("::ffff:10.1.2.3", 1, 0, 0), True), (("2001:db8::1", 1, 0, 0), True), ("", True),
    (b"", True),
])
def test_who_must_send_a_header(peer, required) -> None:
    gate = ProxyGate("auto", ["10.1.0.0/16", "2001:db8::/32"])
    assert gate.requires_header(peer) is required
    assert ProxyGate("auto", ["*"]).requires_header(peer) is True
