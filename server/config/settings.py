"""The table of Polycorn's settings: Gunicorn's names, flags, defaults and meanings,
then Polycorn's own. Server hooks live in hooks.py, accepted-for-compatibility
Gunicorn settings in compat.py; SETTINGS joins the three.

A default that depends on the environment (PORT, WEB_CONCURRENCY, the current
directory, the current user) is an EnvironDefault, computed when a Config is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from polycorn.server.config import validators as v
from polycorn.server.config.compat import COMPAT_SETTINGS
from polycorn.server.config.hooks import HOOK_SETTINGS
from polycorn.server.config.setting import Setting


@dataclass(frozen=True)
class EnvironDefault:
    """A default computed from the environment (a mapping like os.environ) at load time."""

    describe: str  # shown in --help
    compute: Callable[[Mapping[str, str]], Any]

    def __str__(self) -> str:
        return self.describe


def _default_bind(environ: Mapping[str, str]) -> list[str]:
    # Gunicorn: PORT set -> listen on every interface at that port (the Heroku convention).
    port = environ.get("PORT")
    return [f"0.0.0.0:{port}"] if port else ["127.0.0.1:8000"]


def _default_workers(environ: Mapping[str, str]) -> Any:
    # A bad WEB_CONCURRENCY is passed on as a string so the validator names it.
    return environ.get("WEB_CONCURRENCY") or 1


def _default_sendfile(environ: Mapping[str, str]) -> bool:
    # Gunicorn: an unset sendfile setting defers to $SENDFILE, then defaults to on.
    if "SENDFILE" in environ:
        return environ["SENDFILE"].strip().lower() in ("y", "1", "yes", "true")
    return True


def logical_cwd(environ: Mapping[str, str]) -> str:
    """The current directory as the shell spelled it ($PWD) when it is the same directory.

    Keeps a `current -> releases/N` symlink in the path, so a re-exec after the
    symlink is switched starts in the new release (Gunicorn does the same).
    """
    real = os.getcwd()
    pwd = environ.get("PWD")
    if pwd:
        try:
            if os.path.samefile(pwd, real):
                return pwd
        except OSError:
            pass
    return real


def _default_ssl_context(config: Any, default_ssl_context_factory: Callable) -> Any:
    """Gunicorn's default ssl_context hook: the default factory's context, unchanged."""
    return default_ssl_context_factory()


def _s(name: str, flags: tuple[str, ...], default: Any, validate: Callable, help: str,
       action: str | None = None, section: str = "server", metavar: str | None = None) -> Setting:
    return Setting(name, flags, default, validate, help, action, section, metavar)


CONFIG_FILE_NAMES = ("polycorn.conf.py", "gunicorn.conf.py")

CORE_SETTINGS: tuple[Setting, ...] = (
    # -- config file
    _s("config", ("-c", "--config"), None, v.optional_str,
       "Config file: PATH, file:PATH or python:MODULE. Default: ./polycorn.conf.py, "
       "else ./gunicorn.conf.py, when present.",
       section="config file", metavar="CONFIG"),
    _s("wsgi_app", (), None, v.optional_str,
       "The application, MODULE:VARIABLE, when not given on the command line.",
       section="config file"),
    _s("check_config", ("--check-config",), False, v.as_bool,
       "Load the configuration and the application, then exit 0 (or 1 with the reason).",
       action="store_true", section="config file"),
    _s("print_config", ("--print-config",), False, v.as_bool,
       "Print every setting and its value, then exit as --check-config does.",
       action="store_true", section="config file"),
    # -- server socket
    _s("bind", ("-b", "--bind"),
       EnvironDefault("0.0.0.0:$PORT if PORT is set, else 127.0.0.1:8000", _default_bind),
       v.bind_list,
       "Address to listen on, repeatable: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N.",
       action="append", section="server socket", metavar="ADDRESS"),
    _s("backlog", ("--backlog",), 2048, v.positive_int,
       "Maximum number of pending connections (listen(2) backlog).",
       section="server socket", metavar="INT"),
    # -- worker processes
    _s("workers", ("-w", "--workers"),
       EnvironDefault("$WEB_CONCURRENCY, else 1", _default_workers), v.positive_int,
       "Number of worker processes.", section="worker processes", metavar="INT"),
    _s("worker_class", ("-k", "--worker-class"), "sync", v.worker_class,
       "Worker type: sync, thread (alias gthread), event, or asgi (ASGI 3 apps; "
       "aliases uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker). sync with "
       "--threads > 1 runs the thread worker.", section="worker processes", metavar="STRING"),
    _s("asgi_lifespan", ("--asgi-lifespan",), "auto", v.asgi_lifespan,
       "-k asgi: run the app's lifespan startup/shutdown: auto (when the app answers "
       "it), on (a failed startup stops the boot) or off.", section="worker processes",
       metavar="STRING"),
    _s("asgi_loop", ("--asgi-loop",), "auto", v.asgi_loop,
       "-k asgi: the event loop: auto (uvloop when installed), asyncio or uvloop.",
       section="worker processes", metavar="STRING"),
    _s("asgi_disconnect_grace_period", ("--asgi-disconnect-grace-period",), 3,
       v.non_negative_int,
       "-k asgi: seconds an app has, after its client went away (http.disconnect), "
       "before its request task is cancelled (0 = at once).", section="worker processes",
       metavar="INT"),
    _s("websocket_max_message_size", ("--websocket-max-message-size",), 16777216,
       v.positive_int,
       "-k asgi: the largest WebSocket message (and frame) accepted, in bytes; a larger "
       "one closes the connection with 1009.", section="worker processes", metavar="INT"),
    _s("root_path", ("--root-path",), "", v.root_path,
       "-k asgi: the ASGI scope's root_path (the app's mount point behind a proxy).",
       section="server mechanics", metavar="STRING"),
    _s("threads", ("--threads",), 1, v.positive_int,
       "Threads per worker for the thread worker.", section="worker processes",
       metavar="INT"),
    _s("worker_connections", ("--worker-connections",), 1000, v.positive_int,
       "Maximum simultaneous connections per event worker.", section="worker processes",
       metavar="INT"),
    _s("max_requests", ("--max-requests",), 0, v.non_negative_int,
       "Restart a worker after this many requests (0 = never).",
       section="worker processes", metavar="INT"),
    _s("max_requests_jitter", ("--max-requests-jitter",), 0, v.non_negative_int,
       "Add a random 0..N to max_requests per worker, so workers do not restart together.",
       section="worker processes", metavar="INT"),
    _s("timeout", ("-t", "--timeout"), 30, v.seconds,
       "Kill a worker silent for this many seconds (0 = never).",
       section="worker processes", metavar="SECONDS"),
    _s("graceful_timeout", ("--graceful-timeout",), 30, v.seconds,
       "Seconds a worker has to finish its requests after a graceful stop.",
       section="worker processes", metavar="SECONDS"),
    _s("keepalive", ("--keep-alive",), 2, v.seconds,
       "Seconds to wait for the next request on a keep-alive connection.",
       section="worker processes", metavar="SECONDS"),
    # -- security (request limits)
    # 8190, not Gunicorn's 4094: RFC 9112 section 3 recommends at least 8,000 octets.
    _s("limit_request_line", ("--limit-request-line",), 8190, v.non_negative_int,
       "Maximum size of the request line in bytes (0 = unlimited; Gunicorn's default is 4094).",
       section="security", metavar="INT"),
    _s("limit_request_fields", ("--limit-request-fields",), 100, v.non_negative_int,
       "Maximum number of request header fields.", section="security", metavar="INT"),
    _s("limit_request_field_size",
       ("--limit-request-field_size", "--limit-request-field-size"), 8190, v.non_negative_int,
       "Maximum size of one request header field in bytes (0 = unlimited).",
       section="security", metavar="INT"),
    _s("permit_obsolete_folding", ("--permit-obsolete-folding",), False, v.as_bool,
       "Accept obsolete line folding in request headers (RFC 9112 section 5.2).",
       action="store_true", section="security"),
    # -- server mechanics
    _s("preload_app", ("--preload",), False, v.as_bool,
       "Load the application in the master before forking workers.",
       action="store_true", section="server mechanics"),
    _s("reload", ("--reload",), False, v.as_bool,
       "Restart workers when code changes (development only).",
       action="store_true", section="server mechanics"),
    _s("chdir", ("--chdir",), EnvironDefault("the current directory", logical_cwd),
       v.directory, "Change to this directory before loading the application.",
       section="server mechanics", metavar="DIR"),
    _s("daemon", ("-D", "--daemon"), False, v.as_bool,
       "Detach from the terminal and run in the background.",
       action="store_true", section="server mechanics"),
    _s("raw_env", ("-e", "--env"), [], v.env_assignments,
       "Set an environment variable in the server, KEY=VALUE; repeatable.",
       action="append", section="server mechanics", metavar="ENV"),
    _s("pidfile", ("-p", "--pid"), None, v.optional_str,
       "Write the master's pid to this file.", section="server mechanics", metavar="FILE"),
    _s("user", ("-u", "--user"), EnvironDefault("the current user", lambda env: os.geteuid()),
       v.user_id, "Switch worker processes to this user (name or uid).",
       section="server mechanics", metavar="USER"),
    _s("group", ("-g", "--group"),
       EnvironDefault("the current group", lambda env: os.getegid()), v.group_id,
       "Switch worker processes to this group (name or gid).",
       section="server mechanics", metavar="GROUP"),
    _s("umask", ("-m", "--umask"), 0, v.umask,
       "File mode creation mask of the server (octal, e.g. 0o022).",
       section="server mechanics", metavar="INT"),
    _s("pythonpath", ("--pythonpath",), None, v.optional_str,
       "Comma-separated directories to add to the Python path.",
       section="server mechanics", metavar="STRING"),
    _s("forwarded_allow_ips", ("--forwarded-allow-ips",),
       EnvironDefault("$FORWARDED_ALLOW_IPS, else 127.0.0.1,::1",
                      lambda env: env.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")),
       v.ip_network_list,
       "Front-end IPs or networks trusted to set the scheme (--secure-scheme-headers) and "
       "forwarder headers (comma-separated, or *). REMOTE_ADDR is always the peer.",
       section="server mechanics", metavar="STRING"),
    _s("secure_scheme_headers", (),
       {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
       v.mapping,
       "Headers (upper case) and values that mark a request as HTTPS when sent by a "
       "trusted front end.", section="server mechanics"),
    _s("forwarder_headers", ("--forwarder-headers",), "SCRIPT_NAME,PATH_INFO",
       v.header_name_list,
       "Header names with '_' a trusted front end (--forwarded-allow-ips) may send; "
       "SCRIPT_NAME from it sets the mount point (comma-separated, upper case).",
       section="server mechanics", metavar="STRING"),
    _s("header_map", ("--header-map",), "drop", v.header_map,
       "Request headers whose name holds '_': drop them, refuse the request (400), or "
       "map them like dashes (dangerous).", section="server mechanics", metavar="STRING"),
    Setting("proxy_protocol", ("--proxy-protocol",), "off", v.proxy_protocol,
            "PROXY protocol (HAProxy's send-proxy): off, v1, v2 or auto (either version; "
            "the flag alone means auto). From a --proxy-allow-from source the header is "
            "then required on every connection; other sources are served as plain HTTP "
            "and refused with 403 if they send one.",
            section="server mechanics", metavar="MODE", optional_value=True, const="auto"),
    _s("proxy_allow_ips", ("--proxy-allow-from",), "127.0.0.1,::1", v.ip_network_list,
       "Front-end IPs or networks allowed to send PROXY protocol headers (comma-separated, "
       "or *); Unix-socket peers always are.",
       section="server mechanics", metavar="STRING"),
    _s("reuse_port", ("--reuse-port",), False, v.as_bool,
       "Set SO_REUSEPORT on listening sockets.",
       action="store_true", section="server mechanics"),
    _s("sendfile", ("--no-sendfile",),
       EnvironDefault("$SENDFILE (y/1/yes/true), else on", _default_sendfile), v.as_bool,
       "--no-sendfile: never use sendfile(2) for file responses.",
       action="store_false", section="server mechanics"),
    _s("initgroups", ("--initgroups",), False, v.as_bool,
       "When switching user, also take all the groups of that user.",
       action="store_true", section="server mechanics"),
    # -- logging
    _s("accesslog", ("--access-logfile",), None, v.optional_str,
       "Access log file ('-' = stdout); off when unset.", section="logging", metavar="FILE"),
    _s("access_log_format", ("--access-logformat",),
       '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"', v.access_log_format,
       "Access log format (Gunicorn's atoms; default: Apache combined).",
       section="logging", metavar="STRING"),
    _s("errorlog", ("--error-logfile", "--log-file"), "-", v.nonempty_str,
       "Error log file ('-' = stderr).", section="logging", metavar="FILE"),
    _s("loglevel", ("--log-level",), "info", v.log_level,
       "Error log level: debug, info, warning, error or critical.",
       section="logging", metavar="LEVEL"),
    _s("capture_output", ("--capture-output",), False, v.as_bool,
       "Send stdout and stderr to the error log file.",
       action="store_true", section="logging"),
    _s("logconfig", ("--log-config",), None, v.optional_str,
       "A logging.config.fileConfig file applied after the defaults.",
       section="logging", metavar="FILE"),
    _s("logconfig_dict", (), {}, v.mapping,
       "A logging.config.dictConfig dict applied after the defaults.", section="logging"),
    _s("logconfig_json", ("--log-config-json",), None, v.optional_str,
       "A JSON file for logging.config.dictConfig applied after the defaults.",
       section="logging", metavar="FILE"),
    # -- statsd (server/instrument/statsd.py: Gunicorn's metric names)
    _s("statsd_host", ("--statsd-host",), None, v.statsd_address,
       "Send Gunicorn's statsd metrics to HOST:PORT (UDP; port 8125 when omitted) or "
       "unix:PATH (a unix datagram socket); off when unset.",
       section="logging", metavar="STATSD_ADDR"),
    _s("statsd_prefix", ("--statsd-prefix",), "", v.statsd_prefix,
       "Prefix of every statsd metric name (a trailing '.' is added).",
       section="logging", metavar="STATSD_PREFIX"),
    _s("dogstatsd_tags", ("--dogstatsd-tags",), "", v.dogstatsd_tags,
       "Comma-separated dogstatsd tags added to every statsd metric, e.g. env:prod,app:web.",
       section="logging", metavar="DOGSTATSD_TAGS"),
    _s("enable_backlog_metric", ("--enable-backlog-metric",), False, v.as_bool,
       "Also send gunicorn.backlog, the connections waiting in the accept queues of the "
       "TCP listeners, once a second (Linux).", action="store_true", section="logging"),
    # -- ssl (server/tls.py; Gunicorn's names, flags and defaults)
    _s("certfile", ("--certfile",), None, v.optional_str,
       "TLS certificate file (PEM; may hold the key too): serve HTTPS on every listener.",
       section="ssl", metavar="FILE"),
    _s("keyfile", ("--keyfile",), None, v.optional_str,
       "TLS private key file (PEM).", section="ssl", metavar="FILE"),
    _s("ca_certs", ("--ca-certs",), None, v.optional_str,
       "CA certificates file that client certificates are verified against.",
       section="ssl", metavar="FILE"),
    _s("cert_reqs", ("--cert-reqs",), 0, v.cert_reqs,
       "Client certificates: 0 none, 1 optional, 2 required (ssl.CERT_*).",
       section="ssl", metavar="INT"),
    _s("ciphers", ("--ciphers",), None, v.optional_str,
       "TLS cipher suites (an OpenSSL cipher list; TLS 1.2 and below); default: Python's.",
       section="ssl", metavar="STRING"),
    _s("suppress_ragged_eofs", ("--suppress-ragged-eofs",), True, v.as_bool,
       "Read a TCP close without TLS close_notify as a plain end of input.",
       action="store_true", section="ssl"),
    _s("do_handshake_on_connect", ("--do-handshake-on-connect",), False, v.as_bool,
       "Accepted as in Gunicorn; Polycorn always completes the handshake in the worker "
       "right after accept, within --ssl-handshake-timeout.",
       action="store_true", section="ssl"),
    _s("ssl_handshake_timeout", ("--ssl-handshake-timeout",), 5, v.positive_seconds,
       "Seconds a client has to complete its TLS handshake (below --timeout); a stalled "
       "handshake holds a sync worker no longer.", section="ssl", metavar="SECONDS"),
    _s("ssl_context", (), _default_ssl_context, v.hook("config", "default_ssl_context_factory"),
       "Called in each worker to build its SSLContext: def ssl_context(config, "
       "default_ssl_context_factory), returning an ssl.SSLContext.", section="ssl"),
    # -- process naming
    _s("proc_name", ("-n", "--name"), None, v.optional_str,
       "Process name shown by ps (default: the application spec).",
       section="process naming", metavar="STRING"),
    # -- Polycorn's own
    _s("handoff", ("--handoff",), None, v.optional_str,
       "Unix socket path where masters of this service pass listening sockets.",
       section="polycorn", metavar="PATH"),
    _s("masters", ("--masters",), 1, v.positive_int,
       "Number of masters sharing the listeners on this host.",
       section="polycorn", metavar="N"),
    _s("health_check", ("--health-check",), None, v.url_path,
       "Path a new worker must answer with 2xx (in-process GET) before it counts as ready.",
       section="polycorn", metavar="PATH"),
    _s("upgrade_timeout", ("--upgrade-timeout",), 60, v.positive_seconds,
       "Seconds a new generation has to become ready before the upgrade is rolled back.",
       section="polycorn", metavar="SECONDS"),
    _s("deregister_delay", ("--deregister-delay",), 1.0, v.seconds,
       "Seconds a node stopping on TERM first spends out of rotation: its health path "
       "answers 503 and the cluster registry says stopping, while it still serves what "
       "it is sent; then it drains (0 = drain at once; INT and QUIT never wait).",
       section="polycorn", metavar="SECONDS"),
    _s("max_workers", ("--max-workers",), 0, v.non_negative_int,
       "Most workers this node may run when the cluster asks for more "
       "(0 = twice --workers).", section="polycorn", metavar="N"),
    _s("upgrade", ("--upgrade",), None, v.optional_str,
       "Control command: upgrade the master whose pid file this is (health-gated USR2), "
       "then exit with its outcome.", section="polycorn", metavar="PIDFILE"),
)

SETTINGS: tuple[Setting, ...] = CORE_SETTINGS + HOOK_SETTINGS + COMPAT_SETTINGS
