"""The PROXY protocol at a connection's start, before HTTP (or TLS): who must send a header,
reading it without reading past it, and what a refusal looks like. Every worker class uses it.

The policy (Gunicorn 27's options, the spec's rules). With --proxy-protocol on, a peer in
--proxy-allow-from (or any Unix-socket peer, as in Gunicorn) must open with a header: the
spec forbids guessing whether one was sent, so no header, a malformed, truncated or slow
one (PROXY_HEADER_TIMEOUT) closes the connection without reaching the app. `auto` only
picks the version, from bytes that cannot begin HTTP or TLS (section 2.2's detection);
it never makes the header optional. Any other peer is a plain HTTP client: it is served
with its own address, and answered 403 (as Gunicorn does) if it sends a header anyway.
Each refusal is one log line with the worker's pid and the reason.

The blocking reader peeks and then consumes exactly the header's bytes, so what follows
stays in the kernel for whoever reads next (the HTTP parser or a TLS handshake).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polycorn.server.http.httpdate import format_http_date
from polycorn.server.http.proxy_protocol import (
    V1_MAX_LENGTH,
    ProxyHeader,
    ProxyProtocolError,
    detect,
    parse,
)
from polycorn.server.http.response import build_error_response
from polycorn.server.wsgi.forwarded import ProxyTrust

log = logging.getLogger("polycorn.error")

# How long a connection has to deliver its whole header. The spec: "at least 3 seconds
# to cover a TCP retransmit"; a proxy sends it at once, so more only feeds slow clients.
PROXY_HEADER_TIMEOUT = 5.0
# One peek covers any v1 line and the usual v2 header (the spec's 536-byte segment).
FIRST_PEEK = 536
# A disallowed peer that sent a prefix of a signature ("P", "PRO"): poll again this often.
PREFIX_RECHECK = 0.005
_MSG_PEEK = socket.MSG_PEEK
_PEEK_NOW = socket.MSG_PEEK | socket.MSG_DONTWAIT


@dataclass(frozen=True, slots=True)
class Proxied:
    """The header a connection opened with, applied to its requests' environ."""

    header: ProxyHeader

    def environ_entries(self, entries: tuple[dict[str, Any], bool]) -> tuple[dict[str, Any], bool]:
        """client_entries() of a proxied connection: REMOTE_ADDR/REMOTE_PORT from the header
        (Gunicorn's PROXY_PROTOCOL, PROXY_ADDR and PROXY_PORT too). The trust in forwarded
        headers stays the socket peer's, as in Gunicorn: that peer is the front end."""
        environ, trusted = entries
        header = self.header
        environ["PROXY_PROTOCOL"] = "LOCAL" if header.command == "LOCAL" else header.family
        if header.source is not None and header.destination is not None:
            host, port = header.source
            environ["REMOTE_ADDR"] = host
            if port is None:
                environ.pop("REMOTE_PORT", None)  # a Unix peer has no port
            else:
                environ["REMOTE_PORT"] = str(port)
            dst_host, dst_port = header.destination
            environ["PROXY_ADDR"] = dst_host
            if dst_port is not None:
                environ["PROXY_PORT"] = str(dst_port)
        return environ, trusted


class Refused(Exception):
    """The connection is refused; `status` is 403 for a disallowed header, else None (close)."""

    def __init__(self, reason: str, status: int | None = None, quiet: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.quiet = quiet  # nothing was sent at all: a connect-only probe, not an event


def forbidden_response() -> bytes:
    """Gunicorn's answer to a header from a peer not in --proxy-allow-from."""
    return build_error_response(403, "Request forbidden", date=format_http_date(time.time()),
                                head_only=False)


def describe_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in str(host) else f"{host}:{peer[1]}"
    return repr(peer) if peer else "unix socket peer"


class ProxyGate:
    """One worker's PROXY protocol policy; None from from_config() when it is off."""

    __slots__ = ("mode", "timeout", "_trust")

    def __init__(self, mode: str, allowed: list[str] | str,
                 timeout: float = PROXY_HEADER_TIMEOUT) -> None:
        self.mode = mode
        self.timeout = timeout
        self._trust = ProxyTrust(allowed)

    @classmethod
    def from_config(cls, cfg: Any) -> ProxyGate | None:
        mode = getattr(cfg, "proxy_protocol", "off") or "off"
        if mode == "off":
            return None
        return cls(mode, getattr(cfg, "proxy_allow_ips", ["127.0.0.1", "::1"]))

    def requires_header(self, peer: Any) -> bool:
        """A --proxy-allow-from peer, or a peer without an IP address (a Unix socket)."""
        if isinstance(peer, tuple):
            return self._trust.trusts(str(peer[0]))
        return True

    def refuse(self, peer: Any, exc: Refused) -> None:
        """The one log line of a refusal."""
        if exc.quiet:
            log.debug("worker %s: %s closed before sending a PROXY header", os.getpid(),
                      describe_peer(peer))
            return
        answer = "answered 403" if exc.status else "connection closed"
        log.warning("worker %s: PROXY protocol refused for %s: %s; %s", os.getpid(),
                    describe_peer(peer), exc, answer)

    # -- the blocking reader (sync and thread workers) -----------------------------------

    def admit(self, sock: socket.socket, peer: Any,
              heartbeat: Callable[[], None] | None = None, slice_: float = 1.0
              ) -> tuple[bool, Proxied | None]:
        """Read the connection's start on a blocking socket: (True, Proxied) with the header
        consumed, (True, None) for a plain client of a disallowed peer (nothing consumed),
        or (False, None) when refused, the socket then answered if 403 and closed."""
        deadline = time.monotonic() + self.timeout
        try:
            if self.requires_header(peer):
                return True, Proxied(self._read_header(sock, deadline, heartbeat, slice_))
            self._check_plain(sock, peer, deadline, heartbeat, slice_)
            return True, None
        except Refused as exc:
            self.refuse(peer, exc)
            _close(sock, forbidden_response() if exc.status == 403 else None)
        except OSError as exc:
            self.refuse(peer, Refused(f"socket error before the header: {exc!r}"))
            _close(sock, None)
        return False, None

    def _read_header(self, sock: socket.socket, deadline: float,
                     heartbeat: Callable[[], None] | None, slice_: float) -> ProxyHeader:
        consumed = bytearray()
        while True:
            try:  # the header usually came with the connection: no poll() then
                chunk = sock.recv(_peek_size(consumed), _PEEK_NOW)
            except BlockingIOError:
                _wait_readable(sock, deadline, heartbeat, slice_, consumed)
                chunk = sock.recv(_peek_size(consumed), _MSG_PEEK)
            if not chunk:
                raise Refused(f"closed after {len(consumed)} bytes of a PROXY header",
                              quiet=not consumed)
            try:
                header = parse(consumed + chunk, self.mode)
            except ProxyProtocolError as exc:
                raise Refused(str(exc)) from None
            if header is not None:
                _recv_exactly(sock, header.length - len(consumed))
                return header
            # parse() promises these are all header bytes: take them, wait for the rest
            # (a peek would see them again at once and spin).
            consumed += _recv_exactly(sock, len(chunk))

    def _check_plain(self, sock: socket.socket, peer: Any, deadline: float,
                     heartbeat: Callable[[], None] | None, slice_: float) -> None:
        """A disallowed peer: Refused(403) if it opens with a header, else nothing is read."""
        while True:
            try:
                _wait_readable(sock, deadline, heartbeat, slice_, b"")
            except Refused:
                return  # silent so far: HTTP's own deadlines take over
            start = sock.recv(16, _MSG_PEEK)
            version = detect(start, self.mode) if start else 0
            if version == 0:
                return
            if version:
                raise Refused(f"a PROXY v{version} header from a peer not in "
                              f"--proxy-allow-from", status=403)
            if time.monotonic() >= deadline:
                return
            time.sleep(PREFIX_RECHECK)  # a signature's prefix is pending: its data polls ready


def _peek_size(consumed: bytearray) -> int:
    if len(consumed) >= 16 and consumed[:1] == b"\r":
        # v2 with its length known: exactly the rest of the header.
        return 16 + int.from_bytes(consumed[14:16], "big") - len(consumed)
    return max(FIRST_PEEK - len(consumed), V1_MAX_LENGTH)


def _wait_readable(sock: socket.socket, deadline: float, heartbeat: Callable[[], None] | None,
                   slice_: float, consumed: bytes | bytearray) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(f"no complete PROXY header within {PROXY_HEADER_TIMEOUT:g}s "
                          f"({len(consumed)} bytes)")
        wait = min(left, slice_) if heartbeat is not None else left
        if poller.poll(wait * 1000):
            return
        if heartbeat is not None:
            heartbeat()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Bytes a peek already saw: they are in the kernel, so this does not wait."""
    parts = []
    while n > 0:
        part = sock.recv(n)
        if not part:
            raise Refused("closed inside the PROXY header")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _close(sock: socket.socket, answer: bytes | None) -> None:
    try:
        if answer is not None:
            sock.settimeout(1.0)
            # Read what the peer sent first: closing with unread bytes resets the
            # connection, and the reset can destroy the 403 before the client reads it.
            _drain(sock, 0.0)
            sock.sendall(answer)
            sock.shutdown(socket.SHUT_WR)
            _drain(sock, 1.0)
    except OSError:
        pass
    finally:
        sock.close()


def _drain(sock: socket.socket, patience: float, limit: int = 64 * 1024) -> None:
    """Discard input until EOF, `limit` bytes or `patience` seconds in all (a client that
    trickles bytes must not hold the sync worker longer)."""
    got = 0
    deadline = time.monotonic() + patience
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while got < limit and poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
        data = sock.recv(65536)
        if not data:
            return
        got += len(data)
