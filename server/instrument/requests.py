"""The request cycle's one reporting point: the access log, and the instruments beside it.

Every worker class already calls `access_log.log(environ, status, headers, bytes,
seconds)` once per answered request, when `access_log.enabled` (Gunicorn hooks
statsd at the same place: its statsd logger's access()). request_log() returns the
plain AccessLogger when no instrument is configured, so nothing changes then;
otherwise an ObservedAccessLog, enabled, that writes the access line (if the log is
on) and reports the request to the instruments.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from polycorn.server.instrument.layer import current
from polycorn.server.instrument.observer import Instruments
from polycorn.server.logs import AccessLogger

log = logging.getLogger("polycorn.error")


class ObservedAccessLog:
    """AccessLogger's interface (enabled, log); reports each request to the instruments."""

    enabled = True

    def __init__(self, access_log: AccessLogger, instruments: Instruments) -> None:
        self.access_log = access_log
        self.instruments = instruments
        self.format = access_log.format
        self._write = access_log.log if access_log.enabled else None
        # One sink (the usual case): call it directly, one call less per request.
        sinks = instruments.sinks
        self._report = sinks[0].request_finished if len(sinks) == 1 else \
            instruments.request_finished
        self.started = sinks[0].request_started if len(sinks) == 1 else \
            instruments.request_started

    def log(self, environ: Mapping[str, Any], status: str,
            response_headers: list[tuple[str, str]], response_length: int | None,
            request_time: float) -> None:
        """Log and report one request; never raises (a metric must not fail a request)."""
        if self._write is not None:
            self._write(environ, status, response_headers, response_length, request_time)
        try:
            # Body bytes the app read (wsgi.input counts them; a body left unread is not in).
            body = environ.get("wsgi.input")
            self._report(environ.get("REQUEST_METHOD", ""), int(status[:3]), request_time,
                         response_length or 0, getattr(body, "bytes_read", 0))
        except Exception:
            # A status we cannot read (StartResponse validated it), or a sink's bug.
            log.exception("instrument: request not reported (status %r)", status)


def request_log(cfg: Any) -> AccessLogger | ObservedAccessLog:
    """What a worker hands its request cycle as `access_log` (built after the fork)."""
    access_log = AccessLogger(cfg)
    instruments = current()
    if not instruments.active:
        return access_log
    return ObservedAccessLog(access_log, instruments)
