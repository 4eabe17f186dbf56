"""The PEP 3333 environ of one request, built from a parsed Request event.

EnvironBuilder computes every entry that is the same for all requests on a
listener once per worker, and client_entries() those of one connection;
build() copies that dict and adds only the request's own entries, translating
header names through a bounded cache (the hot path).

SERVER_NAME and SERVER_PORT name the address the request arrived on (RFC 3875
4.1.14-15, and Gunicorn: the listener's address), never the client's Host
header: only a Unix-socket listener, which has no host or port, takes them from
Host, as Gunicorn does. A wildcard listener (0.0.0.0, ::) names the connection's
own local address, which is where the request arrived.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any
from urllib.parse import unquote_to_bytes

from polycorn.server import accel
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import Request
from polycorn.server.http.grammar import absolute_form_re
from polycorn.server.wsgi.forwarded import (
    ProxyTrust,
    scheme_from_secure_headers,
    secure_headers_by_name,
)
from polycorn.server.wsgi.response import FileWrapper

from polycorn import __version__

SERVER_SOFTWARE = f"polycorn/{__version__}"

# Header names whose environ key is not simply HTTP_<NAME>, or that we read ourselves.
_CONTENT_TYPE = "CONTENT_TYPE"
_CONTENT_LENGTH = "CONTENT_LENGTH"
_HOST = "HTTP_HOST"
_FORWARDED_SCRIPT_NAME = "HTTP_SCRIPT_NAME"  # a trusted front end's SCRIPT_NAME header
# A header name the cache marks for header_map: names containing "_" (see _environ_key).
_DROP = ""
# Attacker-chosen header names must not grow the cache without bound.
_MAX_CACHED_NAMES = 1024
# Listener hosts that accept on every local address: the connection names its own.
_WILDCARD_HOSTS = frozenset(("0.0.0.0", "::", ""))

_COMMON_NAMES = (
    b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language",
    b"connection", b"content-type", b"content-length", b"cookie", b"referer",
    b"origin", b"authorization", b"cache-control", b"if-none-match",
    b"if-modified-since", b"x-forwarded-for", b"x-forwarded-proto", b"x-request-id",
    b"upgrade-insecure-requests", b"pragma", b"dnt", b"transfer-encoding", b"expect",
)


def _environ_key(name: bytes) -> str:
    """The environ key for a lower-cased header name, or _DROP for a name with "_".

    "X_Forwarded_For" and "X-Forwarded-For" would both map to HTTP_X_FORWARDED_FOR,
    so a client could smuggle a value past a proxy that sets only the dashed
    spelling: such names are left to header_map (EnvironBuilder._underscore_key).
    """
    if b"_" in name:
        return _DROP
    if name == b"content-type":
        return _CONTENT_TYPE
    if name == b"content-length":
        return _CONTENT_LENGTH
    return "HTTP_" + name.decode("latin-1").upper().replace("-", "_")


def _host_name(host: str) -> str:
    """A socket address's host as SERVER_NAME: an IPv6 address in brackets, as in a URL."""
    return f"[{host}]" if ":" in host else host


def _split_host(host: str, default_port: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from a Host value ("name", "name:port", "[v6]:port")."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, (port if port.isascii() and port.isdigit() else default_port)


class ErrorStream:
    """wsgi.errors: text written by the app goes to the "polycorn.error" log, a line per record.

    Partial lines are held until their newline (or flush) so that print(..., file=)
    does not log the text and its newline as two records.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("polycorn.error")
        self._partial = ""
        self._lock = threading.Lock()  # the thread worker shares one stream

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            self._log.error("%s", line)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            line, self._partial = self._partial, ""
        if line:
            self._log.error("%s", line)


class EnvironBuilder:
    """Builds environs for one listener of one worker; build() is safe to call from threads."""

    def __init__(self, cfg: Any, server_addr: Any, scheme: str = "http",
                 accelerated: bool = True) -> None:
        # The compiled build of the request's own entries (server/accel.py), unless
        # absent or declined (accelerated=False: the differential tests' pure side).
        self._native_build = accel.build_environ if accelerated else None
        if self._native_build is not None:
            # Chosen once here, so that the pure build() has nothing to test per request.
            self.build = self._build_native
        self._trust = ProxyTrust(cfg.forwarded_allow_ips)
        # --secure-scheme-headers (Gunicorn's), e.g. {"X-FORWARDED-PROTO": "https"}: by
        # wire name to read the fields, by environ key to see cheaply whether one came.
        self._secure_headers = secure_headers_by_name(cfg.secure_scheme_headers)
        self._secure_keys = tuple("HTTP_" + name.upper().replace("-", "_")
                                  for name in cfg.secure_scheme_headers)
        # Names with "_" a trusted front end may send (Gunicorn's forwarder_headers).
        self._forwarders = frozenset(name.upper() for name in cfg.forwarder_headers)
        # The keys _trusted_entries reads: without any of them it has nothing to do.
        self._trusted_keys = (_FORWARDED_SCRIPT_NAME, *self._secure_keys)
        self._header_map = cfg.header_map
        # SCRIPT_NAME comes from the process environment (--env SCRIPT_NAME=/app), as in
        # Gunicorn; CGI forbids a trailing "/" (the "/" belongs to PATH_INFO).
        self._script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
        self._server_name, self._server_port = self._listener_name(server_addr)
        # A Unix socket has no host or port: Host names the server, as in Gunicorn.
        self._name_from_host = not isinstance(server_addr, tuple)
        # Whether client_entries wants the connection's local address (see the module doc).
        self.wants_local_addr = (isinstance(server_addr, tuple)
                                 and str(server_addr[0]) in _WILDCARD_HOSTS)
        self._header_keys: dict[bytes, str] = {n: _environ_key(n) for n in _COMMON_NAMES}
        self._last_host: tuple[str | None, str, tuple[str, str]] = (None, "", ("", ""))
        # What the compiled take_plain needs (server/accel_take.c), or None when
        # _finish_native has more to do than a trusted front end's headers.
        self.plain_keys = ((self._header_keys, self._trusted_keys)
                           if self._native_build is not None and not self._script_name
                           and not self._name_from_host else None)
        self._base: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.errors": ErrorStream(),
            "wsgi.multithread": cfg.threads > 1,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": self._script_name,
            "SERVER_NAME": self._server_name,
            "SERVER_PORT": self._server_port,
        }

    def _listener_name(self, server_addr: Any) -> tuple[str, str]:
        if isinstance(server_addr, tuple):
            return _host_name(str(server_addr[0])), str(server_addr[1])
        if isinstance(server_addr, bytes):
            server_addr = server_addr.decode(sys.getfilesystemencoding(), "surrogateescape")
        # A Unix socket has no host or port; Gunicorn reports its path and an empty port.
        return str(server_addr), ""

    def _key_for(self, name: bytes) -> str:
        key = self._header_keys.get(name)
        if key is None:
            key = _environ_key(name)
            if len(self._header_keys) < _MAX_CACHED_NAMES:
                self._header_keys[name] = key
        return key

    def client_entries(self, client_addr: Any,
                       local_addr: Any = None) -> tuple[dict[str, Any], bool]:
        """What every request of one client connection shares: the listener's constant
        entries plus REMOTE_ADDR (always the peer) and REMOTE_PORT, and whether the peer
        is a trusted front end (--forwarded-allow-ips; a Unix-socket peer always is, as
        in Gunicorn: it is a local proxy).

        local_addr is the connection's own address (getsockname()); it is read only
        when wants_local_addr is true, so callers fetch it only then."""
        entries = self._base.copy()
        if local_addr is not None and self.wants_local_addr:
            entries["SERVER_NAME"] = _host_name(str(local_addr[0]))
            entries["SERVER_PORT"] = str(local_addr[1])
        if type(client_addr) is tuple:
            entries["REMOTE_ADDR"] = client_addr[0]
            entries["REMOTE_PORT"] = str(client_addr[1])
            return entries, self._trust.trusts(client_addr[0])
        # A Unix-socket peer is usually unnamed: accept() gives "" (or b"").
        if isinstance(client_addr, bytes):
            client_addr = client_addr.decode("latin-1")
        entries["REMOTE_ADDR"] = client_addr or ""
        return entries, True

    def build(self, request: Request, client_addr: Any, wsgi_input: Any,
              client: tuple[dict[str, Any], bool] | None = None) -> dict[str, Any]:
        """The environ of one request; `client` is client_entries(client_addr), which a
        connection serving many requests computes once. Raises RemoteProtocolError (400)
        for a request Gunicorn refuses at this point: a header name with "_" under
        header_map "refuse", or a trusted front end's contradictory scheme headers."""
        base, trusted = client if client is not None else self.client_entries(client_addr)
        environ = base.copy()
        environ["wsgi.input"] = wsgi_input
        environ["REQUEST_METHOD"] = request.method.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.http_version == b"1.1" else (
            "HTTP/" + request.http_version.decode("latin-1"))
        target = request.target
        environ["RAW_URI"] = target.decode("latin-1")

        self._add_headers(environ, request, trusted)
        if request.content_length is not None:
            environ["CONTENT_LENGTH"] = str(request.content_length)

        script_name = self._script_name
        if trusted:
            script_name = self._trusted_entries(environ, request, script_name)

        host: str | None = None
        if target[:1] != b"/":
            # RFC 9112 3.2.2: an absolute-form target (the parser let only http and https
            # through) gives its path to PATH_INFO and its authority to HTTP_HOST.
            match = absolute_form_re.fullmatch(target)
            if match is not None:
                host = match[1].decode("latin-1")
                target = match[2] if match[2][:1] == b"/" else b"/" + match[2]
        path, _, query = target.partition(b"?")
        environ["QUERY_STRING"] = query.decode("latin-1")
        # PEP 3333: PATH_INFO is percent-decoded, then bytes carried as latin-1.
        # 0x25 is "%" (an int operand spares `in` a failed int conversion per request).
        path_info = (unquote_to_bytes(path) if 0x25 in path else path).decode("latin-1")
        # Only a whole path segment is a prefix (Gunicorn's plain prefix test would turn
        # /application under /app into "lication"); a path outside the mount point is
        # passed whole (Gunicorn answers 500), which also serves a proxy that strips it.
        if script_name and (path_info == script_name
                            or path_info.startswith(script_name + "/")):
            path_info = path_info[len(script_name):]
        environ["PATH_INFO"] = path_info

        # RFC 9112 section 3.2.2: an absolute-form target's authority replaces Host.
        if host is not None:
            environ[_HOST] = host
        if self._name_from_host:
            self._name_server_from_host(environ)
        return environ

    def _build_native(self, request: Request, client_addr: Any, wsgi_input: Any,
                      client: tuple[dict[str, Any], bool] | None = None) -> dict[str, Any]:
        """build(), its request entries made by the compiled accelerator when it can."""
        if client is None:
            client = self.client_entries(client_addr)
        base, trusted = client
        environ = self._native_build(base, wsgi_input, request.method, request.http_version,
                                     request.target, request.headers, request.content_length,
                                     self._header_keys)
        if environ is None:  # not its to map: the pure build, which also learns the names
            return EnvironBuilder.build(self, request, client_addr, wsgi_input, client)
        # A trusted front end (loopback, by default) that sent none of the headers it
        # may set leaves nothing to do: tested in C (a view's isdisjoint over a tuple).
        if (trusted and not environ.keys().isdisjoint(self._trusted_keys)) \
                or self._script_name or self._name_from_host:
            self._finish_native(environ, request, trusted)
        return environ

    def _finish_native(self, environ: dict[str, Any], request: Request, trusted: bool) -> None:
        """build()'s steps after the compiled part (which leaves PATH_INFO the raw path
        of an origin-form target without "%"): the trusted front end's entries, the
        SCRIPT_NAME prefix, the server's name from Host."""
        script_name = self._script_name
        if trusted:
            script_name = self._trusted_entries(environ, request, script_name)
        if script_name:
            path_info = environ["PATH_INFO"]
            if path_info == script_name or path_info.startswith(script_name + "/"):
                environ["PATH_INFO"] = path_info[len(script_name):]
        if self._name_from_host:
            self._name_server_from_host(environ)

    def _trusted_entries(self, environ: dict[str, Any], request: Request,
                         script_name: str) -> str:
        """A trusted front end's SCRIPT_NAME and scheme headers; the SCRIPT_NAME to use."""
        if _FORWARDED_SCRIPT_NAME in environ:
            # A front end that mounts the app on a sub-path says where (Gunicorn's
            # forwarder_headers); CGI forbids the trailing "/" (it belongs to PATH_INFO).
            environ["SCRIPT_NAME"] = script_name = environ[_FORWARDED_SCRIPT_NAME].rstrip("/")
        for key in self._secure_keys:
            if key in environ:
                scheme = scheme_from_secure_headers(request.headers, self._secure_headers)
                if scheme is not None:
                    environ["wsgi.url_scheme"] = scheme
                break
        return script_name

    def _name_server_from_host(self, environ: dict[str, Any]) -> None:
        host = environ.get(_HOST)
        if not host:
            return  # the listener's path and an empty port, as Gunicorn gives
        default_port = "443" if environ["wsgi.url_scheme"] == "https" else "80"
        # Clients repeat their Host: the last split is kept (one tuple, so threads
        # never see a host paired with another's split).
        last = self._last_host
        if last[0] == host and last[1] == default_port:
            split = last[2]
        else:
            split = _split_host(host, default_port)
            self._last_host = (host, default_port, split)
        environ["SERVER_NAME"], environ["SERVER_PORT"] = split

    def _add_headers(self, environ: dict[str, Any], request: Request, trusted: bool) -> None:
        known = self._header_keys
        repeated: dict[str, list[str]] | None = None
        for name, value in request.headers:
            key = known.get(name)
            if key is None:
                key = self._key_for(name)
            if not key:
                key = self._underscore_key(name, trusted)
                if not key:
                    continue
            elif key == _CONTENT_LENGTH:
                # CONTENT_LENGTH comes from the parser's framing decision instead: a
                # Content-Length sent beside chunked coding is not the body's length.
                continue
            text = value.decode("latin-1")
            if key in environ:
                # Repeated fields are joined once at the end (RFC 9110 section 5.3):
                # appending one by one would copy the growing value each time.
                if repeated is None:
                    repeated = {}
                repeated.setdefault(key, [environ[key]]).append(text)
            else:
                environ[key] = text
        if repeated:
            for key, values in repeated.items():
                environ[key] = ",".join(values)

    def scope_headers(self, headers: Any, trusted: bool) -> list[tuple[bytes, bytes]]:
        """A request's headers as an ASGI scope gets them: a name with "_" only where
        the environ maps it (a trusted front end's forwarder_headers, header_map
        dangerous), as Gunicorn 27's -k asgi; under header_map refuse, build() has
        refused the request already. `trusted` is client_entries()'s second item."""
        if self._header_map != "dangerous":
            for name, _ in headers:
                if b"_" in name:
                    return [(n, v) for n, v in headers
                            if b"_" not in n or self._underscore_key(n, trusted)]
        return list(headers)

    def _underscore_key(self, name: bytes, trusted: bool) -> str:
        """The environ key for a header name with "_", by Gunicorn's rules: a trusted
        front end's forwarder_headers are mapped; otherwise header_map says drop (the
        default), refuse (400) or dangerous (mapped like dashes, colliding with them)."""
        upper = name.decode("latin-1").upper()
        if (trusted and (upper in self._forwarders or "*" in self._forwarders)) \
                or self._header_map == "dangerous":
            return "HTTP_" + upper.replace("-", "_")
        if self._header_map == "refuse":
            raise RemoteProtocolError(f"Invalid header name {upper!r}", 400)
        return _DROP
