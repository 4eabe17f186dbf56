"""A datagram sender that never blocks and never raises: metrics are best effort.

The socket is non-blocking and connected once (UDP: to the address resolved when
the sender is built, so no name lookup ever happens on a request; unix: to the
path, reconnected at most once a second while the path is missing or its reader
is gone). A datagram that cannot be sent is dropped and counted; the drops are
logged at most once per REPORT_INTERVAL, with their count and the last error.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

log = logging.getLogger("polycorn.error")

REPORT_INTERVAL = 60.0  # seconds between two log lines about dropped datagrams
RECONNECT_INTERVAL = 1.0  # seconds between two connect attempts of a unix socket


class DatagramSender:
    """Sends whole datagrams to one address: (host, port) over UDP, or a unix path."""

    def __init__(self, address: tuple[str, int] | str, label: str = "statsd") -> None:
        self.address = address
        self.label = label
        self.dropped = 0  # datagrams not sent since the last report
        self.dropped_total = 0
        self._sock: socket.socket | None = None
        self._family, self._sockaddr = socket.AF_UNIX, address
        self._connect_after = 0.0
        self._report_after = 0.0
        if isinstance(address, tuple):
            try:
                self._family, self._sockaddr = _resolve(*address)
            except OSError as exc:
                self._sockaddr = None
                log.warning("%s: cannot resolve %s:%s (%s); no metrics are sent until the "
                            "next reload (pid %s)", label, address[0], address[1], exc,
                            os.getpid())
                return
        self._connect()

    def send(self, data: bytes) -> None:
        try:
            self._sock.send(data)  # type: ignore[union-attr]  # None: AttributeError below
        except (OSError, AttributeError) as exc:
            self._failed(data, exc)

    def close(self) -> None:
        sock, self._sock, self._sockaddr = self._sock, None, None
        if sock is not None:
            sock.close()

    # -- the slow path: failures only

    def _connect(self) -> OSError | None:
        """Connect a fresh socket; the error instead, reported by the send that fails."""
        self._connect_after = time.monotonic() + RECONNECT_INTERVAL
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(self._sockaddr)
        except OSError as exc:
            sock.close()
            return exc
        self._sock = sock
        return None

    def _failed(self, data: bytes, exc: Exception) -> None:
        if self._sockaddr is not None and (self._sock is None or (
                self._family == socket.AF_UNIX
                and isinstance(exc, ConnectionError | FileNotFoundError))):
            # Not connected (a unix path missing at start), or a unix reader went away (a
            # new one may have bound the same path): connect anew, once a second at most.
            # A UDP socket stays: its ECONNREFUSED only reports an earlier datagram's ICMP.
            if time.monotonic() >= self._connect_after:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                error = self._connect()
                if error is not None:
                    exc = error
                else:
                    try:
                        self._sock.send(data)  # type: ignore[union-attr]  # just connected
                        return
                    except OSError as again:
                        exc = again
        self._count(exc if isinstance(exc, OSError) else None)

    def _count(self, exc: OSError | None) -> None:
        self.dropped += 1
        self.dropped_total += 1
        now = time.monotonic()
        if now < self._report_after:
            return
        # Set before logging: the log line is itself counted (gunicorn.log.warning) and
        # its datagram may fail too; it must only be counted here, not logged again.
        self._report_after = now + REPORT_INTERVAL
        dropped, self.dropped = self.dropped, 0
        reason = (exc.strerror or repr(exc)) if exc is not None else "not connected"
        log.warning("%s: %d datagram(s) to %s not sent: %s (pid %s; next report in %.0fs "
                    "at most)", self.label, dropped, _describe(self.address), reason,
                    os.getpid(), REPORT_INTERVAL)


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    """The first address for host:port (a name is looked up here, once)."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _describe(address: tuple[str, int] | str) -> str:
    if isinstance(address, tuple):
        host, port = address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"unix:{address}"
