"""A small TCP proxy that delays, or holds, what crosses it: the chaos runner's latency fault.

This kernel has no netem qdisc, so latency is added in user space, on the path. Each
direction (up: client to upstream; down: upstream to client) has its own delay, plus
a jitter drawn per chunk; a chunk read at t is written at t + delay + U(0, jitter), but
never before the chunk read before it (TCP keeps order). A cut holds every byte both
ways until it heals, as TCP retransmitting across a partition would deliver them late;
a connection opened during a cut is accepted (the local kernel completes the
handshake) and reaches upstream only after the heal. A client's connect costs no delay
(it completes at the proxy); its first request pays up + down, as every later one does.

The upstream is fixed (--upstream HOST:PORT), or, with --transparent, the original
destination of a connection that an nftables `redirect` sent here (SO_ORIGINAL_DST);
the proxy's own upstream sockets then carry SO_MARK so that rule lets them pass.
Settings change at run time over a Unix socket, one JSON line per request:
{"op": "set", "up_ms": 200, "down_ms": 200, "jitter_ms": 0}, {"op": "cut"},
{"op": "heal"}, {"op": "status"}; `control()` is the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

CHUNK = 65536
QUEUED_CHUNKS = 64  # per direction and connection: then the reader waits (TCP backpressure)
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
DEFAULT_MARK = 0x70636E  # "pcn": the redirect rule spares packets with this mark


class ProxyError(RuntimeError):
    """The proxy refused a control request, or did not answer it."""


@dataclass(frozen=True)
class Settings:
    up_ms: float = 0.0  # client -> upstream
    down_ms: float = 0.0  # upstream -> client
    jitter_ms: float = 0.0  # each chunk: + U(0, jitter), either way
    cut: bool = False  # hold everything, both ways

    def delay_s(self, direction: str) -> float:
        base = self.up_ms if direction == "up" else self.down_ms
        return (base + (random.uniform(0, self.jitter_ms) if self.jitter_ms else 0)) / 1000


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the client meant to connect before nftables redirected it here."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(address), port


class DelayProxy:
    """The proxy in one asyncio loop: `await start()`, change `settings`, `await stop()`."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int] | None, *,
                 mark: int | None = None, settings: Settings = Settings()) -> None:
        self.listen = listen
        self.upstream = upstream  # None: transparent (SO_ORIGINAL_DST)
        self.mark = mark
        self.settings = settings
        self.port = 0
        self.connections = 0  # open client connections
        self.served = 0  # client connections accepted since start
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()
        self._open.set()

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._serve, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def change(self, **fields: Any) -> Settings:
        self.settings = replace(self.settings, **fields)
        if self.settings.cut:
            self._open.clear()
        else:
            self._open.set()
        return self.settings

    async def stop(self) -> None:
        """Close the listener and every connection; no task outlives this."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        self.served += 1
        up_writer = None
        try:
            target = self.upstream or original_destination(writer.get_extra_info("socket"))
            await self._open.wait()  # no upstream connection across a cut
            up_reader, up_writer = await self._connect(target)
            self._writers.add(up_writer)
            forwards = [asyncio.ensure_future(self._forward(reader, up_writer, "up")),
                        asyncio.ensure_future(self._forward(up_reader, writer, "down"))]
            try:
                await asyncio.gather(*forwards)
            finally:  # one side failed: the other direction ends with it
                for forward in forwards:
                    forward.cancel()
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side went away: close both below
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self.connections -= 1
            self._tasks.discard(task)

    async def _connect(self, target: tuple[str, int]
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.mark is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, target)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       direction: str) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)

        async def read() -> None:
            last = 0.0
            while True:
                data = await reader.read(CHUNK)
                last = max(last, loop.time() + self.settings.delay_s(direction))
                await queue.put((last, data))
                if not data:
                    return

        async def write() -> None:
            while True:
                due, data = await queue.get()
                await self._open.wait()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self._open.wait()  # a cut that began while this chunk waited
                if not data:  # EOF from this side: pass the half-close on
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        # Either half may fail first: a reset read ends the direction at once (the writer
        # would otherwise wait for a chunk that never comes, and hold the other side
        # open: chaos --random 4 kept sync workers busy 30 s on such upstreams).
        halves = {asyncio.ensure_future(read()), asyncio.ensure_future(write())}
        try:
            done, _ = await asyncio.wait(halves, return_when=asyncio.FIRST_EXCEPTION)
            for half in done:
                half.result()  # re-raise the failure, if any
        finally:
            for half in halves:
                half.cancel()


async def _control_server(proxy: DelayProxy, path: Path, name: str) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(_apply(proxy, line, name)).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    path.unlink(missing_ok=True)
    return await asyncio.start_unix_server(handle, str(path))


def _apply(proxy: DelayProxy, line: bytes, name: str) -> dict[str, Any]:
    try:
        request = json.loads(line)
        op = request.pop("op")
        if op == "set":
            unknown = set(request) - {"up_ms", "down_ms", "jitter_ms"}
            if unknown or any(not isinstance(v, int | float) or v < 0 for v in request.values()):
                raise ValueError(f"set takes up_ms, down_ms, jitter_ms >= 0, not {request}")
            proxy.change(**{k: float(v) for k, v in request.items()})
        elif op in ("cut", "heal"):
            proxy.change(cut=op == "cut")
        elif op != "status":
            raise ValueError(f"unknown op {op!r}")
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}
    if op != "status":
        print(f"latency proxy {name} pid {os.getpid()}: {op} -> {asdict(proxy.settings)}",
              flush=True)
    return {"ok": True, "settings": asdict(proxy.settings), "connections": proxy.connections,
            "served": proxy.served, "port": proxy.port}


def control(path: Path | str, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """One request to a running proxy's control socket; its reply (ok, settings, ...)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError as exc:
            raise ProxyError(f"latency proxy at {path}: {exc}") from None
    try:
        answer = json.loads(reply)
    except ValueError:
        raise ProxyError(f"latency proxy at {path}: no answer to {op}") from None
    if not answer.get("ok"):
        raise ProxyError(f"latency proxy at {path}: {answer.get('error')}")
    return answer


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: want HOST:PORT")
    return host, int(port)


async def _main(args: argparse.Namespace) -> None:
    proxy = await DelayProxy(args.listen, args.upstream, mark=args.mark).start()
    control_server = await _control_server(proxy, args.control, args.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    where = "each connection's original destination" if args.upstream is None \
        else f"{args.upstream[0]}:{args.upstream[1]}"
    print(f"latency proxy {args.name} pid {os.getpid()}: {args.listen[0]}:{proxy.port} -> "
          f"{where}, control {args.control}", flush=True)
    await stop.wait()
    control_server.close()
    await proxy.stop()
    args.control.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.latency_proxy",
                                description="A TCP proxy whose delay and cut change at run time.")
    p.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--upstream", type=_address, metavar="HOST:PORT")
    where.add_argument("--transparent", action="store_true",
                       help="forward to the original destination (nftables redirect)")
    p.add_argument("--control", type=Path, required=True, metavar="PATH",
                   help="Unix socket for run-time changes")
    p.add_argument("--mark", type=lambda s: int(s, 0), default=None,
                   help=f"SO_MARK on upstream sockets (default {DEFAULT_MARK:#x} when "
                        f"--transparent)")
    p.add_argument("--name", default="proxy", help="for its log lines")
    args = p.parse_args(argv)
    if args.transparent and args.mark is None:
        args.mark = DEFAULT_MARK
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
