"""Which peers may speak for the client, and what they may say: Gunicorn's rules.

A peer in --forwarded-allow-ips (or any Unix-socket peer) is a trusted front end. It
may set wsgi.url_scheme through --secure-scheme-headers and send the header names
with "_" listed in forwarder_headers (SCRIPT_NAME for an app mounted on a sub-path).
Nobody sets REMOTE_ADDR: it is always the peer, and X-Forwarded-For reaches the app
only as HTTP_X_FORWARDED_FOR (rewriting it from the header let any client choose its
own address as soon as the list held "*").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Headers

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Verdicts on peers outside the exact set, remembered: parsing an address costs about
# 2.7 us, paid by every connection of an untrusted client (most of them, in front of
# the public). Bounded: cleared when full, as many peers as a busy front sees.
MAX_REMEMBERED_PEERS = 4096


def _parse_ip(text: str) -> IPAddress | None:
    """A peer address as accept() gives it, or None; IPv4-mapped IPv6 (a dual-stack
    listener's view of an IPv4 peer) is reduced to IPv4 so "127.0.0.1" matches it."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ProxyTrust:
    """The parsed --forwarded-allow-ips: "*", addresses and networks (IPv4 and IPv6)."""

    __slots__ = ("trust_all", "_exact", "_networks", "_verdicts")

    def __init__(self, allowed: str | Iterable[str]) -> None:
        items = allowed.split(",") if isinstance(allowed, str) else allowed
        self.trust_all = False
        # Exact peer strings answer the common case (127.0.0.1, ::1) with one set lookup.
        self._exact: set[str] = set()
        self._networks: list[IPNetwork] = []
        self._verdicts: dict[str, bool] = {}
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
        """Is this peer address (as accept() gives it) a trusted front end?"""
        if self.trust_all or peer in self._exact:
            return True
        verdict = self._verdicts.get(peer)
        if verdict is None:
            ip = _parse_ip(peer)
            verdict = ip is not None and any(ip in network for network in self._networks)
            if len(self._verdicts) >= MAX_REMEMBERED_PEERS:
                self._verdicts.clear()
            self._verdicts[peer] = verdict
        return verdict


def secure_headers_by_name(secure_scheme_headers: Mapping[str, str]) -> dict[bytes, bytes]:
    """--secure-scheme-headers keyed by the parser's lower-cased header names."""
    return {name.strip().lower().encode("latin-1"): value.encode("latin-1")
            for name, value in secure_scheme_headers.items()}


def scheme_from_secure_headers(headers: Headers, secure: Mapping[bytes, bytes]) -> str | None:
    """The scheme a trusted front end's scheme headers state, or None if it sent none.

    As in Gunicorn: each such field is "https" when its value is exactly the configured
    one (case-sensitive) and "http" otherwise; fields that disagree make the request
    ambiguous, so it is refused with 400 rather than served under either scheme.
    """
    scheme: str | None = None
    for name, value in headers:
        expected = secure.get(name)
        if expected is None:
            continue
        this = "https" if value == expected else "http"
        if scheme is None:
            scheme = this
        elif this != scheme:
            raise RemoteProtocolError("Contradictory scheme headers", 400)
    return scheme
