"""Who may see the dashboard and who may act through it (pure checks, no sockets).

- Bind: loopback unless the operator says --allow-remote (then a warning is logged),
  since the page shows the cluster's addresses and, with actions, can drain nodes.
- Host header: on a loopback bind only loopback names are served, so a web page that
  rebinds its own DNS name to 127.0.0.1 cannot read the state (DNS rebinding).
- Actions: POST only, a JSON body, `Authorization: Bearer TOKEN` compared in constant
  time, and an Origin, when the browser sends one, equal to the page's own. A
  cross-site form can set none of these; a cross-site fetch with that header needs a
  CORS preflight, which this server never grants.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "POLYCORN_DASHBOARD_TOKEN"
MIN_TOKEN = 16  # characters: a short token would be guessed over the network


class GuardError(ValueError):
    """A bad --bind, token or token file: one line for the operator."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int
    loopback: bool


def parse_bind(text: str) -> Bind:
    """HOST:PORT (or [V6]:PORT) with a port in 0..65535; the host resolved to judge it."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise GuardError(f"--bind {text!r}: want HOST:PORT, e.g. 127.0.0.1:8470")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise GuardError(f"--bind {text!r}: the port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise GuardError(f"--bind {text!r}: the port must be 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise GuardError(f"--bind {text!r}: cannot resolve {host!r} ({exc})") from None
    loopback = all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                   for info in infos)
    return Bind(host, port, loopback)


def load_token(token_file: str | None, environ: dict[str, str] | None = None) -> str:
    """The action token from --token-file, else $POLYCORN_DASHBOARD_TOKEN; "" if neither."""
    env = os.environ if environ is None else environ
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise GuardError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        where = f"--token-file {token_file}"
    else:
        token = env.get(TOKEN_ENV, "").strip()
        where = f"${TOKEN_ENV}"
    if token and len(token) < MIN_TOKEN:
        raise GuardError(f"the token in {where} is shorter than {MIN_TOKEN} characters")
    if token and not token.isprintable():
        raise GuardError(f"the token in {where} holds unprintable characters")
    return token


def token_matches(expected: str, authorization: str | None) -> bool:
    """`Authorization: Bearer TOKEN` against the expected token, in constant time."""
    if not expected or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def host_allowed(host_header: str | None, bind: Bind) -> bool:
    """Any Host on a remote-allowed bind; loopback names (and the bind host) otherwise."""
    if not bind.loopback:
        return True
    if not host_header:
        return False
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[:name.find("]") + 1]
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name in LOOPBACK_NAMES or name == bind.host.lower() \
        or name.endswith(".localhost")


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """No Origin (not a browser's cross-site request) or the page's own origin."""
    if origin is None:
        return True
    return bool(host_header) and origin in (f"http://{host_header}", f"https://{host_header}")
