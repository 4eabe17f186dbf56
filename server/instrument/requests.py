"""The request cycle's one reporting point: the access log, and the instruments beside it.

Every worker class already calls `access_log.log(environ, status, headers, bytes,
seconds)` once per answered request, when `access_log.enabled` (Gunicorn hooks
statsd at the same place: its statsd logger's access()). request_log() returns the
plain AccessLogger when no instrument is configured, so nothing changes then;
otherwise an ObservedAccessLog, enabled, that writes the access line (if the log is
on) and reports the request to the instruments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polycorn.server.instrument.layer import current
from polycorn.server.instrument.observer import Instruments
from polycorn.server.logs import AccessLogger


class ObservedAccessLog:
    """AccessLogger's interface (enabled, log); reports each request to the instruments."""

    enabled = True

    def __init__(self, access_log: AccessLogger, instruments: Instruments) -> None:
        self.access_log = access_log
        self.instruments = instruments
        self.format = access_log.format
        self._write = access_log.log if access_log.enabled else None

    def log(self, environ: Mapping[str, Any], status: str,
            response_headers: list[tuple[str, str]], response_length: int | None,
            request_time: float) -> None:
        """Log and report one request; never raises (a metric must not fail a request)."""
        if self._write is not None:
            self._write(environ, status, response_headers, response_length, request_time)
        try:
            code = int(status[:3])
        except (TypeError, ValueError):
            return  # StartResponse validated it; a status we cannot read is not counted
        self.instruments.request_finished(environ.get("REQUEST_METHOD", ""), code,
                                          request_time, response_length or 0)


def request_log(cfg: Any) -> AccessLogger | ObservedAccessLog:
    """What a worker hands its request cycle as `access_log` (built after the fork)."""
    access_log = AccessLogger(cfg)
    instruments = current()
    if not instruments.active:
        return access_log
    return ObservedAccessLog(access_log, instruments)
