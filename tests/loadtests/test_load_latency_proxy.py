"""The latency proxy over real loopback sockets: it delays by at least what is set, each
way; passes bytes intact; holds them across a cut; changes at run time; cleans up."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.latency_proxy import DelayProxy, ProxyError, Settings, control

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 1.0  # seconds a busy 2-core machine may add on top of a delay


async def echo_server() -> asyncio.Server:
    """Upstream: echoes everything; on the client's EOF answers the SHA-256 of it all."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while data := await reader.read(65536):
            digest.update(data)
            writer.write(data)
            await writer.drain()
        writer.write(b"sha256:" + digest.hexdigest().encode())
        await writer.drain()
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def proxied(settings: Settings | None = None) -> tuple[asyncio.Server, DelayProxy]:
    upstream = await echo_server()
    port = upstream.sockets[0].getsockname()[1]
    proxy = await DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port),
                             settings=settings or Settings()).start()
    return upstream, proxy


async def round_trip(port: int, payload: bytes = b"ping") -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = time.monotonic()
        writer.write(payload)
        await reader.readexactly(len(payload))
        return time.monotonic() - start
    finally:
        writer.close()


def test_each_direction_is_delayed_by_at_least_its_setting():
    async def scenario() -> tuple[float, float]:
        upstream, proxy = await proxied(Settings(up_ms=150, down_ms=100))
        try:
            slow = await round_trip(proxy.port)
            proxy.change(up_ms=0, down_ms=0)  # off at run time
            fast = await round_trip(proxy.port)
            return slow, fast
        finally:
            await proxy.stop()
            upstream.close()
    slow, fast = asyncio.run(scenario())
    assert 0.25 <= slow < 0.25 + MARGIN
    assert fast < 0.2


def test_the_up_and_down_delays_are_separate():
    async def scenario() -> float:
        upstream, proxy = await proxied(Settings(up_ms=0, down_ms=300))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            # Only what comes back waits: the upstream has the bytes at once (it answers
            # the digest on EOF, which must then still take the down delay).
            start = time.monotonic()
            writer.write(b"x")
            await reader.readexactly(1)
            return time.monotonic() - start
        finally:
            writer.close()
            await proxy.stop()
            upstream.close()
    took = asyncio.run(scenario())
    assert 0.3 <= took < 0.3 + MARGIN


def test_bytes_pass_intact_both_ways_and_in_order_under_jitter():
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def scenario() -> tuple[bytes, bytes]:
        upstream, proxy = await proxied(Settings(up_ms=5, down_ms=5, jitter_ms=20))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            async def send() -> None:
                for i in range(0, len(payload), 4096):  # many chunks, each jittered
                    writer.write(payload[i:i + 4096])
                    await writer.drain()
                writer.write_eof()  # the half-close crosses the proxy too
            sending = asyncio.ensure_future(send())
            echoed = await reader.readexactly(len(payload))
            trailer = await reader.read()
            await sending
            return echoed, trailer
        finally:
            writer.close()
            await proxy.stop()
            upstream.close()
    echoed, trailer = asyncio.run(scenario())
    assert echoed == payload
    assert trailer == b"sha256:" + hashlib.sha256(payload).hexdigest().encode()


def test_a_cut_holds_every_byte_until_it_heals_and_new_connections_wait_too():
    async def scenario() -> None:
        upstream, proxy = await proxied()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await round_trip(proxy.port) < 0.5
        proxy.change(cut=True)
        writer.write(b"held")
        late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        late_writer.write(b"late")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.6)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(late_reader.readexactly(4), 0.1)
        proxy.change(cut=False)
        assert await asyncio.wait_for(reader.readexactly(4), MARGIN) == b"held"
        assert await asyncio.wait_for(late_reader.readexactly(4), MARGIN) == b"late"
        for w in (writer, late_writer):
            w.close()
        await proxy.stop()
        upstream.close()
    asyncio.run(scenario())


def test_stop_closes_every_connection_and_leaves_no_task():
    async def scenario() -> None:
        upstream, proxy = await proxied(Settings(up_ms=50))
        conns = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert proxy.connections == 3
        await proxy.stop()
        for reader, writer in conns:
            assert await asyncio.wait_for(reader.read(), MARGIN) == b""  # EOF: closed
            writer.close()
        assert proxy.connections == 0 and not proxy._tasks
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        upstream.close()
    asyncio.run(scenario())


def test_a_client_that_resets_has_its_upstream_connection_closed():
    # chaos --random 4: HAProxy aborts (RST) a health check that timed out. The proxy's
    # reader of that side failed, its writer waited for a chunk that never came, and the
    # upstream connection stayed open: each held a sync worker of the node for its 30 s
    # timeout, so HAProxy kept the node down 28 s after the fault healed.
    async def scenario() -> tuple[bytes, int]:
        accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accepted.put(reader)  # a worker waiting for the request head
            await asyncio.sleep(10)
            writer.close()
        upstream = await asyncio.start_server(handle, "127.0.0.1", 0)
        proxy = await DelayProxy(("127.0.0.1", 0),
                                 ("127.0.0.1", upstream.sockets[0].getsockname()[1])).start()
        try:
            client = socket.create_connection(("127.0.0.1", proxy.port))
            server_side = await asyncio.wait_for(accepted.get(), MARGIN)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            client.close()  # linger 0: the close sends RST, as HAProxy's aborted check does
            seen = await asyncio.wait_for(server_side.read(), MARGIN)
            await asyncio.sleep(0.1)
            return seen, proxy.connections
        finally:
            await proxy.stop()
            upstream.close()
    seen, connections = asyncio.run(scenario())
    assert seen == b""  # the upstream got its EOF: the worker is free
    assert connections == 0


def test_the_process_is_driven_over_its_control_socket_and_exits_clean(tmp_path):
    upstream = socket.create_server(("127.0.0.1", 0))
    up_port = upstream.getsockname()[1]
    sock_path = tmp_path / "ctl.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtests.latency_proxy", "--listen", "127.0.0.1:0",
         "--upstream", f"127.0.0.1:{up_port}", "--control", str(sock_path), "--name", "t"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert f"latency proxy t pid {proc.pid}" in first and "control" in first, first
        status = control(sock_path, "status")
        assert status["settings"] == {"up_ms": 0.0, "down_ms": 0.0, "jitter_ms": 0.0,
                                      "cut": False}
        assert control(sock_path, "set", up_ms=80, down_ms=40)["settings"]["down_ms"] == 40
        assert control(sock_path, "cut")["settings"]["cut"] is True
        assert control(sock_path, "heal")["settings"]["cut"] is False
        with pytest.raises(ProxyError, match="up_ms"):
            control(sock_path, "set", up_ms=-1)
        with pytest.raises(ProxyError, match="unknown op"):
            control(sock_path, "explode")
        client = socket.create_connection(("127.0.0.1", status["port"]), timeout=5)
        conn, _ = upstream.accept()
        conn.settimeout(5)
        start = time.monotonic()
        client.sendall(b"abc")
        assert conn.recv(3) == b"abc"
        conn.sendall(b"xyz")
        assert client.recv(3) == b"xyz"
        assert 0.12 <= time.monotonic() - start < 0.12 + MARGIN
        assert control(sock_path, "status")["connections"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert conn.recv(10) == b""  # the proxy closed its side when it stopped
        assert not sock_path.exists()
        assert "set ->" in proc.stdout.read()  # every change logged, with its pid
        client.close()
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        upstream.close()
