"""The request-cycle policy of every worker, as pure decisions (sans-IO).

A worker moves bytes; this module says what the end of a request cycle means:
which error status to answer, whether the connection carries the next request,
closes, lingers or is cut, and whether the access log and post_request see the
request. No I/O, no clock, nothing that blocks: it is called from the blocking
handler (sync, thread), from the event worker's loop callbacks, and can be from a
coroutine. What happened comes in as a Failure (or a whole response); what to do
goes out as a Verdict or an End. Order, always: close the app's iterable, then the
access log, then post_request (a hook sees the request once it is over).

| outcome                              | answer     | end              | observed | error log   |
|--------------------------------------|------------|------------------|----------|-------------|
| whole response, connection reusable  | -          | NEXT             | yes      | -           |
| whole response, Connection: close    | -          | LINGER / CLOSE   | yes      | -           |
| bad request head / refused header    | its status | LINGER / CLOSE   | no (a)   | debug       |
| bad request body seen by the app     | its status | LINGER / CLOSE   | yes      | debug (b)   |
| app raised before the head went out  | 500        | LINGER/CLOSE (c) | yes, 0 B | error+trace |
| app raised after the head went out   | -          | CUT (d)          | no       | error+trace |
| client gone (reset, timeout, write)  | -          | CUT              | head?(e) | debug       |
| iterable's close() raised            | -          | LINGER/CLOSE (f) | yes      | error+trace |
| file shorter than its Content-Length | -          | CUT              | yes      | error (g)   |
| app took the socket (StopIteration)  | -          | CUT              | no       | debug       |
| worker stopping (drain, SystemExit)  | the head says Connection: close; SystemExit goes on |

"head?": observed once the response head went out, with the bytes sent so far.

--max-requests counts a request given to the app (pre_request ran), whatever its
end; not a refused head, nor a connection closed without a request (h).

"LINGER / CLOSE": half-close and read briefly when the client may still be sending
(an unread request body, pipelined bytes, no EOF), else close (RFC 9112 9.6).
Bodies: a list/tuple is joined into writes of up to JOIN_LIMIT, a generator goes
out chunk by chunk; a file goes by sendfile only when sendfile_applies (and the
head then says Connection: close, as the kernel's bytes bypass the framing count).
"100 Continue" goes out when the server first needs the body: at once for the
event worker (it buffers the body), at the app's first read for the blocking one.
Bytes logged (%(B)s, resp.sent): body bytes handed to the transport (0 for HEAD,
204, 304), 0 for an error page the server wrote, as Gunicorn's handle_error logs.

Under -k asgi the app call's return plays the iterable's close() (the log waits for
it); the response ends at its last send(), so an exception after that is observed
whole and logged, but ends no connection (docs/internals/asgi.md). A body short of
its Content-Length there is an app error after the head (CUT), as for a generator.

Where the two paths differed before this module, and the choice (Gunicorn's):
(a) unchanged: the event worker refuses before calling the app, so no hooks ran.
(b) the blocking handler logged it at info; Gunicorn logs bad requests at debug.
(c) the blocking handler always lingered a second (a sync worker held idle).
(d) the event worker closed politely (lingered on pipelined bytes); Gunicorn cuts.
(e) the blocking handler did not log a request whose client left mid-body; the
    event worker and Gunicorn (access log and post_request in a finally) do.
(f) the blocking handler closed at once even with the client still sending.
(g) the event worker said nothing (and closed politely) about a short file.
(h) the sync and thread workers counted every connection (sync) or every wait for a
    request (thread), so idle keep-alive closes and port probes recycled workers;
    the event worker and Gunicorn (handle_request's nr += 1) count requests.
Also: the event worker logged the app's body size for HEAD/204/304 (now 0, as
sent), and a 500 page as 0 bytes where the blocking handler counted its length.
"""

from __future__ import annotations

import enum
import http
import logging
import os
import stat
from dataclasses import dataclass
from typing import Any

# Unread request body read and discarded to keep a connection alive: a small form
# the app ignored is cheaper to skip than a reconnect; a large upload it refused is not.
DRAIN_LIMIT = 64 * 1024
# Lingering close bounds (RFC 9112 9.6): enough for the client to read our answer and close.
LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024
# A ready (list) body is joined into writes of up to this size (one syscall, no Nagle gap).
JOIN_LIMIT = 256 * 1024

ERROR_HEADERS = [("Connection", "close")]  # what the access log sees of an error page


class End(enum.Enum):
    """What a connection does after a cycle."""

    NEXT = "the connection carries the next request"
    CLOSE = "close once what was written is flushed"
    LINGER = "half-close, read and discard briefly, close (the client may still be sending)"
    CUT = "close at once: the peer is gone or the response is broken"


class Failure(enum.Enum):
    """What went wrong in a cycle (a whole response is not a failure)."""

    BAD_REQUEST = "the client broke HTTP/1.1 (head, body framing, a refused header)"
    APP_ERROR = "the app, its iterable or start_response raised"
    CLIENT_GONE = "reset, closed or timed out while we read or wrote"
    CLOSE_FAILED = "the iterable's close() raised after a whole response"
    SHORT_FILE = "a file shorter than its Content-Length (sendfile)"
    TAKEN_OVER = "the app took the socket over (gunicorn.socket, then StopIteration)"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about a Failure."""

    answer: int | None  # an error response to write (nothing of a response went out yet)
    end: End
    observed: bool  # the access log and post_request see the request
    log_level: int  # of the error log line
    traceback: bool  # the line carries the exception


_DEBUG, _ERROR = logging.DEBUG, logging.ERROR
_CUT, _LINGER, _CLOSE, _NEXT = End.CUT, End.LINGER, End.CLOSE, End.NEXT


def failure_verdict(failure: Failure, *, response_started: bool, client_may_send: bool,
                    status: int = 500, app_called: bool = True) -> Verdict:
    """The one answer to a failed cycle, for every worker.

    `status` is the error's own status (RemoteProtocolError.status) for BAD_REQUEST;
    `app_called` says whether pre_request and the app ran (hooks see only those).
    """
    polite = _LINGER if client_may_send else _CLOSE
    if failure is Failure.BAD_REQUEST:
        if response_started:
            return Verdict(None, _CUT, False, _DEBUG, False)
        return Verdict(status, polite, app_called, _DEBUG, False)
    if failure is Failure.APP_ERROR:
        if response_started:
            return Verdict(None, _CUT, False, _ERROR, True)
        return Verdict(500, polite, True, _ERROR, True)
    if failure is Failure.CLIENT_GONE:
        return Verdict(None, _CUT, response_started, _DEBUG, False)
    if failure is Failure.CLOSE_FAILED:
        return Verdict(None, polite, True, _ERROR, True)
    if failure is Failure.SHORT_FILE:
        return Verdict(None, _CUT, True, _ERROR, False)
    return Verdict(None, _CUT, False, _DEBUG, False)  # TAKEN_OVER


def client_may_send(conn: Any, *, body_unread: bool = False) -> bool:
    """May the client still be sending (so a plain close could reset our answer)?

    `conn` is the sans-IO connection (ServerConnection or FastConnection).
    """
    pending, eof = conn.trailing_data
    return not eof and (body_unread or bool(pending))


def request_body_pending(*, finished: bool, chunked: bool, content_length: int | None,
                         bytes_read: int) -> bool:
    """May part of the request body still be on its way (the app did not read it all)?

    A request without a body has none pending even before its end was parsed.
    """
    if finished:
        return False
    if chunked:
        return True
    return content_length is not None and content_length > bytes_read


def end_after_response(conn: Any, *, body_unread: bool = False) -> End:
    """After a whole response: the next request, or how to close."""
    if not body_unread and conn.keep_alive:
        return _NEXT
    return _LINGER if client_may_send(conn, body_unread=body_unread) else _CLOSE


def head_says_close(*, worker_running: bool, continue_pending: bool,
                    unread_over_limit: bool) -> bool:
    """Must a response head about to go out say Connection: close?

    Yes while the worker drains (upgrade, reload, stop: a client reusing the
    connection would race our close), or when the unread request body will end the
    connection anyway: the client still waits for 100 Continue (we will not ask for
    a body only to discard it) or more than DRAIN_LIMIT of it remains.
    """
    return not worker_running or continue_pending or unread_over_limit


def may_drain(*, keep_alive_allowed: bool, request_keep_alive: bool) -> bool:
    """Is an unread request body worth draining (up to DRAIN_LIMIT) to keep the connection?"""
    return keep_alive_allowed and request_keep_alive


def sendfile_applies(enabled: bool, method: bytes, status_code: int,
                     content_length: int | None, filelike: Any) -> bool:
    """os.sendfile for a file_wrapper body: a regular file with a declared, non-zero
    length, in a response that carries a body. fstat on an open descriptor never blocks."""
    # An empty file has nothing to send (and socket.sendfile refuses a count of 0).
    if (not enabled or not content_length or method == b"HEAD"
            or status_code in (204, 304)):
        return False
    try:
        return stat.S_ISREG(os.fstat(filelike.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def sent_body_bytes(head_only: bool, status_code: int, produced: int) -> int:
    """Body bytes a response put on the wire, of `produced` by the app (none for HEAD, 204, 304)."""
    if head_only or status_code == 204 or status_code == 304:
        return 0
    return produced


def status_line(status: int) -> str:
    """The status as the access log and post_request see it ("500 Internal Server Error")."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
