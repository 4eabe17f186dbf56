"""--check-config and --print-config: validate the configuration, load the app and run
--health-check once, as a worker would before it counts as ready; then exit with the
status the server itself would have (server/exitcodes.py): 0; 1 for an unusable
setting or TLS file (unreadable, not PEM, a key that does not match the certificate);
3 when the app module fails to import or the health check fails; 4 when the module
gives no app; and 2 when all that passed but the config file holds a likely
misspelt setting name (`worker = 4`), which the server would only warn about.

One line per problem (the traceback too at --log-level debug). Runs before the server
touches the process, so it applies the process settings importing the app needs
(raw_env, chdir, pythonpath) itself; the process exits right after.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, TextIO

from polycorn.server import exitcodes
from polycorn.server.app import AppImportError, load_app
from polycorn.server.process import apply_process_settings
from polycorn.server.tls import TLSConfigError, build_context


def format_config(cfg: Any) -> str:
    """Every setting as `name = value`, sorted by name (Gunicorn's --print-config layout)."""
    items = sorted((setting.name, value) for setting, value in cfg.settings())
    width = max(len(name) for name, _ in items)
    lines = []
    for name, value in items:
        if callable(value):
            value = f"<{getattr(value, '__qualname__', type(value).__name__)}()>"
        lines.append(f"{name:{width}} = {value}")
    return "\n".join(lines)


def run_check(cfg: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the configuration if asked, load the application; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    debug = cfg.loglevel == "debug"
    if cfg.print_config:
        print(format_config(cfg), file=out)
    for warning in cfg.warnings:
        print(f"polycorn: warning: {warning}", file=err)
    problem = apply_process_settings(cfg)
    if problem:
        print(f"polycorn: error: {problem}", file=err)
        return exitcodes.ERROR
    try:
        build_context(cfg)  # the certificate and key as each worker will load them
    except TLSConfigError as exc:
        print(f"polycorn: error: TLS: {exc}", file=err)
        return exitcodes.ERROR
    try:
        app = load_app(cfg.app_spec)
    except AppImportError as exc:
        if debug and exc.traceback:
            err.write(exc.traceback)
        print(f"polycorn: error: {exc}", file=err)
        return exc.exit_status
    if cfg.health_check:
        status = _health_check(cfg, app, err, debug)
        if status != exitcodes.OK:
            return status
    if cfg.typos:
        print(f"polycorn: error: the config file names {len(cfg.typos)} setting(s) that "
              f"do not exist (see the warnings above)", file=err)
        return exitcodes.USAGE
    return exitcodes.OK


def _health_check(cfg: Any, app: Any, err: TextIO, debug: bool) -> int:
    """GET --health-check from the app in-process, as each new worker does."""
    from polycorn.server.wsgi.handler import WSGIHandler  # the server's own request path

    path = cfg.health_check
    status, error = WSGIHandler(app, cfg, None, None).probe_health(path)
    if error is not None:
        if debug:
            err.write("".join(traceback.format_exception(error)))
        print(f"polycorn: error: health check GET {path}: the application raised "
              f"{type(error).__name__}: {error}", file=err)
        return exitcodes.WORKER_BOOT_ERROR
    if not 200 <= status < 300:
        print(f"polycorn: error: health check GET {path} answered {status}", file=err)
        return exitcodes.WORKER_BOOT_ERROR
    return exitcodes.OK
