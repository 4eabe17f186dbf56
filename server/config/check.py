"""--check-config and --print-config: validate the configuration and load the app, then
exit 0, or 1 with the one-line reason (the traceback too at --log-level debug).

Runs before the server touches the process, so it applies just what importing the app
needs (raw_env, chdir, pythonpath) itself; the process exits right after.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from polycorn.server.app import AppImportError, load_app


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


def _prepare_import(cfg: Any) -> None:
    os.environ.update(cfg.env)
    os.chdir(cfg.chdir)
    for path in reversed([cfg.chdir, *cfg.pythonpath_list]):
        path = os.path.abspath(path)
        if path not in sys.path:
            sys.path.insert(0, path)


def run_check(cfg: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the configuration if asked, load the application; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if cfg.print_config:
        print(format_config(cfg), file=out)
    _prepare_import(cfg)
    try:
        load_app(cfg.app_spec)
    except AppImportError as exc:
        if cfg.loglevel == "debug" and exc.traceback:
            err.write(exc.traceback)
        print(f"polycorn: error: {exc}", file=err)
        return exc.exit_status
    return 0
