"""The compiled app call and response of the event worker's common request (issue 19).

accel.native.respond (server/accel_respond.c) calls the app with a compiled
start_response and, for the common answer (a status and header list the Python
StartResponse has validated before, a list or tuple of at most one bytes object, a
head response.head_parts has framed before), frames the response as
ConnectionCycle.respond_whole would and returns its bytes (a body past WRITEV_SIZE:
(head, body), written with writelines, uncopied, as _send_ready writes it). Any other
answer goes on in Python (run.take_response). It only reads the Python caches
below, so every decision is still made by the Python code that fills them.

SERVE_PLAIN (accel_serve.c) runs HTTPProtocol's request cycle around those two for
each whole plain request of a read, handing every other case to the protocol's
Python methods at the point the Python cycle reaches them.

TAKE_PLAIN (accel_take.c) takes a plain head, and its Content-Length body when it is
all received, and builds its environ in one call, the connection moved as the Python
path moves it.

RESPOND, TAKE_PLAIN and SERVE_PLAIN are those functions, configured, or None (no extension, or
POLYCORN_NO_EXTENSIONS=1): ServingContext takes them when no access log or hook
needs the Python cycle.
"""

from __future__ import annotations

import time
from typing import Any

from polycorn.server import accel
from polycorn.server.http import cycle, response, state
from polycorn.server.workers.base import RunState
from polycorn.server.workers.event_phase import _CLOSED, _IDLE, _READING
from polycorn.server.wsgi import response as wsgi_response
from polycorn.server.wsgi.body import EMPTY_INPUT, WSGIInput
from polycorn.server.wsgi.run import take_response

# Parts of a ready (list) body (joined up to policy.JOIN_LIMIT) are copied into one
# buffer (cheaper than a writev) up to this size; a one-chunk body up to it is framed
# in one piece.
WRITEV_SIZE = 16 * 1024
# A request body is kept in memory up to this size, then in an anonymous temp file
# (event_protocol.py): the app is called with the whole body, and a large upload must
# not cost its size in RAM. TAKE_PLAIN takes a body already received up to this size.
SPOOL_LIMIT = 1024 * 1024


def _configured() -> Any:
    native = accel.native
    if native is None or not hasattr(native, "respond"):
        return None
    native.configure(wsgi_response.StartResponse, take_response,
                     wsgi_response._KNOWN_STATUSES, wsgi_response._KNOWN_HEADER_LISTS,
                     response._heads, cycle._HEAD_FROM, cycle._END_TO, RunState.RUNNING,
                     WRITEV_SIZE)
    return native.respond


def _request_type() -> Any:
    try:
        from polycorn.server.http.accel_connection import _REQUEST_TYPE
    except ImportError:  # no httptools (the `fast` extra): no AccelConnection either
        return None
    return _REQUEST_TYPE


def _take() -> Any:
    native = accel.native
    if RESPOND is None or REQUEST_TYPE is None or not hasattr(native, "take_plain"):
        return None  # (REQUEST_TYPE None: Request is not the slots class split_head builds)
    native.configure_take(state.REQ_IDLE, state.REQ_DONE, SPOOL_LIMIT, WSGIInput.from_bytes)
    return native.take_plain


RESPOND = _configured()
REQUEST_TYPE = _request_type()
# take_plain (server/accel_take.c): a whole plain request (with its body, if one), from
# an AccelConnection's buffer to (Request, environ) in one call, or None.
TAKE_PLAIN = _take()


def _serve() -> Any:
    if TAKE_PLAIN is None or not hasattr(accel.native, "serve_plain"):
        return None
    from polycorn.server.http.accel_connection import AccelConnection

    accel.native.configure_serve(REQUEST_TYPE, EMPTY_INPUT, _READING, _IDLE, _CLOSED,
                                 state.REQ_BODY, time.monotonic, state.REQ_ERROR,
                                 AccelConnection.receive_data, RunState.RUNNING,
                                 cycle.ConnectionCycle.start_next_cycle, cycle._REQ_NEXT_FROM,
                                 cycle._REQ_NEXT_TO, cycle._RESP_NEXT_FROM, cycle._RESP_NEXT_TO,
                                 cycle.NO_BODY)
    return accel.native.serve_plain


# serve_plain (server/accel_serve.c): HTTPProtocol._process's cycle for whole plain
# requests, or None.
SERVE_PLAIN = _serve()
# HTTPProtocol.data_received, compiled (accel_serve.c), or None: a read with serve_plain
# on goes from uvloop to the compiled cycle with no Python frame; the Python method
# takes any other.
DATA_RECEIVED = getattr(accel.native, "data_received", None) if SERVE_PLAIN else None
