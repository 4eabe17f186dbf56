"""One accepted socket: the blocking request cycle of the sync and thread workers.

ClientConnection feeds a sans-IO ServerConnection from recv(), runs the app with
run_app, and writes the framed response in as few sendall() calls as it can (head
and first chunk together; a list body joined whole). Failures end the connection
the way HTTP allows: an error response if nothing was sent, a cut connection if
something was, and a half-close with a brief drain when the client may still be
sending, so that its TCP stack does not discard our answer (RFC 9112 section 9.6).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from polycorn.server import accel
from polycorn.server.http.accel_server import AccelServerConnection
from polycorn.server.http.connection import ServerConnection
from polycorn.server.http.errors import RemoteProtocolError
from polycorn.server.http.events import NEED_DATA, ConnectionClosed, Data, EndOfMessage, Request
from polycorn.server.tls import send_close_notify
from polycorn.server.wsgi import policy
from polycorn.server.wsgi.body import EMPTY_INPUT, IncompleteBodyError, WSGIInput
from polycorn.server.wsgi.client_waits import ClientWaits
from polycorn.server.wsgi.policy import DRAIN_LIMIT, JOIN_LIMIT, End, Failure
from polycorn.server.wsgi.response import StartResponse
from polycorn.server.wsgi.run import AppResponse, check_chunk, run_app
from polycorn.server.wsgi.trace import Trace, close_response, log_failure

if TYPE_CHECKING:
    from polycorn.server.wsgi.handler import WSGIHandler

# The request half: the pure parser, with the compiled accelerator's shortcut for
# plain heads when it is built (server/accel.py).
_Connection = AccelServerConnection if accel.split_head is not None else ServerConnection

log = logging.getLogger("polycorn.error")

RECV_SIZE = 65536
_CUT, _LINGER = End.CUT, End.LINGER


class ClientConnection:
    """One accepted socket; serve_one() runs one whole request cycle on it.

    With `waits` every wait on the client goes through that policy: short slices (with
    the sync worker's heartbeat between them), and deadlines (client_waits.py). Without
    it the socket's own timeout bounds each call.
    """

    def __init__(self, handler: WSGIHandler, sock: socket.socket, client_addr: Any,
                 server_addr: Any, *, keep_alive: bool, waits: ClientWaits | None = None,
                 proxied: Any = None) -> None:
        self.handler = handler
        self.sock = sock
        self._waits = waits
        if waits is not None:
            waits.prepare(sock)
        self.client_addr = client_addr
        self.server_addr = server_addr
        self._conn = _Connection(handler.limits, keep_alive_allowed=keep_alive)
        self._keep_alive_allowed = keep_alive
        tls = isinstance(sock, ssl.SSLSocket)
        self._builder = handler.environ_builder(server_addr, "https" if tls else "http")
        # getsockname only where it says more than the listener's address (a wildcard).
        local_addr = sock.getsockname() if self._builder.wants_local_addr else None
        self._client_entries = self._builder.client_entries(client_addr, local_addr)
        if proxied is not None:  # a PROXY protocol header (workers/proxy_gate.py)
            self._client_entries = proxied.environ_entries(self._client_entries)
        # Gunicorn's key for the client socket: Flask-Sock and simple-websocket take the
        # connection over through it (and then raise StopIteration, see _serve).
        self._client_entries[0]["gunicorn.socket"] = sock
        # os.sendfile writes kernel to kernel: only a plain socket (not TLS) can take it.
        self._sendfile_ok = handler.sendfile_enabled and not tls
        self._tls = tls
        self._end: End | None = None
        self._closed = False
        # Requests given to the app (pre_request ran): what counts toward --max-requests.
        self.requests = 0
        # per request
        self._start: StartResponse | None = None
        self._body_bytes = 0  # body bytes sent, unframed (the access log's %(B)s)
        self._body_error: RemoteProtocolError | None = None
        self._request_keep_alive = False
        self._request_length: int | None = None
        self._request_chunked = False
        self._body = EMPTY_INPUT

    @property
    def has_buffered_data(self) -> bool:
        """A pipelined request (or part of one) is already buffered: serve it without polling."""
        # TLS: a record read only in part waits decrypted in OpenSSL, where no poll sees it.
        return bool(self._conn.trailing_data[0]) or (self._tls and self.sock.pending() > 0)

    def serve_one(self) -> bool:
        """Read one request, run the app, write the response; True if the connection may be
        reused."""
        if self._end is not None:
            return False
        keep = self._cycle()
        if self._end is _LINGER:
            # Here rather than in close(): the thread worker closes connections from
            # its event loop, which must never wait on a client.
            self._linger()
        return keep

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The last request's StartResponse and WSGIInput call back into this object (a
        # reference cycle): let go of them, or every connection's objects wait for the
        # cyclic collector (16 per request on the sync worker, and full collections).
        self._start = None
        self._body = EMPTY_INPUT
        if self._tls:
            send_close_notify(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass

    def _cycle(self) -> bool:
        try:
            request = self._receive_request()
        except RemoteProtocolError as exc:
            self._refuse(exc)
            return False
        except OSError as exc:
            # A timeout or reset while waiting for a request is a client leaving: no traceback.
            log.debug("connection from %s ended while reading a request: %r", self.client_addr, exc)
            self._end = _CUT
            return False
        if request is None:
            self._end = End.CLOSE
            return False
        return self._serve(request)

    # -- reading

    def _receive_request(self) -> Request | None:
        conn = self._conn
        pending, eof = conn.trailing_data
        waits = self._waits
        deadline = waits.head_deadline() if waits is not None else 0.0
        if not pending and not eof:
            # Nothing buffered: asking the parser first would only scan an empty buffer.
            conn.receive_data(self.sock.recv(RECV_SIZE) if waits is None
                              else waits.recv(self.sock, RECV_SIZE, deadline))
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(self.sock.recv(RECV_SIZE) if waits is None
                                  else waits.recv(self.sock, RECV_SIZE, deadline))
            elif type(event) is Request:
                return event
            elif type(event) is ConnectionClosed:
                return None
            else:
                raise RuntimeError(f"parser gave {event!r} while waiting for a request")

    def _pull_body(self) -> bytes:
        """The WSGIInput's source: the next piece of body, b"" at its end."""
        conn = self._conn
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    waits = self._waits
                    conn.receive_data(self.sock.recv(RECV_SIZE) if waits is None
                                      else waits.recv(self.sock, RECV_SIZE))
                elif type(event) is Data:
                    return event.data
                elif type(event) is EndOfMessage:
                    return b""
                else:
                    raise RuntimeError(f"parser gave {event!r} inside a request body")
        except RemoteProtocolError as exc:
            # Bad chunked framing or EOF before the end: the client's fault, answered
            # with exc.status if the app lets the error through.
            self._body_error = exc
            raise IncompleteBodyError(f"invalid request body: {exc}") from exc
        except OSError as exc:
            self._end = _CUT
            raise IncompleteBodyError(f"request body not received: {exc!r}") from exc

    def _send_continue(self) -> None:
        interim = self._conn.continue_bytes()
        if interim:
            try:
                self._send_raw(interim)
            except OSError as exc:
                self._end = _CUT
                raise IncompleteBodyError(f"client gone before 100 Continue: {exc!r}") from exc

    # -- one request cycle

    def _serve(self, request: Request) -> bool:
        handler = self.handler
        self._body_bytes = 0
        self._body_error = None
        self._request_keep_alive = request.keep_alive
        self._request_length = request.content_length
        self._request_chunked = request.chunked
        self._start = start = StartResponse(self._write_now)
        self._body = body = WSGIInput(self._pull_body,
                                      self._send_continue if request.expect_continue else None)
        try:
            environ = self._builder.build(request, self.client_addr, body, self._client_entries)
        except RemoteProtocolError as exc:  # header_map "refuse", contradictory scheme
            self._refuse(exc)
            return False
        self.requests += 1
        trace = Trace(environ, request, self.client_addr, handler) if handler.observed else None
        resp: AppResponse | None = None
        stop: SystemExit | None = None
        try:
            if handler.pre_request is not None:
                handler.pre_request(handler.worker, trace.hook_request)
            resp = run_app(handler.app_for(request.target), environ, start)
            self._send_response(resp, request)
            answered: tuple[str | None, list] = (start.status, start.headers)
        except StopIteration:
            answered = self._taken_over(environ)
        except Exception as exc:
            answered = self._fail(exc, environ)
        except SystemExit as exc:
            # The worker stops now (SIGABRT after --timeout: worker_abort; INT/QUIT) and
            # the exit unwound the app: answer 500 and run post_request first, as
            # Gunicorn does. An app's own sys.exit() is just an error (the worker lives).
            answered = self._fail(exc, environ)
            if not getattr(handler.worker, "alive", True):
                stop = exc
        finally:
            if resp is not None and not close_response(resp, environ) and self._end is None:
                self._end = self._verdict(Failure.CLOSE_FAILED).end
        if trace is not None:
            trace.log(answered[0], answered[1], self._body_bytes)
        if stop is not None:
            raise stop
        return self._finish_cycle(body)

    def _taken_over(self, environ: dict) -> tuple[str | None, list]:
        """StopIteration from the app: it took the socket over (gunicorn.socket, e.g. a
        WebSocket) and answered on it; we only close the connection, as Gunicorn does."""
        log.debug("connection %s %s taken over by the application; closing",
                  environ.get("REQUEST_METHOD"), environ.get("RAW_URI"))
        self._end = self._verdict(Failure.TAKEN_OVER).end
        return None, []

    def _finish_cycle(self, body: WSGIInput) -> bool:
        """Decide whether the connection carries another request; True after start_next_cycle."""
        conn = self._conn
        if self._end is not None:
            return False
        body_unread = not body.finished
        if body_unread and policy.may_drain(keep_alive_allowed=self._keep_alive_allowed,
                                     request_keep_alive=self._request_keep_alive):
            # ServerConnection.keep_alive stays False while the body is unread, so
            # drain first (bounded) when the connection could otherwise persist.
            try:
                body_unread = not body.drain(DRAIN_LIMIT)
            except IncompleteBodyError:
                pass
        if not body_unread and conn.keep_alive:
            # policy.end_after_response's first row inlined (this runs on every request).
            conn.start_next_cycle()
            return True
        if body_unread:  # not read to its end: is any of it still to come?
            body_unread = self._body_pending(body)
        end = policy.end_after_response(conn, body_unread=body_unread)
        # Pipelined requests we will not answer, or a body we did not read: closing on
        # unread bytes would reset the connection and could destroy the response sent.
        self._end = end
        return False

    # -- writing

    def _frame(self, data: bytes) -> bytes:
        """The wire bytes for a body chunk, preceded by the head if it was not sent yet."""
        conn = self._conn
        if conn.response_started:
            head = b""
        else:
            body = self._body
            length = self._request_length
            if policy.head_says_close(
                    worker_running=getattr(self.handler.worker, "alive", True),
                    continue_pending=body.continue_pending,
                    unread_over_limit=(not body.finished and length is not None
                                       and length - body.bytes_read > DRAIN_LIMIT)):
                conn.refuse_keep_alive()
            start = self._start
            head = conn.start_response(start.status_code, start.reason, start.wire_headers)
        if not data:
            return head
        framed = conn.send_body(data)
        if framed:
            self._body_bytes += len(data)
        return head + framed if head else framed

    def _send_raw(self, data: bytes) -> None:
        if self._waits is None:
            self.sock.sendall(data)
        else:
            self._waits.sendall(self.sock, data)

    def _sendall(self, data: bytes) -> None:
        try:
            self._send_raw(data)
        except OSError:
            self._end = _CUT
            raise

    def _write_now(self, data: bytes) -> None:
        """The sink of PEP 3333's write(): the chunk goes out before write() returns."""
        self._sendall(self._frame(data))

    def _send_response(self, resp: AppResponse, request: Request) -> None:
        if resp.file is not None and self._can_sendfile(resp, request):
            self._send_file(resp)
        elif resp.in_memory:
            self._send_joined(resp)
        else:
            self._send_streamed(resp)

    def _send_joined(self, resp: AppResponse) -> None:
        """A list or tuple body: every chunk exists already, so send them together."""
        parts = [self._frame(resp.first)]
        size = len(parts[0])
        for chunk in resp.rest:
            if check_chunk(chunk):
                framed = self._frame(chunk)
                if size + len(framed) > JOIN_LIMIT:
                    self._sendall(b"".join(parts))
                    parts, size = [], 0
                parts.append(framed)
                size += len(framed)
        parts.append(self._conn.end_response())
        self._sendall(b"".join(parts))

    def _send_streamed(self, resp: AppResponse) -> None:
        """A generator (or file) body: each chunk goes out as soon as the app yields it."""
        pending = self._frame(resp.first)
        if resp.first:
            self._sendall(pending)
            pending = b""
        for chunk in resp.rest:
            if check_chunk(chunk):
                # The head waits for the first chunk only when there was no first
                # chunk to send it with (a file body iterated in blocks).
                self._sendall(pending + self._frame(chunk))
                pending = b""
        tail = pending + self._conn.end_response()
        if tail:
            self._sendall(tail)

    def _can_sendfile(self, resp: AppResponse, request: Request) -> bool:
        start = resp.start
        return policy.sendfile_applies(self._sendfile_ok, request.method, start.status_code,
                                      start.content_length, resp.file.filelike)

    def _send_file(self, resp: AppResponse) -> None:
        """Head, then the file by sendfile(2); the connection closes after it.

        ServerConnection frames every body byte it is told about, and the kernel's
        bytes bypass it, so it cannot count them toward Content-Length: the head
        says Connection: close and the close ends the cycle honestly.
        """
        filelike = resp.file.filelike
        length = resp.start.content_length
        offset = os.lseek(filelike.fileno(), 0, os.SEEK_CUR)  # the app may have seeked
        self._conn.refuse_keep_alive()
        self._sendall(self._frame(b""))
        try:
            if self._waits is None:
                sent = self.sock.sendfile(filelike, offset, length)
            else:
                sent = self._waits.sendfile(self.sock, filelike, offset, length)
        except OSError:
            self._end = _CUT
            raise
        self._body_bytes += sent
        if sent < length:
            # The file is shorter than its Content-Length: the client sees a truncated
            # response (the connection is cut), never a padded one.
            verdict = self._verdict(Failure.SHORT_FILE)
            self._end = verdict.end
            log.log(verdict.log_level, "file response for %s is shorter than its "
                    "Content-Length (%d < %d)", filelike, sent, length)

    # -- failures

    def _body_pending(self, body: WSGIInput) -> bool:
        """May part of the request body still be on its way? A GET's never is: it has
        none, even before the end of its message was parsed."""
        return policy.request_body_pending(
            finished=body.finished, chunked=self._request_chunked,
            content_length=self._request_length, bytes_read=body.bytes_read)

    def _verdict(self, failure: Failure, status: int = 500, app_called: bool = True) -> Any:
        conn = self._conn
        pending = self._body_pending(self._body)
        return policy.failure_verdict(
            failure, response_started=conn.response_started,
            client_may_send=policy.client_may_send(conn, body_unread=pending),
            status=status, app_called=app_called)

    def _refuse(self, exc: RemoteProtocolError) -> None:
        """The client broke HTTP/1.1 before the app ran: answer exc.status, then end."""
        log.debug("bad request from %s: %s", self.client_addr, exc)
        # The request was not read to its end: the client may still be sending.
        may_send = policy.client_may_send(self._conn, body_unread=True)
        verdict = policy.failure_verdict(Failure.BAD_REQUEST, response_started=False,
                                        client_may_send=may_send, status=exc.status,
                                        app_called=False)
        self._send_error(verdict.answer, str(exc), verdict.end)

    def _fail(self, exc: BaseException, environ: dict) -> tuple[str | None, list]:
        """Answer an exception from the app (or from its response); the status logged, if any."""
        body_error = self._body_error
        if self._end is _CUT:
            # The client went away (reset, timeout, closed): its consequence in the app
            # is not an application error.
            failure, status, message = Failure.CLIENT_GONE, 500, ""
        elif body_error is not None and isinstance(exc, IncompleteBodyError):
            # The client's fault (bad chunked framing, EOF inside the body): no traceback.
            failure, status, message = Failure.BAD_REQUEST, body_error.status, str(body_error)
        else:
            # The traceback is for the log, not the client.
            failure, status, message = Failure.APP_ERROR, 500, ""
        verdict = self._verdict(failure, status)
        log_failure(verdict.log_level, verdict.traceback, exc, self.client_addr, environ)
        if verdict.answer is not None:
            return self._send_error(verdict.answer, message, verdict.end)
        # Headers (maybe some body) are out: closing without the final chunk or the
        # missing bytes is the only honest way to say the response is incomplete.
        self._end = verdict.end
        if verdict.observed:
            return self._start.status, self._start.headers
        return None, []

    def _send_error(self, status: int, message: str, end: End) -> tuple[str | None, list]:
        data = self._conn.error_response(status, message)
        self._end = end
        try:
            self._send_raw(data)
        except OSError:
            self._end = _CUT
            return None, []
        self._body_bytes = 0  # an error page is the server's, not the app's (as in Gunicorn)
        return policy.status_line(status), policy.ERROR_HEADERS

    def _linger(self) -> None:
        """Half-close, then read and discard until the client closes (bounded)."""
        sock = self.sock
        try:
            if self._tls:
                send_close_notify(sock)  # TLS's own half-close, before TCP's
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + policy.LINGER_SECONDS
            received = 0
            while received < policy.LINGER_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                if self._waits is not None:
                    self._waits.heartbeat()  # a linger lasts up to a second: say we live
                data = sock.recv(RECV_SIZE)
                if not data:
                    break
                received += len(data)
        except OSError:
            pass

