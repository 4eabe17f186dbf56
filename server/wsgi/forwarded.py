"""Which peers may speak for the client through X-Forwarded-For and the scheme headers.

The --forwarded-allow-ips list is parsed once per worker into exact addresses and
networks. A request's forwarding headers are consulted only when its peer is trusted,
and the client is the right-most X-Forwarded-For entry that is not itself trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_ip(text: str) -> IPAddress | None:
    """An address as it appears in a peer tuple or a forwarding header, or None.

    Accepts "[v6]" and "[v6]:port" and "v4:port" (some proxies append the port),
    and reduces IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 peer) to IPv4.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ProxyTrust:
    """The parsed --forwarded-allow-ips: "*", addresses and networks (IPv4 and IPv6)."""

    __slots__ = ("trust_all", "_exact", "_networks")

    def __init__(self, allowed: str | Iterable[str]) -> None:
        items = allowed.split(",") if isinstance(allowed, str) else allowed
        self.trust_all = False
        # Exact peer strings answer the common case (127.0.0.1, ::1) with one set lookup.
        self._exact: set[str] = set()
        self._networks: list[IPNetwork] = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            if item == "*":
                self.trust_all = True
                continue
            network = ipaddress.ip_network(item, strict=False)
            if network.num_addresses == 1:
                self._exact.add(str(network.network_address))
            self._networks.append(network)

    def trusts(self, peer: str) -> bool:
        """Is this peer address (as the kernel or a forwarding header gives it) trusted?"""
        if self.trust_all or peer in self._exact:
            return True
        ip = _parse_ip(peer)
        if ip is None:
            return False
        return any(ip in network for network in self._networks)

    def client_from_forwarded_for(self, forwarded_for: str) -> str | None:
        """The client address named by a trusted peer's X-Forwarded-For, or None.

        Each proxy appends the address it received the request from, so every entry
        left of a proxy we do not trust could have been written by the client itself.
        Walking from the right and stopping at the first untrusted entry gives the
        address our own proxies saw; taking the left-most entry would let any client
        choose its REMOTE_ADDR. When every entry is trusted (or "*" is set) the
        left-most one is the best we have. An entry that is not an IP address (a
        typo, "unknown", an obfuscated identifier from RFC 7239) ends the walk:
        nothing left of it can be verified, so None keeps the peer's address.
        """
        entries = [e.strip() for e in forwarded_for.split(",")]
        entries = [e for e in entries if e]
        for entry in reversed(entries):
            ip = _parse_ip(entry)
            if ip is None:
                return None
            if not self.trusts(str(ip)):
                return str(ip)
        if entries:
            ip = _parse_ip(entries[0])
            return str(ip) if ip is not None else None
        return None


def scheme_from_secure_header(value: str, secure_value: str) -> str:
    """"https" when a trusted peer's scheme header (--secure-scheme-headers) says so, else "http".

    A chain of proxies may list several values; the right-most one was written by
    the proxy that talked to us, the only one whose word we can check.
    """
    last = value.rpartition(",")[2].strip().lower()
    return "https" if last == secure_value.lower() else "http"
