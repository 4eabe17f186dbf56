"""Logging: the error log ("polycorn.error"), the access log ("polycorn.access") with
Gunicorn's atoms, and reopen() for USR1.

The access log compiles its format once into the few atom getters it names, so a
request pays only for the atoms the format uses, and nothing at all when the
access log is off (callers test `enabled` first). Both loggers are ordinary
`logging` loggers, so logconfig_dict / logconfig can reroute them, and each is also
registered under Gunicorn's name ("gunicorn.error", "gunicorn.access"): a logging
config written for Gunicorn, or an app copying getLogger("gunicorn.error").handlers,
reaches the very same logger objects.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import logging
import logging.config
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from polycorn.server import instrument
from polycorn.server.config.errors import ConfigError

ERROR_LOGGER = "polycorn.error"
ACCESS_LOGGER = "polycorn.access"
ERROR_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}

# Gunicorn's logger names, registered as aliases of ours (one Logger object, two names).
GUNICORN_NAMES = {"gunicorn.error": ERROR_LOGGER, "gunicorn.access": ACCESS_LOGGER}
# What Gunicorn merges a logconfig_dict over (its glogging.CONFIG_DEFAULTS), less the
# root and logger entries that would replace --error-logfile: a Gunicorn dict may name
# the "generic" formatter and the "console" / "error_console" handlers without
# defining them.
GUNICORN_DICT_DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}

_OURS = "_polycorn_handler"  # marks handlers this module installed, to replace them on reload
_captured_output: str | None = None  # the file stdout/stderr are sent to (capture_output)


# -- Gunicorn's logger names

def install_gunicorn_names() -> None:
    """Make logging.getLogger("gunicorn.error") (and "gunicorn.access") return our logger.

    The logging manager maps names to Logger objects; entering ours under Gunicorn's
    name as well is the whole trick. A placeholder left there by an earlier
    getLogger("gunicorn.error.x") hands its children over; a Logger created there
    before us (a library imported first) hands over its handlers. Idempotent.
    """
    manager = logging.Logger.manager
    with logging._lock:  # type: ignore[attr-defined]  # the manager's own lock
        for alias, name in GUNICORN_NAMES.items():
            ours = logging.getLogger(name)
            before = manager.loggerDict.get(alias)
            if before is ours:
                continue
            if isinstance(before, logging.PlaceHolder):
                children = list(before.loggerMap)
            elif isinstance(before, logging.Logger):
                for handler in before.handlers:
                    ours.addHandler(handler)
                children = [lg for lg in manager.loggerDict.values()
                            if isinstance(lg, logging.Logger) and lg.parent is before]
            else:
                children = []
            for child in children:
                child.parent = ours
            manager.loggerDict[alias] = ours
        manager._clear_cache()  # type: ignore[attr-defined]


def _reenable_aliases(configured: set[str]) -> None:
    """dictConfig(disable_existing_loggers=True) disables every logger it was not told
    about, by name: naming a logger under one of its two names must keep it enabled."""
    for alias, name in GUNICORN_NAMES.items():
        if configured & {alias, name}:
            logging.getLogger(name).disabled = False
    if configured & {"gunicorn.error", ERROR_LOGGER}:
        prefix = ERROR_LOGGER + "."
        for logger_name, logger in logging.Logger.manager.loggerDict.items():
            if logger_name.startswith(prefix) and isinstance(logger, logging.Logger):
                logger.disabled = False  # e.g. the cluster agent's "polycorn.error.cluster"


# -- error log and set-up

def setup_logging(cfg: Any) -> None:
    """Install the error and access log handlers for cfg; safe to call again on reload."""
    install_gunicorn_names()
    error_log = logging.getLogger(ERROR_LOGGER)
    access_log = logging.getLogger(ACCESS_LOGGER)
    error_log.setLevel(LEVELS[cfg.loglevel])
    access_log.setLevel(logging.INFO)
    for logger in (error_log, access_log):
        logger.propagate = False
        for handler in [h for h in logger.handlers if getattr(h, _OURS, False)]:
            logger.removeHandler(handler)
            handler.close()

    _capture_output(cfg)
    error_handler = _handler(cfg, cfg.errorlog, sys.stderr, "errorlog")
    error_handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    error_log.addHandler(error_handler)
    if cfg.accesslog is not None:
        access_handler = _handler(cfg, cfg.accesslog, sys.stdout, "accesslog")
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(access_handler)
    _apply_user_logging_config(cfg)
    # The instruments (statsd...) are set up with the logs, as Gunicorn's statsd logger
    # is, and count the error log's warnings and errors (gunicorn.log.<level>).
    instrument.configure(cfg, error_log)
    for warning in cfg.warnings:
        error_log.warning("%s", warning)


def _handler(cfg: Any, target: str, stream: Any, setting: str) -> logging.Handler:
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(stream)
    else:
        try:
            handler = logging.FileHandler(target)
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot open {target!r}: {exc.strerror}") from None
        _give_to_worker_user(cfg, handler.baseFilename)
    setattr(handler, _OURS, True)
    return handler


def _give_to_worker_user(cfg: Any, path: str) -> None:
    # Workers drop to cfg.user/cfg.group; they must still be able to reopen the file on USR1.
    if os.geteuid() == 0 and (cfg.user, cfg.group) != (0, 0):
        with contextlib.suppress(OSError):  # e.g. /dev/null
            os.chown(path, cfg.user, cfg.group)


def _capture_output(cfg: Any) -> None:
    global _captured_output
    _captured_output = cfg.errorlog if cfg.capture_output and cfg.errorlog != "-" else None
    if _captured_output:
        _redirect_stdio(_captured_output)


def _redirect_stdio(path: str) -> None:
    """Point fds 1 and 2 at the file, so prints and C-level writes land in the error log."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"errorlog: cannot open {path!r}: {exc.strerror}") from None
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def _apply_user_logging_config(cfg: Any) -> None:
    try:
        if cfg.logconfig_dict:
            _dict_config(cfg.logconfig_dict)
        elif cfg.logconfig_json:
            with open(cfg.logconfig_json) as f:
                _dict_config(json.load(f))
        elif cfg.logconfig:
            if not os.path.isfile(cfg.logconfig):
                raise ConfigError(f"logconfig: {cfg.logconfig!r} not found")
            logging.config.fileConfig(cfg.logconfig, disable_existing_loggers=False,
                                      defaults={"here": os.path.dirname(cfg.logconfig)})
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, AttributeError, ImportError, KeyError) as exc:
        raise ConfigError(f"logging configuration: {type(exc).__name__}: {exc}") from None


def _dict_config(given: Mapping[str, Any]) -> None:
    # A shallow merge, as Gunicorn does it: a "handlers" key replaces all the defaults.
    config = {**copy.deepcopy(GUNICORN_DICT_DEFAULTS), **given}
    logging.config.dictConfig(config)
    loggers = config.get("loggers")
    _reenable_aliases(set(loggers) if isinstance(loggers, Mapping) else set())


def reopen() -> None:
    """Reopen every log file (USR1), after logrotate moved them.

    Each FileHandler gets a fresh stream in place: the new file is opened before the
    old one is closed, under the handler's lock, so no record is lost or written twice.
    """
    if _captured_output:
        _redirect_stdio(_captured_output)
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    # dict.fromkeys: a handler shared by loggers, or a logger under two names (the
    # Gunicorn aliases), is reopened once.
    handlers = dict.fromkeys(h for logger in loggers for h in logger.handlers)
    for handler in handlers:
        if isinstance(handler, logging.FileHandler):
            _reopen_file_handler(handler)


def _reopen_file_handler(handler: logging.FileHandler) -> None:
    handler.acquire()
    try:
        old = handler.stream
        if old is None:  # delay=True and nothing written yet: opens on first record
            return
        old.flush()
        handler.stream = handler._open()
        old.close()
    finally:
        handler.release()


# -- access log

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM_KEY = re.compile(r"%\(([^)]*)\)")
# Apache's rule for log items: quote, backslash and control characters are escaped,
# so a header value can never forge a line or a field (log injection).
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f-\x9f]')


def escape(value: str) -> str:
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_ESCAPES)


class _ClfClock:
    """The %(t)s atom, [10/Oct/2000:13:55:36 -0700], formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            tm = time.localtime(second)
            self._text = (f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:"
                          f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} "
                          f"{time.strftime('%z', tm)}]")
            self._second = second
        return self._text


def _basic_auth_user(environ: Mapping[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return "-"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "-"
    return escape(decoded.partition(":")[0]) or "-"


def _request_header_key(name: str) -> str:
    # RFC 3875 section 4.1.18: headers become HTTP_* except the two CGI gave their own names.
    upper = name.upper().replace("-", "_")
    return upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper


def _environ_value(environ: Mapping[str, Any], name: str) -> Any:
    # Gunicorn matches {var}e case-insensitively; try the usual spellings before a scan.
    for key in (name, name.upper()):
        if key in environ:
            return environ[key]
    for key, value in environ.items():
        if key.lower() == name:
            return value
    return None


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return escape(value if isinstance(value, str) else str(value))


# An atom getter: (environ, status, response_headers, response_length, request_time) -> value
Getter = Callable[[Mapping[str, Any], str, list, "int | None", float], Any]


def _fixed_atoms(clock: _ClfClock) -> dict[str, Getter]:
    def env(key: str, default: str = "-") -> Getter:
        return lambda e, s, h, n, t: _text(e.get(key)) if e.get(key) is not None else default

    return {
        "h": env("REMOTE_ADDR"),
        "l": lambda e, s, h, n, t: "-",
        "u": lambda e, s, h, n, t: _basic_auth_user(e),
        "t": lambda e, s, h, n, t: clock.now(),
        "r": lambda e, s, h, n, t: _text(
            f"{e.get('REQUEST_METHOD', '-')} {e.get('RAW_URI') or e.get('PATH_INFO', '-')} "
            f"{e.get('SERVER_PROTOCOL', '-')}"),
        "s": lambda e, s, h, n, t: s.split(None, 1)[0] if s else "-",
        "m": env("REQUEST_METHOD"),
        "U": env("PATH_INFO"),
        "q": env("QUERY_STRING", ""),
        "H": env("SERVER_PROTOCOL"),
        "B": lambda e, s, h, n, t: n or 0,
        "b": lambda e, s, h, n, t: "-" if n is None else str(n),
        "f": env("HTTP_REFERER"),
        "a": env("HTTP_USER_AGENT"),
        "T": lambda e, s, h, n, t: int(t),
        "M": lambda e, s, h, n, t: int(t * 1000),
        "D": lambda e, s, h, n, t: int(t * 1_000_000),
        "L": lambda e, s, h, n, t: f"{t:.6f}",
        "p": lambda e, s, h, n, t: f"<{os.getpid()}>",
    }


def _dynamic_atom(key: str) -> Getter | None:
    """{header}i, {header}o and {variable}e, matched case-insensitively as in Gunicorn."""
    match = re.fullmatch(r"\{(.+)\}([ioe])", key, re.IGNORECASE)
    if match is None:
        return None
    name, kind = match.group(1).lower(), match.group(2).lower()
    if kind == "i":
        environ_key = _request_header_key(name)
        return lambda e, s, h, n, t: _text(e.get(environ_key))
    if kind == "o":
        def response_header(e, s, h, n, t):
            values = [value for header, value in h if header.lower() == name]
            return _text(", ".join(values)) if values else "-"
        return response_header
    return lambda e, s, h, n, t: _text(_environ_value(e, name))


class AccessLogger:
    """Writes one line per request in access_log_format; `enabled` is False when off."""

    def __init__(self, cfg: Any) -> None:
        self.enabled = bool(cfg.accesslog is not None or cfg.logconfig_dict
                            or cfg.logconfig_json or cfg.logconfig)
        self.format = cfg.access_log_format
        self._logger = logging.getLogger(ACCESS_LOGGER)
        fixed = _fixed_atoms(_ClfClock())
        self._getters: list[tuple[str, Getter]] = []
        for key in dict.fromkeys(_ATOM_KEY.findall(self.format)):  # unique, in order
            getter = fixed.get(key) or _dynamic_atom(key) or (lambda e, s, h, n, t: "-")
            self._getters.append((key, getter))

    def started(self) -> None:
        """A request began (the instruments' ObservedAccessLog counts it; a log line does not)."""

    def atoms(self, environ: Mapping[str, Any], status: str,
              response_headers: list[tuple[str, str]], response_length: int | None,
              request_time: float) -> dict[str, Any]:
        """The values of the atoms the format names (unknown atoms are "-")."""
        return {key: getter(environ, status, response_headers, response_length, request_time)
                for key, getter in self._getters}

    def log(self, environ: Mapping[str, Any], status: str,
            response_headers: list[tuple[str, str]], response_length: int | None,
            request_time: float) -> None:
        """Log one request; never raises (a logging bug must not fail the request)."""
        if not self.enabled:
            return
        try:
            line = self.format % self.atoms(environ, status, response_headers,
                                            response_length, request_time)
            self._logger.info(line)
        except Exception:
            logging.getLogger(ERROR_LOGGER).exception("access log failed")


install_gunicorn_names()  # before any app module asks for getLogger("gunicorn.error")
