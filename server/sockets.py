"""Listening sockets: parse bind addresses, bind them once, and adopt passed ones.

A listener is bound exactly once per service lifetime and then passed on (by
exec inheritance, SCM_RIGHTS or systemd), never re-bound: re-binding a new
SO_REUSEPORT socket and closing the old one resets the connections queued in
the old accept queue.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass
from typing import Any

SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed sockets start at fd 3


class BindError(Exception):
    """A listener could not be created; the message names the address and the cause."""


@dataclass(frozen=True)
class Address:
    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""  # AF_UNIX
    fd: int = -1  # fd://N

    def __str__(self) -> str:
        if self.fd >= 0:
            return f"fd://{self.fd}"
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int = 8000) -> Address:
    """Parse Gunicorn's bind syntax: HOST:PORT, [V6]:PORT, unix:PATH, fd://N."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:].removeprefix("//")
        if not path:
            raise ValueError(f"bad bind address {text!r}: empty unix socket path")
        return Address(socket.AF_UNIX, path=path)
    if text.startswith("fd://"):
        num = text[5:]
        if not num.isdigit():
            raise ValueError(f"bad bind address {text!r}: fd://N needs a number")
        return Address(socket.AF_INET, fd=int(num))
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad bind address {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
        family = socket.AF_INET6
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            raise ValueError(f"bad bind address {text!r}: put IPv6 addresses in brackets")
        family = socket.AF_INET
    if port_text == "":
        port = default_port
    elif port_text.isdigit() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ValueError(f"bad bind address {text!r}: port must be 0-65535")
    return Address(family, host=host or "0.0.0.0", port=port)


@dataclass
class Listener:
    sock: socket.socket
    address: Address

    def fileno(self) -> int:
        return self.sock.fileno()

    def __getattr__(self, name: str) -> Any:
        # Gunicorn's listeners proxy their socket (server.LISTENERS[0].getsockname()
        # in hooks); dunder and dataclass lookups must not recurse into it.
        if name.startswith("__") or name in ("sock", "address"):
            raise AttributeError(name)
        return getattr(self.sock, name)

    def __str__(self) -> str:
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = self.sock.getsockname()[:2]
            return f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        return str(self.address)

    def server_name(self) -> tuple[str, int] | str | bytes:
        """What names the server to requests on this listener (environ.EnvironBuilder):
        (host, port), or a Unix socket's path, where the Host header names it instead."""
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = self.sock.getsockname()[:2]
            return host, port
        return self.sock.getsockname()


def bind(address: Address, backlog: int, reuse_port: bool = False) -> Listener:
    """Bind and listen on one address; raise BindError with a one-line reason.

    reuse_port (--reuse-port) sets SO_REUSEPORT on a TCP listener, as Gunicorn does, so
    other processes of the same user (another server, a load tester) may bind the same
    port beside it. Polycorn itself still binds once and passes the socket on.
    """
    if address.fd >= 0:
        return adopt_fd(address.fd, address)
    try:
        if address.family == socket.AF_UNIX:
            sock = _bind_unix(address.path)
        else:
            sock = _bind_inet(address, reuse_port)
        sock.listen(backlog)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot listen on {address}: {reason}") from None
    sock.setblocking(False)
    return Listener(sock, address)


def _bind_inet(address: Address, reuse_port: bool = False) -> socket.socket:
    infos = socket.getaddrinfo(address.host, address.port, address.family, socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR only lets us bind over TIME_WAIT remnants of an earlier
        # run. SO_REUSEPORT only on request: our own masters never bind a second
        # socket (that would split the accept queue), they share this one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        probe_dead_peers(sock)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


# TCP keepalive on every listener (accepted sockets inherit it, so it costs no call per
# connection): a worker waiting on a client whose reset or FIN was lost would otherwise
# wait until --timeout. chaos --random 4: HAProxy reset its connections to a node while
# 20% of the node's packets were dropped; lost resets held both sync workers in recv()
# for 30 s, the node failed its health checks, and HAProxy kept it down 28 s after the
# loss had healed. After KEEPALIVE_IDLE s without a byte the kernel probes the peer: a
# host that no longer knows the connection answers with a reset (the worker is freed at
# once), a host that is gone stays silent and the connection fails after the probes.
# A live client answers the probes and is left alone.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 5, 1, 5


def probe_dead_peers(sock: socket.socket) -> None:
    """Turn on TCP keepalive with short timers on a TCP socket (see above)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, name):  # Linux; elsewhere the system's timers apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _bind_unix(path: str) -> socket.socket:
    # A stale socket file from a crashed run would make bind fail with
    # EADDRINUSE; remove it only if it is a socket nobody listens on.
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)
            else:
                raise OSError(errno.EADDRINUSE, "address already in use")
            finally:
                probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    return sock


def adopt_fd(fd: int, address: Address | None = None) -> Listener:
    """Wrap an inherited listening fd (fd://N, systemd, re-exec, hand-off)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"cannot use fd {fd}: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise BindError(f"fd {fd} is not a listening stream socket")
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        probe_dead_peers(sock)  # a listener bound by an older release or by systemd
    sock.setblocking(False)
    if address is None:
        address = address_of(sock)
    return Listener(sock, address)


def address_of(sock: socket.socket) -> Address:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return Address(socket.AF_UNIX, path=name if isinstance(name, str) else name.decode())
    return Address(sock.family, host=name[0], port=name[1])


def systemd_listeners(environ: dict[str, str]) -> list[Listener]:
    """Sockets passed by systemd socket activation (sd_listen_fds(3)), if meant for us."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(environ.get("LISTEN_FDS", "0") or 0)
    # Unset so that children (workers, a re-exec) do not take them as theirs.
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    return [adopt_fd(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


def create_listeners(binds: list[str], backlog: int, environ: dict[str, str],
                     reuse_port: bool = False) -> list[Listener]:
    """Listeners for a fresh master: systemd's if it passed any, else bind each address."""
    passed = systemd_listeners(environ)
    if passed:
        return passed
    listeners: list[Listener] = []
    try:
        for text in binds:
            try:
                address = parse_address(text)
            except ValueError as exc:
                raise BindError(str(exc)) from None
            listeners.append(bind(address, backlog, reuse_port))
    except BindError:
        close_all(listeners, unlink=True)
        raise
    return listeners


def close_all(listeners: list[Listener], unlink: bool = False) -> None:
    for listener in listeners:
        path = listener.address.path if listener.address.family == socket.AF_UNIX else ""
        listener.sock.close()
        if unlink and path:
            with contextlib.suppress(OSError):
                os.unlink(path)
