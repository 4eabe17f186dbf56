"""The `polycorn` command: read the configuration, bind, and run the master.

Every bad input ends in one line naming the problem and Gunicorn's exit status
(server/exitcodes.py): 2 for a command line not understood, 1 for an unusable
configuration or a run-time failure (bind, pid file), 3 when a worker cannot boot
(the app module fails to import), 4 when the module gives no app; the traceback
only with --log-level debug.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from polycorn.server import daemon, exitcodes, pidfile, proctitle
from polycorn.server.app import AppImportError, load_app
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config
from polycorn.server.config.settings import logical_cwd
from polycorn.server.handoff import HandoffError, HandoffOwner, acquire_or_fetch
from polycorn.server.logs import setup_logging
from polycorn.server.master.arbiter import Arbiter
from polycorn.server.master.peers import (
    ENV_INDEX,
    ENV_INDEX_LOCK,
    AlreadyRunning,
    MasterGroup,
    worker_share,
)
from polycorn.server.master.successor import Inherited, inherit_from_parent, reexec_argv
from polycorn.server.plugins import discover
from polycorn.server.process import apply_process_settings, umask
from polycorn.server.sockets import BindError, close_all, create_listeners

log = logging.getLogger("polycorn.error")


def fail(message: str, status: int, details: str = "") -> NoReturn:
    if details and log.isEnabledFor(logging.DEBUG):
        sys.stderr.write(details.rstrip() + "\n")
    sys.stderr.write(f"polycorn: error: {message}\n")
    sys.stderr.flush()
    daemon.finish(status)
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    proctitle.prepare()  # before anything changes os.environ (see proctitle.py)
    args = list(sys.argv[1:] if argv is None else argv)
    plugins = discover()
    try:
        cfg = load_config(args, os.environ, plugins=plugins)
    except ConfigError as exc:
        fail(str(exc), exc.exit_status, getattr(exc, "details", ""))
    status = run(cfg, args, plugins)
    daemon.finish(status)  # a daemon that returns before it was ready (already running)
    raise SystemExit(status)


def run(cfg: Any, args: list[str], plugins: list[Any]) -> int:
    """Run the command ``cfg`` asks for; the master's exit status."""
    if cfg.upgrade:
        from polycorn.server.upgrade_command import upgrade_command
        return upgrade_command(cfg)
    if cfg.print_config or cfg.check_config:
        from polycorn.server.config.check import run_check
        return run_check(cfg)
    return serve(cfg, args, plugins)


@dataclass(frozen=True)
class Origin:
    """How this master came to be: fresh, a USR2 successor (inherited) or started by a peer."""

    inherited: Inherited | None
    started_by_peer: bool
    index: int  # this master's place in a --masters group
    inherited_lock: int | None  # the index lock a starting peer took on our behalf
    cwd: str  # the directory before --chdir: a re-exec starts from here


def serve(cfg: Any, args: list[str], plugins: list[Any]) -> int:
    """Check, bind and run the master: Gunicorn's order of hooks, detach, preload and bind."""
    cwd = prepare_process(cfg)
    sidecars = load_sidecars(cfg, plugins)
    origin = read_origin(cwd)
    check_pidfile_free(cfg, origin)
    if int(cfg.masters) > 1:
        cfg.set("workers", worker_share(int(cfg.workers), int(cfg.masters), origin.index),
                "--masters")
    # Gunicorn's order from here: detach, preload, on_starting, bind; so hooks and the
    # preloaded app live in the process that serves (see daemon.py for the errors).
    if cfg.daemon and origin.inherited is None and not origin.started_by_peer:
        daemon.detach()
    app = preload(cfg)
    arbiter = start_arbiter(cfg, args, plugins, origin, app, sidecars)
    try:
        listeners, group = obtain_listeners(cfg, origin)
    except AlreadyRunning as exc:
        log.info("%s; exiting", exc)
        return 0
    except (BindError, HandoffError) as exc:
        fail(str(exc), 1)
    arbiter.attach(listeners, group)
    daemon.ready()
    return run_arbiter(arbiter, listeners, group)


def prepare_process(cfg: Any) -> str:
    """Checks, logging, title and process settings; the directory from before --chdir."""
    if int(cfg.masters) > 1 and not cfg.handoff:
        fail("--masters needs --handoff PATH: the masters pass the listeners through it",
             exitcodes.ERROR)
    try:
        setup_logging(cfg)
    except ConfigError as exc:  # a log file that cannot be opened, a bad logconfig
        fail(str(exc), exc.exit_status)
    proctitle.set_title("master", cfg.proc_name_resolved)
    startup_cwd = logical_cwd(os.environ)  # before --chdir: a re-exec starts from here
    problem = apply_process_settings(cfg)
    if problem:
        fail(problem, exitcodes.ERROR)
    if not cfg.app_spec:
        fail("no application module specified (MODULE:CALLABLE)", exitcodes.USAGE)
    return startup_cwd


def load_sidecars(cfg: Any, plugins: list[Any]) -> list[Any]:
    try:
        return [s for plugin in plugins for s in plugin.sidecars(cfg)]
    except ConfigError as exc:
        fail(str(exc), exc.exit_status)


def read_origin(cwd: str) -> Origin:
    """Take what the environment hands this master (sockets, index, lock), once."""
    inherited = inherit_from_parent(os.environ)
    started_by_peer = inherited is None and ENV_INDEX in os.environ
    index = int(os.environ.get(ENV_INDEX, "0") or 0)
    os.environ[ENV_INDEX] = str(index)  # a re-exec (USR2) keeps this master's index
    # The index lock the peer that started us took on our behalf; a USR2 successor gets
    # it by hand-off instead, so the variable must not outlive this process's start.
    lock_fd = os.environ.pop(ENV_INDEX_LOCK, "")
    inherited_lock = int(lock_fd) if started_by_peer and lock_fd.isdigit() else None
    return Origin(inherited, started_by_peer, index, inherited_lock, cwd)


def check_pidfile_free(cfg: Any, origin: Origin) -> None:
    # A master joining a hand-off group shares the pid file with a live owner.
    if cfg.pidfile and origin.inherited is None and not cfg.handoff:
        try:
            pidfile.check_free(cfg.pidfile)
        except pidfile.PidfileError as exc:
            fail(str(exc), 1)


def preload(cfg: Any) -> Any:
    """The app, loaded in the master with --preload; None otherwise."""
    if not cfg.preload_app:
        return None
    try:
        return load_app(cfg.app_spec)
    except AppImportError as exc:  # 3 or 4 as without --preload (Gunicorn says 1)
        fail(str(exc), exc.exit_status, getattr(exc, "traceback", "") or "")


def start_arbiter(cfg: Any, args: list[str], plugins: list[Any], origin: Origin, app: Any,
                  sidecars: list[Any]) -> Arbiter:
    """The master, its start-up hooks run (nworkers_changed, on_starting) before any bind."""

    def reload_config() -> Any:
        fresh = load_config(args, os.environ, plugins=plugins)
        if int(fresh.masters) > 1:  # HUP: this master's share of -w, as at start
            fresh.set("workers", worker_share(int(fresh.workers), int(fresh.masters),
                                              origin.index), "--masters")
        setup_logging(fresh)
        return fresh

    arbiter = Arbiter(cfg, app=app, sidecars=sidecars, reload_config=reload_config,
                      inherited=origin.inherited, argv=reexec_argv(), cwd=origin.cwd,
                      index=origin.index)
    try:
        arbiter.starting()  # nworkers_changed and on_starting, before any socket is bound
    except Exception as exc:
        fail(f"start-up hook failed: {exc!r}", 1, traceback.format_exc())
    return arbiter


def obtain_listeners(cfg: Any, origin: Origin) -> tuple[list[Any], MasterGroup | None]:
    """The listening sockets, and the hand-off group with --handoff: inherited from the
    master we replace, passed by (or bound for) the group, or bound afresh."""
    if origin.inherited is not None:
        return inherited_listeners(cfg, origin, origin.inherited)
    if cfg.handoff:
        return group_listeners(cfg, origin)
    return bind_owned(cfg), None


def inherited_listeners(cfg: Any, origin: Origin, inherited: Inherited
                        ) -> tuple[list[Any], MasterGroup | None]:
    listeners = inherited.listeners
    extra = inherited.extra_fds
    owner = None
    if "handoff_sock" in extra:
        owner = HandoffOwner(cfg.handoff, extra["handoff_lock"], listeners,
                             socket.socket(fileno=extra["handoff_sock"]))
    group = MasterGroup(cfg, listeners, owner, origin.index, extra.get("index_lock"),
                        reexec_argv(), origin.cwd) if cfg.handoff else None
    return listeners, group


def group_listeners(cfg: Any, origin: Origin) -> tuple[list[Any], MasterGroup]:
    index_lock = None
    if int(cfg.masters) > 1:
        if not origin.started_by_peer:  # an operator's fresh start forgets an old stop
            MasterGroup.stop_marker_clear(cfg.handoff)
        index_lock = MasterGroup.claim_index(cfg.handoff, origin.index, origin.inherited_lock)
    # Only the master that binds (the path's new owner) writes the pid file: the others
    # share it with that owner.
    listeners, owner = acquire_or_fetch(cfg.handoff, lambda: bind_owned(cfg))
    if owner is not None:  # nobody served the path: the node starts afresh
        MasterGroup.drain_marker_clear(cfg.handoff)
    group = MasterGroup(cfg, listeners, owner, origin.index, index_lock, reexec_argv(),
                        origin.cwd)
    return listeners, group


def bind_all(cfg: Any) -> list[Any]:
    with umask(cfg.umask):  # Gunicorn's --umask: the mode of Unix socket files
        return create_listeners(cfg.bind, cfg.backlog, os.environ, cfg.reuse_port)


def bind_owned(cfg: Any) -> list[Any]:
    """Write the pid file, then bind: Gunicorn's arbiter order, so whoever finds the port
    answering finds the pid file too (written after the bind, a script polling the port
    could read no pid file). Undone if the bind fails.

    A USR2 successor never comes here: it inherits the listeners and rewrites the pid file
    when promoted (successor.py), while the old master still owns it."""
    if cfg.pidfile:
        try:
            pidfile.write(cfg.pidfile, os.getpid())
        except pidfile.PidfileError as exc:
            fail(str(exc), 1)
    try:
        return bind_all(cfg)
    except BaseException:
        if cfg.pidfile:
            pidfile.remove_if_ours(cfg.pidfile, os.getpid())
        raise


def run_arbiter(arbiter: Arbiter, listeners: list[Any], group: MasterGroup | None) -> int:
    try:
        status = arbiter.run()
    except Exception as exc:  # a bug in the master: say it in one line, detail at debug
        log.debug("%s", traceback.format_exc())
        fail(f"master failed: {exc!r}", 1)
    finally:
        # Unix socket files outlive us when a successor or a peer still serves them.
        close_all(listeners, unlink=group is None and not arbiter.successor)
    if arbiter.halt_reason:
        fail(arbiter.halt_reason, status)
    return status


if __name__ == "__main__":
    main()
