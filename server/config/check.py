"""--check-config and --print-config: validate the configuration and load the app, then
exit 0, or 1 with the one-line reason (the traceback too at --log-level debug).

Runs before the server touches the process, so it applies the process settings
importing the app needs (raw_env, chdir, pythonpath) itself; the process exits right after.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from polycorn.server.app import AppImportError, load_app
from polycorn.server.process import apply_process_settings


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
    if cfg.print_config:
        print(format_config(cfg), file=out)
    problem = apply_process_settings(cfg)
    if problem:
        print(f"polycorn: error: {problem}", file=err)
        return 1
    try:
        load_app(cfg.app_spec)
    except AppImportError as exc:
        if cfg.loglevel == "debug" and exc.traceback:
            err.write(exc.traceback)
        print(f"polycorn: error: {exc}", file=err)
        return exc.exit_status
    return 0
