"""Socket hand-off between masters on one host: bind once, pass forever.

The master that holds an exclusive flock on `PATH.lock` owns the hand-off path
and answers every connection to PATH with the listening sockets (SCM_RIGHTS)
and a JSON description. A master started later with the same PATH receives
them instead of binding. The kernel drops the flock when the owner dies, so a
surviving master takes the lock (try-lock on each turn of its loop) and then
the path: exactly one can, because only one can hold the lock. Peers are
checked with SO_PEERCRED: same uid, or root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import struct
import time

from polycorn.server.sockets import Listener, adopt_fd, parse_address

log = logging.getLogger("polycorn.error")

MAX_FDS = 64
CONNECT_TIMEOUT = 2.0


class HandoffError(Exception):
    pass


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def peer_allowed(sock: socket.socket) -> bool:
    uid = peer_uid(sock)
    return uid == os.geteuid() or uid == 0


def try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on path, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def describe(listeners: list[Listener]) -> list[str]:
    return [str(lst.address) for lst in listeners]


def send_listeners(conn: socket.socket, listeners: list[Listener], extra: dict | None = None,
                   extra_fds: dict[str, int] | None = None) -> None:
    """One message: a JSON header naming every fd, then the fds (listeners first)."""
    named = extra_fds or {}
    header = json.dumps({"listeners": describe(listeners), "extra_fds": list(named),
                         **(extra or {})}).encode()
    socket.send_fds(conn, [header], [lst.fileno() for lst in listeners] + list(named.values()))


def receive_listeners(conn: socket.socket) -> tuple[list[Listener], dict, dict[str, int]]:
    """The other side of send_listeners: (listeners, header, named extra fds)."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
    # Received fds come without close-on-exec (CPython 3.11's recv_fds ignores
    # its flags argument): without this a USR2 child would inherit a stray
    # copy of every listener, one more per upgrade.
    for fd in fds:
        os.set_inheritable(fd, False)
    try:
        if not data:
            raise HandoffError("the peer closed the hand-off connection without sending sockets")
        info = json.loads(data)
        names = info.get("listeners", [])
        extra_names = info.get("extra_fds", [])
        if len(names) + len(extra_names) != len(fds):
            raise HandoffError(f"expected {len(names) + len(extra_names)} descriptors, "
                               f"received {len(fds)}")
    except (HandoffError, ValueError):
        for fd in fds:
            os.close(fd)
        raise
    listeners = [adopt_fd(fd, None if name.startswith("fd://") else parse_address(name))
                 for fd, name in zip(fds, names, strict=False)]
    extra = dict(zip(extra_names, fds[len(names):], strict=True))
    return listeners, info, extra


def fetch(path: str, timeout: float = CONNECT_TIMEOUT) -> list[Listener] | None:
    """Listeners from the owner of `path`, or None when nobody serves it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        if not peer_allowed(sock):
            raise HandoffError(f"hand-off path {path} is served by uid {peer_uid(sock)}: refused")
        try:
            listeners, _info, _extra = receive_listeners(sock)
        except (OSError, ValueError) as exc:
            raise HandoffError(f"hand-off from {path} failed: {exc}") from None
        return listeners
    finally:
        sock.close()


class HandoffOwner:
    """The hand-off path's server side, driven by the master's loop (never blocks)."""

    def __init__(self, path: str, lock_fd: int, listeners: list[Listener],
                 sock: socket.socket | None = None) -> None:
        self.path = path
        self.lock_fd = lock_fd
        self.listeners = listeners
        self.sock = sock or self._bind(path)
        self.sock.setblocking(False)

    @staticmethod
    def _bind(path: str) -> socket.socket:
        # We hold the lock, so whatever socket file is there is a dead owner's.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        sock.listen(64)
        os.replace(tmp, path)  # atomic: a peer never sees the path missing
        return sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve_ready(self) -> None:
        """Answer every pending connection (called when select() says readable)."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            try:
                conn.settimeout(1.0)
                if not peer_allowed(conn):
                    log.warning("hand-off refused to uid %s", peer_uid(conn))
                    continue
                send_listeners(conn, self.listeners, {"owner": os.getpid()})
            except OSError as exc:
                log.warning("hand-off to a peer failed: %s", exc)
            finally:
                conn.close()

    def fds(self) -> list[int]:
        """Descriptors a successor master must inherit to own the path without a gap."""
        return [self.lock_fd, self.sock.fileno()]

    def close(self, unlink: bool) -> None:
        if unlink:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def acquire_or_fetch(path: str, binder) -> tuple[list[Listener], HandoffOwner | None]:
    """At start: receive the listeners from the path's owner, or become the owner.

    `binder()` creates fresh listeners; it is called only by the master that
    wins the lock while nobody serves the path.
    """
    for _attempt in range(50):
        listeners = fetch(path)
        if listeners is not None:
            return listeners, None
        lock_fd = try_lock(path + ".lock")
        if lock_fd is not None:
            # Check again under the lock: a live owner may have started meanwhile.
            listeners = fetch(path) if os.path.exists(path) else None
            if listeners is not None:
                os.close(lock_fd)
                return listeners, None
            listeners = binder()
            return listeners, HandoffOwner(path, lock_fd, listeners)
        # Someone holds the lock but does not answer yet: it is binding. Retry.
        time.sleep(0.1)
    raise HandoffError(f"hand-off path {path}: the lock is held but nobody answers")
