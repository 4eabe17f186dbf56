"""Gunicorn settings Polycorn does not implement but accepts, so a Gunicorn command
line or gunicorn.conf.py works unchanged.

Two policies, by section: IGNORED settings are harmless to drop (metrics, syslog,
control socket) and only earn a warning when set; REFUSED settings would change what
is served (TLS, PROXY protocol, HTTP/2, paste apps), so setting one is a ConfigError:
serving plain HTTP where TLS was asked for must never happen silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from polycorn.server.config.setting import Setting

IGNORED = "gunicorn compatibility (ignored)"
REFUSED = "gunicorn compatibility (refused)"


def _keep(value: Any) -> Any:
    return value


def _refuse_unless(allowed: Iterable[Any], reason: str) -> Callable[[Any], Any]:
    allowed = tuple(allowed)

    def validate(value: Any) -> Any:
        if value in allowed or (isinstance(value, list | tuple) and list(value) in allowed):
            return value
        raise ValueError(f"{value!r} is not supported: {reason}")

    return validate


def _ignored(name: str, flags: tuple[str, ...], default: Any, why: str,
             action: str | None = None) -> Setting:
    return Setting(name, flags, default, _keep, f"Ignored by Polycorn: {why}.", action,
                   IGNORED, "VALUE" if action is None else None)


def _refused(name: str, flags: tuple[str, ...], default: Any, why: str,
             allowed: Iterable[Any] = (None, False, "", "off"), action: str | None = None
             ) -> Setting:
    return Setting(name, flags, default, _refuse_unless(allowed, why),
                   f"Not supported: {why}.", action, REFUSED,
                   "VALUE" if action is None else None)


_METRICS = "Polycorn sends no statsd metrics"
_SYSLOG = "no syslog output; use logconfig_dict with a SysLogHandler"
_PARSER = "Polycorn's HTTP parser has one strict mode"
_CONTROL = "Polycorn has no control socket; use signals or polycorn-ctl"
_TLS = "Polycorn does not terminate TLS; put a TLS proxy in front of it"

# Settings whose only meaningful value is "off": naming them costs no warning.
SILENT = frozenset({"control_socket_disable"})

COMPAT_SETTINGS: tuple[Setting, ...] = (
    _ignored("spew", ("--spew",), False, "no line tracing", "store_true"),
    _ignored("statsd_host", ("--statsd-host",), None, _METRICS),
    _ignored("statsd_prefix", ("--statsd-prefix",), "", _METRICS),
    _ignored("dogstatsd_tags", ("--dogstatsd-tags",), "", _METRICS),
    _ignored("enable_backlog_metric", ("--enable-backlog-metric",), False, _METRICS,
             "store_true"),
    _ignored("syslog", ("--log-syslog",), False, _SYSLOG, "store_true"),
    _ignored("syslog_addr", ("--log-syslog-to",), None, _SYSLOG),
    _ignored("syslog_prefix", ("--log-syslog-prefix",), None, _SYSLOG),
    _ignored("syslog_facility", ("--log-syslog-facility",), "user", _SYSLOG),
    _ignored("disable_redirect_access_to_syslog", ("--disable-redirect-access-to-syslog",),
             False, _SYSLOG, "store_true"),
    _ignored("logger_class", ("--logger-class",), "gunicorn.glogging.Logger",
             "logging is configured with logconfig_dict, not a logger class"),
    _ignored("reload_engine", ("--reload-engine",), "auto", "one reloader engine"),
    _ignored("reload_extra_files", ("--reload-extra-file",), [], "only code is watched",
             "append"),
    _ignored("worker_tmp_dir", ("--worker-tmp-dir",), None,
             "workers do not use heartbeat files here"),
    _ignored("tmp_upload_dir", (), None, "request bodies are not spooled to files"),
    _ignored("enable_stdio_inheritance", ("-R", "--enable-stdio-inheritance"), False,
             "a daemonized server closes stdio", "store_true"),
    _ignored("control_socket", ("--control-socket",), None, _CONTROL),
    _ignored("control_socket_mode", ("--control-socket-mode",), None, _CONTROL),
    _ignored("control_socket_disable", ("--no-control-socket",), False, _CONTROL,
             "store_true"),
    _ignored("strip_header_spaces", ("--strip-header-spaces",), False, _PARSER, "store_true"),
    _ignored("permit_unconventional_http_method", ("--permit-unconventional-http-method",),
             False, _PARSER, "store_true"),
    _ignored("permit_unconventional_http_version", ("--permit-unconventional-http-version",),
             False, _PARSER, "store_true"),
    _ignored("casefold_http_method", ("--casefold-http-method",), False, _PARSER,
             "store_true"),
    _refused("certfile", ("--certfile",), None, _TLS),
    _refused("keyfile", ("--keyfile",), None, _TLS),
    _refused("ca_certs", ("--ca-certs",), None, _TLS),
    _refused("ciphers", ("--ciphers",), None, _TLS),
    _refused("proxy_protocol", ("--proxy-protocol",), "off",
             "the PROXY protocol is not supported", action="store_true"),
    _refused("protocol", ("--protocol",), "http", "only HTTP is served (no uwsgi protocol)",
             allowed=("http",)),
    _refused("http_protocols", ("--http-protocols",), "h1", "only HTTP/1.x is served",
             allowed=("h1", ["h1"])),
    _refused("paste", ("--paste", "--paster"), None,
             "PasteDeploy apps are not loaded; name the app as MODULE:CALLABLE"),
)
