"""The process's instruments: built from the settings by configure(), read by current().

configure() runs where logging is set up (the master at start and on each HUP), so
workers and sidecars (the cluster agent) inherit the instruments by fork, as
Gunicorn's workers inherit its statsd logger. Sinks come from factories: statsd is
built in; another sink (Prometheus, issue 17) registers its factory once, before
the master starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from polycorn.server.instrument.observer import Instruments, Observer
from polycorn.server.instrument.statsd import statsd_sink

# A factory gets the settings and returns its sink, or None when its settings leave it off.
SinkFactory = Callable[[Any], "Observer | None"]

_factories: list[SinkFactory] = [statsd_sink]
_current = Instruments()


def register_sink(factory: SinkFactory) -> None:
    """Add a sink factory; it is called at every configure() (start and HUP)."""
    if factory not in _factories:
        _factories.append(factory)


def current() -> Instruments:
    """This process's instruments (inactive, with no sink, until configure())."""
    return _current


def configure(cfg: Any, error_logger: logging.Logger | None = None) -> Instruments:
    """Build the sinks the settings ask for, replacing (and closing) the previous ones,
    and count the error log's warnings and errors when error_logger is given."""
    global _current
    sinks = [sink for factory in _factories if (sink := factory(cfg)) is not None]
    previous, _current = _current, Instruments(sinks)
    previous.close()
    if error_logger is not None:
        _install_level_counter(error_logger)
    return _current


class LevelCounter(logging.Filter):
    """Counts the error log's records by Gunicorn's level names (gunicorn.log.<level>).

    A filter of the error logger, not a handler: it sees the records logged there
    (under either of its names, polycorn.error or gunicorn.error) that pass the log
    level, and stays out of logger.handlers, which apps copy (the Flask recipe) and
    would then count their own records too. It never drops a record. It reads the
    instruments at each record, so a HUP's new instruments count at once.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        levelno = record.levelno
        if levelno < logging.WARNING:
            return True
        instruments = _current
        if not instruments.active:
            return True
        if levelno >= logging.CRITICAL:
            level = "critical"
        elif levelno >= logging.ERROR:
            level = "exception" if record.exc_info else "error"
        else:
            level = "warning"
        instruments.log_record(level)
        return True


def _install_level_counter(logger: logging.Logger) -> None:
    if not any(isinstance(f, LevelCounter) for f in logger.filters):
        logger.addFilter(LevelCounter())
