"""TLS with the standard library's ssl module: the SSLContext a worker serves with (Gunicorn's
default factory and its ssl_context hook), the file checks that make a bad certificate one
clear line, and the bounded handshake of the blocking workers.

Each worker builds its context from the files when it boots, so a HUP or USR2 generation
serves a rotated certificate without a restart, and a bad file fails that generation's boot
(the health-gated reload then keeps the old workers). The master never loads a key for
serving and never handshakes: a stalled client can only hold one worker, for at most
--ssl-handshake-timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("polycorn.error")


class TLSConfigError(Exception):
    """A certificate, key or CA file that cannot serve; the message names the file and why."""


def tls_enabled(cfg: Any) -> bool:
    """TLS is on when a certificate is given (Gunicorn's is_ssl: certfile or keyfile)."""
    return bool(getattr(cfg, "certfile", None) or getattr(cfg, "keyfile", None))


def _readable(role: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise TLSConfigError(f"{role} {path}: {exc.strerror or exc}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.library or 'ssl'})"
    return str(exc) or type(exc).__name__


def default_context(cfg: Any) -> ssl.SSLContext:
    """Gunicorn's default_ssl_context_factory, TLS 1.2 at least; errors name the file."""
    certfile, keyfile, ca_certs = cfg.certfile, cfg.keyfile, cfg.ca_certs
    if not certfile:
        raise TLSConfigError(f"keyfile {keyfile} is set but certfile is not")
    _readable("certfile", certfile)
    if keyfile:
        _readable("keyfile", keyfile)
    if ca_certs:
        _readable("ca_certs", ca_certs)
    # The certificate alone first, so a file that is not a certificate is named as such.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=certfile)
    except (ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"certfile {certfile}: not a PEM certificate: "
                             f"{_reason(exc)}") from None
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_certs)
    except (ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(f"ca_certs {ca_certs}: {_reason(exc)}") from None
    try:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    except ssl.SSLError as exc:
        where = f"keyfile {keyfile}" if keyfile else f"certfile {certfile} (no keyfile)"
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(f"keyfile {keyfile} does not match certfile "
                                 f"{certfile}") from None
        raise TLSConfigError(f"{where}: not a usable private key: {_reason(exc)}") from None
    # RFC 8996 deprecates TLS 1.0 and 1.1; Python's default already says 1.2, this keeps
    # it so whatever OpenSSL's configuration says.
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.VerifyMode(cfg.cert_reqs)
    if cfg.ciphers:
        try:
            context.set_ciphers(cfg.ciphers)
        except ssl.SSLError as exc:
            raise TLSConfigError(f"ciphers {cfg.ciphers!r}: {_reason(exc)}") from None
    return context


def build_context(cfg: Any) -> ssl.SSLContext | None:
    """The context a worker serves with: cfg.ssl_context(cfg, factory), as in Gunicorn;
    None when TLS is off. Raises TLSConfigError with one line naming the file and reason."""
    if not tls_enabled(cfg):
        return None
    factory: Callable[[], ssl.SSLContext] = lambda: default_context(cfg)  # noqa: E731
    try:
        context = cfg.ssl_context(cfg, factory)
    except TLSConfigError:
        raise
    except Exception as exc:
        raise TLSConfigError(f"ssl_context hook failed: {exc!r}") from None
    if not isinstance(context, ssl.SSLContext):
        raise TLSConfigError(f"ssl_context hook returned {type(context).__name__}, "
                             "not an ssl.SSLContext")
    return context


def handshake(context: ssl.SSLContext, sock: socket.socket, cfg: Any) -> ssl.SSLSocket:
    """Wrap an accepted blocking socket and complete its handshake within
    --ssl-handshake-timeout (one deadline for the whole handshake, in OpenSSL's loop).
    Raises OSError (ssl.SSLError, TimeoutError) when the client fails or stalls; the
    caller closes the plain socket then."""
    sock.settimeout(float(cfg.ssl_handshake_timeout))
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                              suppress_ragged_eofs=cfg.suppress_ragged_eofs)
    # do_handshake_on_connect only moves the handshake into wrap_socket in the stdlib;
    # here it is done right away either way, so the deadline above always bounds it.
    tls.do_handshake()
    return tls


def accept_tls(context: ssl.SSLContext, sock: socket.socket, peer: Any,
               cfg: Any) -> ssl.SSLSocket | None:
    """handshake(), or None with the socket closed and one debug line (a client that
    fails or stalls its handshake is the client's business, not an event)."""
    try:
        return handshake(context, sock, cfg)
    except (OSError, ValueError) as exc:
        log.debug("worker %s: TLS handshake with %s failed: %s", os.getpid(),
                  describe_peer(peer), _reason(exc) if not isinstance(exc, TimeoutError)
                  else f"not complete within {cfg.ssl_handshake_timeout}s")
        try:
            sock.close()
        except OSError:
            pass
        return None


def send_close_notify(sock: Any) -> None:
    """RFC 8446 6.1: say close_notify before closing, without waiting for the peer's."""
    if not isinstance(sock, ssl.SSLSocket) or sock._sslobj is None:
        return
    try:
        sock.setblocking(False)
        sock.unwrap()
    except (OSError, ValueError):
        pass  # SSLWantReadError: ours is sent, the peer's is not awaited


def describe_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unix socket peer" if not peer else str(peer)
