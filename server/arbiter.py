"""The master: one single-threaded loop that keeps the right workers running.

Signal handlers only enqueue (and wake select() through the wakeup fd); the
loop reads like a table: wait, dispatch queued signals, reap children, read
sidecar messages, enforce heartbeats, advance a reload or an upgrade, keep the
worker count. Never start a thread here: the master forks, and a fork copies
locks held by other threads.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import signal
import time
from typing import Any

from polycorn.server import pidfile, proctitle
from polycorn.server.arbiter_reload import ReloadMixin
from polycorn.server.arbiter_sidecars import SidecarMixin
from polycorn.server.arbiter_state import (
    LEAVING_STATES,
    HaltServer,
    MasterState,
    WorkerRecord,
    worker_class,
)
from polycorn.server.arbiter_stop import StopMixin
from polycorn.server.arbiter_upgrade import UpgradeMixin
from polycorn.server.arbiter_workers import WorkersMixin
from polycorn.server.liveness import SlotTable
from polycorn.server.masters import GroupStop, MasterGroup
from polycorn.server.messages import Failed, speak
from polycorn.server.sidecar import ChannelClosed, SidecarSupervisor
from polycorn.server.sockets import Listener
from polycorn.server.upgrade import Inherited, Upgrade, reexec_argv, remove_status, status_path

log = logging.getLogger("polycorn.error")

SIGNALS = {signal.SIGHUP: "hup", signal.SIGTERM: "term", signal.SIGINT: "int",
           signal.SIGQUIT: "quit", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou",
           signal.SIGUSR1: "usr1", signal.SIGUSR2: "usr2", signal.SIGWINCH: "winch",
           signal.SIGCHLD: "chld"}


class Arbiter(WorkersMixin, ReloadMixin, UpgradeMixin, SidecarMixin, StopMixin):
    """The master process of one node (Gunicorn's `server` in hooks)."""

    def __init__(self, cfg: Any, *, app: Any = None, sidecars: list | None = None,
                 reload_config: Any = None, inherited: Inherited | None = None,
                 argv: list[str] | None = None, cwd: str = "", index: int = 0) -> None:
        self.cfg = cfg
        self.listeners: list[Listener] = []
        self.app = app  # loaded here only with --preload
        self.log = log
        self.pid = os.getpid()
        self.state = MasterState.BOOTING
        self.public_state = "booting"  # what sidecars and the cluster are told
        self.drained = False  # polycorn-ctl drain: health path answers 503
        self.num_workers = int(cfg.workers)
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 0  # the serving generation
        self.candidate: int | None = None  # generation booting during a reload
        self.candidate_deadline = 0.0
        self.code_reload_at = 0.0  # --reload: when (time.time) the last code reload began
        self.previous_cfg: Any = None
        self.worker_age = 0
        self.boot_failures = 0
        self.last_watch = 0.0  # when the heartbeats were last checked (enforce_timeouts)
        self.watch_from = 0.0  # heartbeats are judged from here on (see _watched_from)
        self.early_deaths = 0  # consecutive workers that died soon after starting
        self.respawn_at = 0.0
        self.stop_deadline = 0.0
        self.deregister_deadline = 0.0  # end of the DEREGISTERING window
        self.left_rotation = False  # went through that window: the health path stays 503
        self.exit_status = 0
        self.halt_reason = ""  # why the master stopped itself, for the command's last line
        self.deferred: list[Any] = []  # HUP/USR2 received while booting, run once ready
        self.ever_ready = False
        self.reload_config = reload_config  # callable returning a fresh Config (HUP)
        self.sig_queue: collections.deque[int] = collections.deque()
        self.slots = SlotTable()
        # Parent-death pipe: workers hold the read end; EOF there means we are gone.
        self.parent_r, self.parent_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.sidecars = SidecarSupervisor(sidecars or [], self._close_for_sidecar,
                                          cfg.proc_name_resolved)
        self.group: MasterGroup | None = None
        self.index = index
        self.inherited = inherited  # set while we are a new generation awaiting promotion
        self.argv = argv or reexec_argv()
        self.cwd = cwd or os.getcwd()
        self.upgrade: Upgrade | None = None
        self.upgrade_attempt = 0
        self.successor = 0  # pid of the master we handed over to
        self.status_file = status_path(cfg.pidfile, index)

    def attach(self, listeners: list[Listener], group: MasterGroup | None = None) -> None:
        """The sockets (bound after on_starting, as in Gunicorn) and the master group."""
        self.listeners = listeners
        self.group = group
        inherited = self.inherited
        if (inherited is not None and inherited.drained) or (group and group.node_drained):
            # Drained before an upgrade, or by another master of the node: the workers
            # answer the health path with 503 from their first request, with no window
            # in which a balancer sees 200.
            self.slots.set_draining(True)
            self.drained = True
        if group is not None and inherited is None:
            group.join()  # a new generation joins once promoted

    # ---- what Gunicorn's hooks read from `server` ---------------------------

    @property
    def proc_name(self) -> str:
        return self.cfg.proc_name_resolved

    @property
    def LISTENERS(self) -> list[Listener]:  # noqa: N802 - Gunicorn's name
        return self.listeners

    @property
    def WORKERS(self) -> dict[int, Any]:  # noqa: N802 - Gunicorn's name
        """pid -> worker object, as Gunicorn's arbiter keeps them (a fresh dict)."""
        return {pid: rec.worker for pid, rec in self.workers.items()}

    # ---- start and stop -----------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit status."""
        try:
            self.start()
            while self.state is not MasterState.STOPPED:
                self.loop_once()
        except HaltServer as exc:
            self.halt_reason = exc.reason
            self.exit_status = exc.exit_status
            if self.inherited is not None:  # tell the old master why, so it can report it
                with contextlib.suppress(ChannelClosed, OSError):
                    self.inherited.channel.send(
                        Failed(exc.reason).to_wire(speak(self.inherited.wire_version)))
            self.kill_everything()
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
        self.install_signals()
        for listener in self.listeners:
            log.info("Listening at: http://%s (%s)", listener, self.pid)
        log.info("Using worker: %s", worker_class(self.cfg).__name__)
        self.sidecars.broadcast(self._hello())
        if self.runs_sidecars():
            self.sidecars.start_due()
        self.broadcast_state("booting")
        if self.inherited is None:
            self.record_status("running")

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self._enqueue)
            signal.siginterrupt(sig, False)

    def _enqueue(self, signum: int, frame: Any) -> None:
        # Only enqueue: the loop does the work (logging here could deadlock).
        if len(self.sig_queue) < 64:
            self.sig_queue.append(signum)

    def _close_master_fds(self) -> None:
        """In a forked child: drop what belongs to the master alone.

        A worker that kept the hand-off lock or the master-index lock open would
        keep them held after the master died, and no peer could take over.
        """
        signal.set_wakeup_fd(-1)
        fds = [self.parent_w, self.wake_r, self.wake_w]
        if self.group is not None:
            fds += self.group.fds()
        for channel in (self.inherited.channel if self.inherited else None,
                        self.upgrade.channel if self.upgrade else None):
            if channel is not None:
                fds.append(channel.fileno())
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_for_sidecar(self) -> None:
        """In a sidecar after fork: the master's fds and the listeners too.

        A sidecar never accepts; holding the listeners would keep a dead node's
        port accepting connections nobody serves.
        """
        self._close_master_fds()
        for listener in self.listeners:
            with contextlib.suppress(OSError):
                listener.sock.close()

    def retitle(self) -> None:
        """A HUP may bring a new -n/--name: the master and later children show it."""
        proctitle.set_title("master", self.cfg.proc_name_resolved)
        self.sidecars.proc_name = self.cfg.proc_name_resolved

    def runs_sidecars(self) -> bool:
        """One agent per node: in a --masters group, the master owning the hand-off path.

        Several masters with one node id would supersede each other in the
        registry; the owner is always exactly one, and a new owner takes over.
        """
        return self.group is None or self.group.owner is not None

    def cleanup(self) -> None:
        if self.group is not None:
            self.group.close(successor=bool(self.successor))
        if self.cfg.pidfile:
            pidfile.remove_if_ours(self.cfg.pidfile, self.pid)
        if not self.successor:  # else the new master has made the status file its own
            remove_status(self.status_file, self.pid)
        with contextlib.suppress(Exception):
            self.cfg.on_exit(self)
        log.info("Shutting down: Master")

    # ---- the loop -----------------------------------------------------------

    def loop_once(self) -> None:
        self.wait(self._next_timeout())
        while self.sig_queue:
            self.dispatch(self.sig_queue.popleft())
        self.reap()
        if self.runs_sidecars():
            self.sidecars.start_due()
        leaving = self.state in LEAVING_STATES
        if self.group is not None:
            self.group.tick(leaving)
            if self.group.node_drained != self.drained:
                log.info("master %s: node %s by another master (marker %s.drained)",
                         self.pid, "drained" if self.group.node_drained else "undrained",
                         self.group.path)
                self.follow_drain(self.group.node_drained)
            request = None if leaving else self.group.requested_stop()
            if request is not None:
                log.info("master %s: a peer master asked the group to stop (%s)", self.pid,
                         request.value)
                if request is GroupStop.DEREGISTER:
                    self.stop_gracefully("a peer master's TERM", announce=False)
                else:
                    self.begin_stop(graceful=True, announce=False)
        if self.state is MasterState.DEREGISTERING:
            self.advance_deregister()
            return
        if self.state in LEAVING_STATES:
            self.advance_stop()
            return
        self.enforce_timeouts()
        self.follow_code_changes()
        self.advance_reload()
        self.advance_upgrade()
        self.manage_workers()
        self.notice_readiness()

    def _next_timeout(self) -> float:
        if self.state is MasterState.BOOTING or self.candidate is not None:
            return 0.05  # readiness is polled from shared memory while booting
        timeout = 0.5
        if self.group is not None:
            timeout = min(timeout, self.group.seconds_to_tick())
        if self.state is MasterState.DEREGISTERING:
            timeout = min(timeout, max(0.0, self.deregister_deadline - time.monotonic()))
        return timeout

    def wait(self, timeout: float) -> None:
        fds = [self.wake_r, *self.sidecars.channels()]
        if self.group is not None:
            fds += self.group.select_fds()
        if self.inherited is not None:
            fds.append(self.inherited.channel.fileno())
        if self.upgrade is not None and self.upgrade.channel is not None:
            fds.append(self.upgrade.fileno())
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd == self.wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 4096):
                        pass
            elif self.group is not None and self.group.readable(fd):
                pass
            elif self.inherited is not None and fd == self.inherited.channel.fileno():
                self.read_old_master()
            elif self.upgrade is not None and fd == self.upgrade.fileno():
                self.advance_upgrade()
            else:
                proc = self.sidecars.channels().get(fd)
                if proc is not None:
                    for msg in self.sidecars.read(proc):
                        self.handle_sidecar_message(proc, msg)

    def dispatch(self, signum: int) -> None:
        name = SIGNALS.get(signum)
        if name is None:
            return
        if name != "chld":
            log.info("Handling signal: %s", name)
        getattr(self, f"handle_{name}")()

    # ---- signal handlers (run in the loop, not in signal context) -----------

    def handle_chld(self) -> None:
        pass  # reaping happens on every turn of the loop

    def handle_hup(self) -> None:
        self.start_reload("HUP")

    def handle_term(self) -> None:
        self.stop_gracefully("TERM")

    def handle_int(self) -> None:
        self.begin_stop(graceful=False)

    handle_quit = handle_int

    def handle_ttin(self) -> None:
        self.set_num_workers(self.num_workers + 1)

    def handle_ttou(self) -> None:
        self.set_num_workers(self.num_workers - 1)

    def handle_usr1(self) -> None:
        from polycorn.server.logs import reopen
        reopen()
        self.kill_workers(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        self.start_upgrade()

    def handle_winch(self) -> None:
        # Gunicorn's meaning: stop the workers, keep the master (only when daemonized,
        # so that a terminal resize of a foreground server is harmless).
        if self.cfg.daemon:
            log.info("graceful stop of workers (WINCH)")
            self.set_num_workers(0)
        else:
            log.info("SIGWINCH ignored: not daemonized")


def _version() -> str:
    from polycorn import __version__
    return __version__

