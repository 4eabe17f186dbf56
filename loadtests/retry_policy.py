"""Which early connection closes FastHttpUser may retry without counting a failure.

geventhttpclient retries an idempotent request on *any* connection closed before
the response, even a fresh one: that would hide exactly the requests a killed
worker dropped. This policy lets through only the retry every HTTP client makes
(RFC 9112 section 9.3.1): a *reused* keep-alive connection that the server closed
before sending a byte of the response (the idle-close race). Every such retry is
counted; an early close of a fresh connection fails the request.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

POLICY = "rfc9112-9.3.1"  # the name the timeline and the report show


class ClosedBeforeResponse(Exception):
    """A fresh connection closed before any byte of the response: the request failed.

    Deliberately neither an OSError nor an HTTPParseError: geventhttpclient retries
    both, and this must reach Locust as a failed request.
    """


def _peer(sock: object) -> str:
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[attr-defined]
        return f"{host}:{port}"
    except (OSError, AttributeError, ValueError):
        return "?"


def install(on_retry: Callable[[str], None]) -> str:
    """Put the policy in place for every FastHttpUser of this process.

    Returns the policy's name, or a sentence saying why the library's own retry
    behaviour stays (an unexpected geventhttpclient or Locust version).
    """
    from geventhttpclient import client as ghc_client
    from geventhttpclient.response import HTTPConnectionClosed
    from locust.contrib import fasthttp

    base = getattr(ghc_client, "HTTPSocketPoolResponse", None)
    failures = getattr(fasthttp, "FAILURE_EXCEPTIONS", None)
    if base is None or not isinstance(failures, tuple):
        return ("geventhttpclient default (policy not installed: this geventhttpclient/Locust "
                "version lacks HTTPSocketPoolResponse or FAILURE_EXCEPTIONS)")
    if getattr(base, "polycorn_policy", False):
        return POLICY
    carried: weakref.WeakSet = weakref.WeakSet()  # sockets that already carried a response

    class PolicyResponse(base):  # type: ignore[misc, valid-type]
        polycorn_policy = True

        def __init__(self, sock, pool, **kw) -> None:
            reused = sock in carried
            try:
                super().__init__(sock, pool, **kw)
            except HTTPConnectionClosed:
                if not reused:
                    raise ClosedBeforeResponse(
                        "connection closed before any response byte") from None
                on_retry(_peer(sock))  # the library retries it on another connection
                raise
            carried.add(sock)

    ghc_client.HTTPSocketPoolResponse = PolicyResponse
    # Locust turns only these exceptions into a failed request (the rest would be a
    # crashed task); the module global is read at each request.
    fasthttp.FAILURE_EXCEPTIONS = (*failures, ClosedBeforeResponse)
    return POLICY
