"""Gunicorn settings Polycorn does not implement but accepts, so a Gunicorn command
line or gunicorn.conf.py works unchanged. Together with settings.py and hooks.py this
names every setting of Gunicorn 27 (tests/config/test_config_gunicorn_names.py reads
the installed Gunicorn's own list to keep it so).

Two policies, by section: IGNORED settings are harmless to drop (syslog,
control socket, knobs of features that are refused anyway) and only earn a warning
when set; REFUSED settings would change what is served (HTTP/2,
paste apps, dirty workers), so setting one is a ConfigError: serving plain HTTP/1.1 where
HTTP/2 was asked for must never happen silently. TLS is served (settings.py, server/tls.py).
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


_SYSLOG = "no syslog output; use logconfig_dict with a SysLogHandler"
_PARSER = "Polycorn's HTTP parser has one strict mode"
_CONTROL = "Polycorn has no control socket; use signals or polycorn-ctl"
_SSL_VERSION = ("deprecated and ignored since Gunicorn 21 (TLS 1.2 is the minimum); "
                "set the version in the ssl_context hook")
_HTTP2 = "only HTTP/1.x is served"
_DIRTY = "Polycorn has no dirty arbiter (Gunicorn's separate pool of dirty workers)"
_PASTE = "PasteDeploy apps are not loaded; name the app as MODULE:CALLABLE"

# Settings whose only meaningful value is "off": naming them costs no warning.
SILENT = frozenset({"control_socket_disable"})

COMPAT_SETTINGS: tuple[Setting, ...] = (
    _ignored("spew", ("--spew",), False, "no line tracing", "store_true"),
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
    _ignored("http_parser", ("--http-parser",), "auto", _PARSER),
    _ignored("default_proc_name", (), None, "Gunicorn sets it internally; use proc_name"),
    _ignored("uwsgi_allow_ips", ("--uwsgi-allow-from",), "127.0.0.1,::1",
             "the uwsgi protocol is not served"),
    _ignored("ssl_version", ("--ssl-version",), None, _SSL_VERSION),
    _ignored("http2_max_concurrent_streams", ("--http2-max-concurrent-streams",), 100, _HTTP2),
    _ignored("http2_initial_window_size", ("--http2-initial-window-size",), 65535, _HTTP2),
    _ignored("http2_max_frame_size", ("--http2-max-frame-size",), 16384, _HTTP2),
    _ignored("http2_max_header_list_size", ("--http2-max-header-list-size",), 65536, _HTTP2),
    _ignored("raw_paste_global_conf", ("--paste-global",), [], _PASTE, "append"),
    _ignored("dirty_timeout", ("--dirty-timeout",), 300, _DIRTY),
    _ignored("dirty_threads", ("--dirty-threads",), 1, _DIRTY),
    _ignored("dirty_graceful_timeout", ("--dirty-graceful-timeout",), 30, _DIRTY),
    _ignored("on_dirty_starting", (), None, _DIRTY),
    _ignored("dirty_post_fork", (), None, _DIRTY),
    _ignored("dirty_worker_init", (), None, _DIRTY),
    _ignored("dirty_worker_exit", (), None, _DIRTY),
    _refused("protocol", ("--protocol",), "http", "only HTTP is served (no uwsgi protocol)",
             allowed=("http",)),
    _refused("http_protocols", ("--http-protocols",), "h1", _HTTP2,
             allowed=("h1", ["h1"])),
    _refused("http2_cleartext", ("--http2-cleartext",), "off", _HTTP2),
    _refused("paste", ("--paste", "--paster"), None, _PASTE),
    _refused("dirty_apps", ("--dirty-app",), [], _DIRTY,
             allowed=(None, [], ()), action="append"),
    _refused("dirty_workers", ("--dirty-workers",), 0, _DIRTY, allowed=(None, 0, "0")),
)
