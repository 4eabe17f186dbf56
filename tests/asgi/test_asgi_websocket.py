"""-k asgi WebSockets (wsproto), driven by the `websockets` client library."""

from __future__ import annotations

import asyncio
import signal

import pytest
from support.http import raw
from support.procs import ROOT, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

APPS = ROOT / "tests" / "apps"


@pytest.fixture
def ws_server(polycorn, port, tmp_path):
    marks = tmp_path / "marks.log"
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "--websocket-max-message-size",
                      "100000", "--graceful-timeout", "5", "fastapi_app:app", wait_port=port,
                      cwd=APPS, env={"ASGI_MARKS": str(marks)})
    return server, port


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_echo_text_and_bytes(ws_server):
    _, port = ws_server

    async def talk():
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01" * 1000)
            data = await ws.recv()
            await ws.ping()
            return text, data
    assert run(talk()) == ("hello", b"\x00\x01" * 1000)


def test_broadcast_reaches_every_client(ws_server):
    _, port = ws_server

    async def talk():
        async with connect(f"ws://127.0.0.1:{port}/room") as a, \
                connect(f"ws://127.0.0.1:{port}/room") as b:
            await a.send("ping-probe")  # both have joined once a hears its own message
            assert await a.recv() == "ping-probe"
            assert await b.recv() == "ping-probe"
            await b.send("from b")
            return await a.recv(), await b.recv()
    assert run(talk()) == ("from b", "from b")


def test_a_message_over_the_limit_closes_with_1009(ws_server):
    _, port = ws_server

    async def talk():
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            await ws.send("x" * 200000)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code
    assert run(talk()) == 1009


def test_an_unknown_path_refuses_the_handshake(ws_server):
    _, port = ws_server

    async def talk():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}/nowhere"):
                pass
        return refused.value.response.status_code
    assert run(talk()) == 403


def test_a_graceful_stop_sends_a_close_frame(ws_server):
    server, port = ws_server

    async def talk():
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("up")
            assert await ws.recv() == "up"
            server.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code
    assert run(talk()) == 1001
    wait_until(lambda: server.proc.poll() is not None, 15, what="the master to exit")


def test_without_wsproto_an_upgrade_is_served_as_plain_http(polycorn, port, tmp_path):
    # A wsproto that cannot be imported stands for the `asgi` extra not installed.
    (tmp_path / "wsproto.py").write_text("raise ImportError('not installed')\n")
    server = polycorn("-k", "asgi", "-b", f"127.0.0.1:{port}", "--pythonpath", str(tmp_path),
                      "wireapp:asgi_application", wait_port=port, cwd=APPS,
                      env={"PYTHONPATH": str(tmp_path)})
    reply = raw(port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok"), reply
    assert "WebSocket upgrade served as plain HTTP: wsproto is not installed" in server.log()
