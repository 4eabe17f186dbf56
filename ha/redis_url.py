"""Parse the --redis URL into a plain description of where Redis is.

Pure parsing, no redis-py: the plug-in validates the URL in the master at start-up
(where no client may be created) and the agent builds its client from the result.
Forms: redis://[[user]:password@]host[:port][/db], rediss://... (TLS),
unix://[[user]:password@]/path[?db=N], sentinel://[:password@]host:port[,host:port...]/SERVICE[/db].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


class RedisUrlError(ValueError):
    """The URL cannot describe a Redis deployment; the message says why."""


class RedisKind(Enum):
    TCP = "redis"
    TLS = "rediss"
    UNIX = "unix"
    SENTINEL = "sentinel"


@dataclass(frozen=True)
class RedisTarget:
    kind: RedisKind
    host: str = ""
    port: int = 0
    path: str = ""  # unix socket path
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""  # the Sentinel master name

    def display(self) -> str:
        """The URL without its password, for logs and error messages."""
        auth = ":***@" if self.password else ""
        if self.kind is RedisKind.UNIX:
            return f"unix://{auth}{self.path}?db={self.db}"
        if self.kind is RedisKind.SENTINEL:
            hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.sentinels)
            return f"sentinel://{auth}{hosts}/{self.service}/{self.db}"
        return f"{self.kind.value}://{auth}{_host(self.host)}:{self.port}/{self.db}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port(text: str, default: int, url: str) -> int:
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise RedisUrlError(f"bad port {text!r} in {url!r}")
    return int(text)


def _db(text: str, url: str) -> int:
    if text == "":
        return 0
    if not text.isdigit():
        raise RedisUrlError(f"bad database number {text!r} in {url!r}")
    return int(text)


def _split_hostport(item: str, default_port: int, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [::1]:26379
        host, sep, rest = item[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise RedisUrlError(f"bad address {item!r} in {url!r}")
        return host, _port(rest[1:], default_port, url)
    host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise RedisUrlError(f"missing host in {url!r}")
    return host, _port(port, default_port, url)


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, rest = netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    if not sep:  # "secret@host": redis-cli's convention treats a lone word as the password
        return None, unquote(user) or None, rest
    return unquote(user) or None, unquote(password) or None, rest


def parse_redis_url(url: str) -> RedisTarget:
    """Parse one --redis URL; raise RedisUrlError with a one-line reason."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RedisUrlError(f"not a Redis URL (want redis://, rediss://, unix:// or sentinel://): {url!r}")
    try:
        kind = RedisKind(scheme.lower())
    except ValueError:
        raise RedisUrlError(f"unknown scheme {scheme!r} in {url!r}") from None
    if kind is RedisKind.SENTINEL:
        return _parse_sentinel(url, rest)
    parts = urlsplit(url)
    username, password, hostpart = _credentials(parts.netloc)
    query = parse_qs(parts.query)
    if kind is RedisKind.UNIX:
        if not parts.path:
            raise RedisUrlError(f"missing socket path in {url!r}")
        db = _db(query.get("db", [""])[0], url)
        return RedisTarget(kind, path=unquote(parts.path), db=db,
                           username=username, password=password)
    host, port = _split_hostport(hostpart, DEFAULT_PORT, url)
    db = _db(parts.path.strip("/") or query.get("db", [""])[0], url)
    return RedisTarget(kind, host=host, port=port, db=db, username=username, password=password)


def _parse_sentinel(url: str, rest: str) -> RedisTarget:
    netloc, _, path = rest.partition("/")
    username, password, hosts = _credentials(netloc)
    if not hosts:
        raise RedisUrlError(f"no sentinel address in {url!r}")
    sentinels = tuple(_split_hostport(h, DEFAULT_SENTINEL_PORT, url) for h in hosts.split(","))
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise RedisUrlError(f"missing Sentinel service (master name) in {url!r}")
    return RedisTarget(RedisKind.SENTINEL, sentinels=sentinels, service=unquote(service),
                       db=_db(db, url), username=username, password=password)
