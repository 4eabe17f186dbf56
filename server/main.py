"""The `polycorn` command: read the configuration, bind, and run the master.

Every bad input ends in one line naming the problem and exit status 2
(configuration) or 1 (run time: bind, app, pid file); the traceback only with
--log-level debug.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

log = logging.getLogger("polycorn.error")


def fail(message: str, status: int, details: str = "") -> NoReturn:
    if details and log.isEnabledFor(logging.DEBUG):
        sys.stderr.write(details.rstrip() + "\n")
    sys.stderr.write(f"polycorn: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def apply_process_settings(cfg: Any) -> None:
    """Settings that shape this process before anything is loaded (Gunicorn's order)."""
    for key, value in cfg.env.items():
        os.environ[key] = value
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            fail(f"cannot change directory to {cfg.chdir}: {exc.strerror}", 2)
    # The app is imported from the working directory, as Gunicorn does.
    for path in reversed([os.getcwd(), *cfg.pythonpath_list]):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.umask(cfg.umask)


def daemonize() -> None:
    """Detach (double fork, new session), as `gunicorn -D` does."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    from polycorn.server.config.errors import ConfigError
    from polycorn.server.config.loader import load_config
    from polycorn.server.plugins import discover

    args = list(sys.argv[1:] if argv is None else argv)
    plugins = discover()
    try:
        cfg = load_config(args, os.environ, plugins=plugins)
    except ConfigError as exc:
        fail(str(exc), 2, getattr(exc, "details", ""))
    raise SystemExit(run(cfg, args, plugins))


def run(cfg: Any, args: list[str], plugins: list[Any]) -> int:
    from polycorn.server import pidfile
    from polycorn.server.app import AppImportError, load_app
    from polycorn.server.arbiter import Arbiter
    from polycorn.server.config.errors import ConfigError
    from polycorn.server.config.loader import load_config
    from polycorn.server.logs import setup_logging
    from polycorn.server.sockets import BindError, close_all, create_listeners

    if cfg.upgrade:
        from polycorn.server.upgrade_ctl import upgrade_command
        return upgrade_command(cfg)
    if cfg.print_config or cfg.check_config:
        from polycorn.server.config.check import run_check
        return run_check(cfg)
    setup_logging(cfg)
    apply_process_settings(cfg)
    if not cfg.app_spec:
        fail("no application module specified (MODULE:CALLABLE)", 2)
    try:
        sidecars = [s for plugin in plugins for s in plugin.sidecars(cfg)]
    except ConfigError as exc:
        fail(str(exc), 2)
    if cfg.pidfile:
        try:
            pidfile.check_free(cfg.pidfile)
        except pidfile.PidfileError as exc:
            fail(str(exc), 1)
    try:
        listeners = create_listeners(cfg.bind, cfg.backlog, os.environ)
    except BindError as exc:
        fail(str(exc), 1)
    app = None
    if cfg.preload_app:
        try:
            app = load_app(cfg.app_spec)
        except AppImportError as exc:
            close_all(listeners, unlink=True)
            fail(str(exc), 1, getattr(exc, "traceback", "") or "")
    if cfg.daemon:
        daemonize()
    if cfg.pidfile:
        try:
            pidfile.write(cfg.pidfile, os.getpid())
        except pidfile.PidfileError as exc:
            close_all(listeners, unlink=True)
            fail(str(exc), 1)

    def reload_config() -> Any:
        fresh = load_config(args, os.environ, plugins=plugins)
        setup_logging(fresh)
        return fresh

    arbiter = Arbiter(cfg, listeners, app=app, sidecars=sidecars, reload_config=reload_config)
    try:
        status = arbiter.run()
    except Exception as exc:  # a bug in the master: say it in one line, detail at debug
        log.debug("%s", traceback.format_exc())
        fail(f"master failed: {exc!r}", 1)
    finally:
        close_all(listeners, unlink=True)
    return status


if __name__ == "__main__":
    main()
