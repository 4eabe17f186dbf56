"""Advertised `host:port` -> (IP, port), because `set server ... addr` takes an IP only.

Agents advertise `--advertise HOST:PORT` or their first bind (a wildcard host replaced
by the hostname). Names are resolved with the system resolver and cached for `ttl`
seconds; a name that stops resolving keeps its last known address (a DNS blip must
not move traffic), and a name never resolved gives None: the node is left out of
the backend, and the sync logs it once.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

CACHE_TTL = 30.0  # seconds a resolved name is trusted before it is looked up again


class AddressError(ValueError):
    """Not a `host:port` HAProxy can send traffic to (a Unix socket, no port)."""


def split_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` -> (host, port)."""
    if address.startswith("unix:") or address.startswith("/"):
        raise AddressError(f"{address!r} is a Unix socket: HAProxy cannot reach it over TCP")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise AddressError(f"{address!r} has no host")
    return host, int(port)


def literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class Resolver:
    def __init__(self, ttl: float = CACHE_TTL, clock: Callable[[], float] = time.monotonic,
                 lookup: Callable[..., list] = socket.getaddrinfo) -> None:
        self.ttl = ttl
        self.clock = clock
        self.lookup = lookup
        self._cache: dict[str, tuple[str, float]] = {}  # host -> (ip, looked up at)

    def resolve(self, address: str) -> tuple[str, int]:
        """(ip, port), or AddressError saying why not."""
        host, port = split_address(address)
        ip = literal_ip(host)
        if ip is not None:
            return ip, port
        cached = self._cache.get(host)
        now = self.clock()
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0], port
        try:
            infos = self.lookup(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            if cached is not None:  # keep the last known address through a DNS failure
                return cached[0], port
            raise AddressError(f"{host!r} does not resolve: {exc}") from None
        if not infos:
            raise AddressError(f"{host!r} resolves to no address")
        # Prefer IPv4 when a name has both: the nodes most often bind 0.0.0.0.
        infos = sorted(infos, key=lambda i: i[0] != socket.AF_INET)
        ip = str(infos[0][4][0])
        self._cache[host] = (ip, now)
        return ip, port
