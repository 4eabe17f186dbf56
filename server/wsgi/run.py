"""Calling a WSGI application, apart from any socket I/O.

run_app calls the app and advances its iterable to the first non-empty chunk: the
moment PEP 3333 fixes the status (an app may call start_response lazily, or again
with exc_info, until then). The caller frames and writes what it returns, so the
blocking handler and the event worker share one implementation of the app call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from polycorn.server.wsgi.response import FileWrapper, StartResponse

WSGIApp = Callable[[dict[str, Any], StartResponse], Any]

_NOTHING: Iterator[bytes] = iter(())


class AppResponse:
    """What the app answered: the declared status and headers, and its body to send.

    Send, in order: `first`, then every chunk of `rest` (each must be checked with
    check_chunk), unless `file` is set and the caller sends the file itself. Always
    call close() afterwards, on success, error or client disconnect alike.
    """

    __slots__ = ("start", "first", "rest", "file", "in_memory", "_iterable", "_closed")

    def __init__(self, start: StartResponse, first: bytes, rest: Iterator[Any],
                 file: FileWrapper | None, in_memory: bool, iterable: Any) -> None:
        self.start = start  # status, status_code, reason, headers, wire_headers, content_length
        self.first = first  # the first non-empty chunk; b"" means the body is empty
        self.rest = rest
        self.file = file  # the app returned wsgi.file_wrapper(...): sendfile may apply
        self.in_memory = in_memory  # a list or tuple: every chunk is ready, join them
        self._iterable = iterable
        self._closed = False

    def close(self) -> None:
        """Call the app iterable's close() exactly once (PEP 3333 requires it)."""
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()


def check_chunk(chunk: Any) -> bytes:
    if not isinstance(chunk, bytes):
        raise TypeError(f"the app yielded {type(chunk).__name__}, not bytes")
    return chunk


def run_app(app: WSGIApp, environ: dict[str, Any],
            start: StartResponse | None = None) -> AppResponse:
    """Call app and advance its iterable until the status is final.

    `start` carries the write() sink for a caller that writes at once; without one,
    chunks given to write() are buffered and returned at the front of `first`. An
    exception from the app (the call, or its iterable before the first non-empty
    chunk) propagates after the iterable is closed; the caller answers it.
    """
    if start is None:
        start = StartResponse()
    return take_response(app(environ, start), start)


def take_response(iterable: Any, start: StartResponse) -> AppResponse:
    """run_app after the app call: advance `iterable` until the status is final.

    The compiled accelerator (server/accel_respond.c) calls the app itself and hands
    any answer it does not frame itself to this function.
    """
    try:
        if isinstance(iterable, FileWrapper):
            _require_status(start)
            start.headers_sent = True
            return AppResponse(start, _flush_written(start, b""), iterable, iterable,
                               False, iterable)
        rest = iter(iterable)
        first = b""
        # The checks are inlined for the common case (this runs on every request);
        # the helpers raise for the uncommon one.
        for chunk in rest:
            if type(chunk) is not bytes:
                check_chunk(chunk)
            if chunk:
                first = chunk
                break
        else:
            rest = _NOTHING
        if start.status is None:
            _require_status(start)
        start.headers_sent = True
        if start.written:
            first = _flush_written(start, first)
        return AppResponse(start, first, rest, None, type(iterable) in (list, tuple), iterable)
    except BaseException:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
        raise


def _require_status(start: StartResponse) -> None:
    if start.status is None:
        raise AssertionError("the app returned without calling start_response()")


def _flush_written(start: StartResponse, first: bytes) -> bytes:
    """Buffered write() output goes before the iterable's first chunk."""
    if not start.written:
        return first
    written = b"".join(start.written) + first
    start.written.clear()
    return written
