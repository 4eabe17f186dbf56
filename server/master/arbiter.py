"""The master of one node, composed: the object Gunicorn's hooks receive as `server`.

`Arbiter` builds the parts (state.py, pool.py, reload.py, successor.py,
sidecars.py, stop.py, peers.py, loop.py), hands each the references and
callbacks it needs, and holds nothing else of theirs: it keeps Gunicorn's
attribute names for hooks (cfg, pid, app, log, num_workers, WORKERS,
LISTENERS, proc_name), its signal handlers (`handle_<name>`, the loop's
table), the turn's duties in Gunicorn's order, start-up and clean-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

from polycorn.server import pidfile, systemd
from polycorn.server.instrument import master as instrument_master
from polycorn.server.liveness import SlotTable
from polycorn.server.master.loop import SIGNALS, MasterLoop
from polycorn.server.master.peers import GroupStop, MasterGroup
from polycorn.server.master.pool import WorkerPool
from polycorn.server.master.reload import Reload
from polycorn.server.master.sidecars import Announcer, SidecarCommands
from polycorn.server.master.state import (
    CurrentConfig,
    HaltServer,
    Lifecycle,
    MasterState,
    Rotation,
    describe_status,
    worker_class,
)
from polycorn.server.master.stop import Stop
from polycorn.server.master.successor import (
    Inherited,
    Predecessor,
    StatusFile,
    Succession,
    reexec_argv,
    status_path,
)
from polycorn.server.master.system import System
from polycorn.server.sidecar import Sidecar, SidecarSupervisor
from polycorn.server.sockets import Listener
from polycorn.server.tls import tls_enabled

log = logging.getLogger("polycorn.error")


class Arbiter:
    """The master process of one node (Gunicorn's `server` in hooks)."""

    def __init__(self, cfg: Any, *, app: Any = None, sidecars: list[Sidecar] | None = None,
                 reload_config: Any = None, inherited: Inherited | None = None,
                 argv: list[str] | None = None, cwd: str = "", index: int = 0,
                 system: System | None = None) -> None:
        self.system = system or System()
        self.started_at = self.system.monotonic()  # a generation's boot time is from here
        self.log = log
        self.pid = os.getpid()
        self.app = app  # loaded here only with --preload
        self.index = index
        self.listeners: list[Listener] = []
        self.group: MasterGroup | None = None
        self.exit_status = 0
        self.halt_reason = ""  # why the master stopped itself, for the command's last line
        self.config = CurrentConfig(cfg)
        self.lifecycle = Lifecycle()
        self.slots = SlotTable()
        self.rotation = Rotation(self.slots)
        self.supervisor = SidecarSupervisor(sidecars or [], self._close_for_sidecar,
                                            cfg.proc_name_resolved, self.system)
        self.announcer = Announcer(self.supervisor, self.lifecycle, self.config, self.rotation,
                                   pid=self.pid, counts=self._worker_counts)
        self.pool = WorkerPool(self.system, self.lifecycle, self.config, self.slots,
                               pid=self.pid, server=self, app=app,
                               close_in_child=self._close_for_worker,
                               on_change=self.announcer.state,
                               on_candidate_failed=self._candidate_failed,
                               other_child=self._other_child_exited)
        # Named apart from Gunicorn's arbiter methods (reload, stop) a hook might call.
        self.hot_reload = Reload(self.system, self.lifecycle, self.config, self.pool,
                                 self.announcer, server=self, reload_config=reload_config,
                                 retitle=self.retitle)
        self.status = StatusFile(self.system, status_path(cfg.pidfile, index), pid=self.pid,
                                 index=index)
        self.predecessor = Predecessor(self.system, inherited, self.lifecycle, self.config,
                                       self.status, pid=self.pid)
        self.succession = Succession(self.system, self.lifecycle, self.config, self.rotation,
                                     self.announcer, self.status, self.predecessor, server=self,
                                     argv=argv or reexec_argv(), cwd=cwd or os.getcwd(),
                                     on_promoted=self._drain_for_successor)
        self.shutdown = Stop(self.system, self.lifecycle, self.config, self.pool, self.rotation,
                         self.announcer, self.succession, self.supervisor, pid=self.pid)
        self.commands = SidecarCommands(self.supervisor, self.announcer, self.pool,
                                        self.hot_reload, self.succession,
                                        set_drained=self.set_drained)
        self.loop = MasterLoop(self.system, self.lifecycle,
                               {name: getattr(self, f"handle_{name}") for name in SIGNALS.values()},
                               duties=self.duties, timeout=self.next_timeout, readers=self.readers)

    def attach(self, listeners: list[Listener], group: MasterGroup | None = None) -> None:
        """The sockets (bound after on_starting, as in Gunicorn) and the master group."""
        self.listeners = listeners
        self.group = group
        self.pool.attach(listeners)
        self.succession.attach(listeners, group)
        self.predecessor.attach(group)
        self.shutdown.attach(group)
        inherited = self.predecessor.inherited
        if (inherited is not None and inherited.drained) or (group and group.node_drained):
            # Drained before an upgrade, or by another master of the node: the workers
            # answer the health path with 503 from their first request, with no window
            # in which a balancer sees 200.
            self.rotation.follow(True)
        if group is not None and inherited is None:
            group.join()  # a new generation joins once promoted

    # ---- what Gunicorn's hooks read from `server` ---------------------------

    @property
    def cfg(self) -> Any:
        return self.config.cfg

    @property
    def num_workers(self) -> int:
        return self.pool.num_workers

    @property
    def workers(self) -> dict[int, Any]:
        return self.pool.workers

    @property
    def proc_name(self) -> str:
        return self.cfg.proc_name_resolved

    @property
    def LISTENERS(self) -> list[Listener]:  # noqa: N802 - Gunicorn's name
        return self.listeners

    @property
    def WORKERS(self) -> dict[int, Any]:  # noqa: N802 - Gunicorn's name
        """pid -> worker object, as Gunicorn's arbiter keeps them (a fresh dict)."""
        return {pid: rec.worker for pid, rec in self.pool.workers.items()}

    @property
    def successor(self) -> int:
        """pid of the master we handed over to (USR2), 0 if none."""
        return self.succession.successor

    # ---- start and stop -----------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit status."""
        try:
            self.start()
            self.loop.run()
        except HaltServer as exc:
            self.halt_reason = exc.reason
            self.exit_status = exc.exit_status
            self.predecessor.report_failed(exc.reason)  # the old master reports it
            self.shutdown.kill_everything()
        finally:
            self.cleanup()
        return self.exit_status

    def starting(self) -> None:
        """Gunicorn's first hooks, before any socket is bound: nworkers_changed(server,
        workers, None) as its arbiter's setup sets the count, then on_starting."""
        log.info("Starting polycorn %s", _version())
        self.cfg.nworkers_changed(self, self.num_workers, None)
        self.cfg.on_starting(self)

    def start(self) -> None:
        self.loop.install()
        scheme = "https" if tls_enabled(self.cfg) else "http"  # Gunicorn says https too
        for listener in self.listeners:
            log.info("Listening at: %s://%s (%s)", scheme, listener, self.pid)
        log.info("Using worker: %s", worker_class(self.cfg).__name__)
        if self.cfg.worker_class != getattr(self.cfg, "worker_class_resolved", None) == "asgi":
            log.info("-k %s is served by Polycorn's own ASGI worker (-k asgi); "
                     "its --asgi-* settings apply", self.cfg.worker_class)
        self.announcer.hello(self.listeners)
        if self.runs_sidecars():
            self.supervisor.start_due()
        self.announcer.state("booting")
        if not self.predecessor.active:
            self.status.record("running")

    def cleanup(self) -> None:
        if self.group is not None:
            self.group.close(successor=bool(self.successor))
        if self.cfg.pidfile and not self.successor:  # else the new master owns it now
            pidfile.remove_if_ours(self.cfg.pidfile, self.pid)
        if not self.successor:  # else the new master has made the status file its own
            self.status.remove()
        with contextlib.suppress(Exception):
            self.cfg.on_exit(self)
        log.info("Shutting down: Master")

    # ---- one turn of the loop, after the signals ------------------------------

    def duties(self) -> None:
        self.pool.reap()
        self.predecessor.keep_pidfile()
        if self.runs_sidecars():
            self.supervisor.start_due()
        leaving = self.lifecycle.leaving
        if self.group is not None:
            self.follow_group(self.group, leaving)
        if self.lifecycle.state is MasterState.DEREGISTERING:
            self.shutdown.advance_deregister()
            return
        if self.lifecycle.leaving:
            self.shutdown.advance_stop()
            return
        self.pool.enforce_timeouts()
        self.hot_reload.follow_code_changes()
        self.hot_reload.advance()
        self.succession.advance()
        self.pool.manage()
        self.notice_readiness()

    def next_timeout(self) -> float:
        if self.lifecycle.state is MasterState.BOOTING or self.hot_reload.in_progress:
            return 0.05  # readiness is polled from shared memory while booting
        timeout = 0.5
        if self.group is not None:
            timeout = min(timeout, self.group.seconds_to_tick())
        if self.lifecycle.state is MasterState.DEREGISTERING:
            timeout = min(timeout, self.shutdown.seconds_to_deregistered())
        return timeout

    def readers(self) -> dict[int, Any]:
        """fd -> what the loop does when it is readable."""
        readers = self.commands.readers()
        group = self.group
        if group is not None:
            for fd in group.select_fds():
                readers[fd] = lambda fd=fd: group.serve_handoff_request(fd)
        readers.update(self.predecessor.readers())
        readers.update(self.succession.readers())
        return readers

    def notice_readiness(self) -> None:
        ready_any = self.pool.notice_readiness()
        if self.lifecycle.state is MasterState.BOOTING and self.pool.serving_ready():
            self.lifecycle.state = MasterState.READY
            self.lifecycle.ever_ready = True
            log.info("ready: %s workers serving", len(self.pool.live()))
            instrument_master.generation_ready(self.system.monotonic() - self.started_at)
            self.cfg.when_ready(self)
            if self.predecessor.active:
                self.predecessor.report_ready()
            else:
                systemd.notify(f"READY=1\nMAINPID={self.pid}")
            self.announcer.state("ready")
            self.lifecycle.run_deferred()
            return
        if ready_any:
            self.announcer.state()

    def follow_group(self, group: MasterGroup, leaving: bool) -> None:
        """The peers' markers: a node-wide drain, a stop asked by another master."""
        group.tick(leaving)
        if group.node_drained != self.rotation.drained:
            log.info("master %s: node %s by another master (marker %s.drained)",
                     self.pid, "drained" if group.node_drained else "undrained", group.path)
            self.follow_drain(group.node_drained)
        request = None if leaving else group.requested_stop()
        if request is not None:
            log.info("master %s: a peer master asked the group to stop (%s)", self.pid,
                     request.value)
            if request is GroupStop.DEREGISTER:
                self.shutdown.stop_gracefully("a peer master's TERM", announce=False)
            else:
                self.shutdown.begin_stop(graceful=True, announce=False)

    # ---- the signal table (run in the loop, not in signal context) ------------

    def handle_chld(self) -> None:
        pass  # reaping happens on every turn of the loop

    def handle_hup(self) -> None:
        self.hot_reload.start("HUP")

    def handle_term(self) -> None:
        self.shutdown.stop_gracefully("TERM")

    def handle_int(self) -> None:
        self.shutdown.begin_stop(graceful=False)

    handle_quit = handle_int

    def handle_ttin(self) -> None:
        self.pool.set_num_workers(self.pool.num_workers + 1)

    def handle_ttou(self) -> None:
        self.pool.set_num_workers(self.pool.num_workers - 1)

    def handle_usr1(self) -> None:
        from polycorn.server.logs import reopen
        reopen()
        self.pool.kill_all(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        self.succession.start()

    def handle_winch(self) -> None:
        # Gunicorn's meaning: stop the workers, keep the master (only when daemonized,
        # so that a terminal resize of a foreground server is harmless).
        if self.cfg.daemon:
            log.info("graceful stop of workers (WINCH)")
            self.pool.set_num_workers(0)
        else:
            log.info("SIGWINCH ignored: not daemonized")

    # ---- wiring between the parts ------------------------------------------------

    def _worker_counts(self) -> tuple[int, int]:
        return self.pool.ready_count(), self.pool.num_workers

    def _candidate_failed(self, reason: str) -> None:
        self.hot_reload.abort(reason)

    def _drain_for_successor(self) -> None:
        self.shutdown.begin_stop(graceful=True, announce=False, handing_over=True)

    def _other_child_exited(self, pid: int, status: int) -> None:
        """A reaped child that is no worker: a sidecar, our successor, a peer master."""
        if self.supervisor.reaped(pid, describe_status(status)):
            return
        if self.succession.child_exited(pid, status):
            return
        if self.group is not None and pid in self.group.peer_pids:
            self.group.peer_pids.discard(pid)
            return
        log.info("child %s exited: %s", pid, describe_status(status))

    def set_drained(self, drained: bool) -> None:
        """polycorn-ctl drain/undrain: keep serving, but answer the health path with 503."""
        if self.group is not None:
            self.group.mark_drained(drained)  # the other masters of the node follow
        self.follow_drain(drained)

    def follow_drain(self, drained: bool) -> None:
        self.rotation.follow(drained)
        self.announcer.state("draining" if drained else "ready")

    def runs_sidecars(self) -> bool:
        """One agent per node: in a --masters group, the master owning the hand-off path.

        Several masters with one node id would supersede each other in the
        registry; the owner is always exactly one, and a new owner takes over.
        """
        return self.group is None or self.group.owner is not None

    def retitle(self) -> None:
        """A HUP may bring a new -n/--name: the master and later children show it."""
        self.system.set_title("master", self.cfg.proc_name_resolved)
        self.supervisor.proc_name = self.cfg.proc_name_resolved

    def _close_master_fds(self) -> None:
        """In a forked child: drop what belongs to the master alone.

        A worker that kept the hand-off lock or the master-index lock open would
        keep them held after the master died, and no peer could take over.
        """
        signal.set_wakeup_fd(-1)
        fds = [*self.pool.master_fds(), *self.loop.fds()]
        if self.group is not None:
            fds += self.group.fds()
        fds += self.predecessor.fds() + self.succession.fds()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_for_worker(self) -> None:
        self._close_master_fds()
        for proc in self.supervisor.procs:
            if proc.channel is not None:
                with contextlib.suppress(OSError):
                    proc.channel.close()

    def _close_for_sidecar(self) -> None:
        """In a sidecar after fork: the master's fds and the listeners too.

        A sidecar never accepts; holding the listeners would keep a dead node's
        port accepting connections nobody serves.
        """
        self._close_master_fds()
        for listener in self.listeners:
            with contextlib.suppress(OSError):
                listener.sock.close()


def _version() -> str:
    from polycorn import __version__
    return __version__
