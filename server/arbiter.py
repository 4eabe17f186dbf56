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
import enum
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from polycorn.server import pidfile, systemd
from polycorn.server.liveness import SlotTable, WorkerState
from polycorn.server.masters import MasterGroup
from polycorn.server.sidecar import ChannelClosed, SidecarProcess, SidecarSupervisor
from polycorn.server.sockets import Listener
from polycorn.server.upgrade import Inherited, Outcome, Upgrade, status_path, write_status
from polycorn.server.workers.base import APP_LOAD_ERROR, WORKER_BOOT_ERROR, Worker

log = logging.getLogger("polycorn.error")

SIGNALS = {signal.SIGHUP: "hup", signal.SIGTERM: "term", signal.SIGINT: "int",
           signal.SIGQUIT: "quit", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou",
           signal.SIGUSR1: "usr1", signal.SIGUSR2: "usr2", signal.SIGWINCH: "winch",
           signal.SIGCHLD: "chld"}
BOOT_FAILURE_LIMIT = 5  # consecutive boot failures after which a running master halts
KILL_AFTER_ABORT = 2.0  # seconds between SIGABRT and SIGKILL for a hung worker


class HaltServer(Exception):
    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class MasterState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    RELOADING = "reloading"  # HUP: a new generation boots beside the serving one
    UPGRADING = "upgrading"  # USR2: a new master boots beside us
    DRAINING = "draining"  # graceful stop: workers finish what they hold
    STOPPING = "stopping"  # quick stop
    STOPPED = "stopped"


@dataclass
class WorkerRecord:
    pid: int
    worker: Worker
    generation: int
    slot: int
    started: float
    abort_sent: float = 0.0
    term_sent: float = 0.0
    ready_seen: bool = False


def _worker_class(cfg: Any) -> type[Worker]:
    name = getattr(cfg, "worker_class_resolved", None) or cfg.worker_class
    if name in ("thread", "gthread"):
        from polycorn.server.workers.thread import ThreadWorker
        return ThreadWorker
    if name == "event":
        from polycorn.server.workers.event import EventWorker
        return EventWorker
    from polycorn.server.workers.sync import SyncWorker
    if name == "sync" and int(getattr(cfg, "threads", 1) or 1) > 1:
        from polycorn.server.workers.thread import ThreadWorker
        return ThreadWorker
    return SyncWorker


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


class Arbiter:
    """The master process of one node (Gunicorn's `server` in hooks)."""

    def __init__(self, cfg: Any, listeners: list[Listener], *, app: Any = None,
                 sidecars: list | None = None, reload_config: Any = None,
                 group: MasterGroup | None = None, inherited: Inherited | None = None,
                 argv: list[str] | None = None, cwd: str = "", index: int = 0) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.app = app  # loaded here only with --preload
        self.log = log
        self.pid = os.getpid()
        self.state = MasterState.BOOTING
        self.num_workers = int(cfg.workers)
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 0  # the serving generation
        self.candidate: int | None = None  # generation booting during a reload
        self.candidate_deadline = 0.0
        self.previous_cfg: Any = None
        self.worker_age = 0
        self.boot_failures = 0
        self.respawn_at = 0.0
        self.stop_deadline = 0.0
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
        self.sidecars = SidecarSupervisor(sidecars or [], self._close_master_fds)
        self.group = group
        self.index = index
        self.inherited = inherited  # set while we are a new generation awaiting promotion
        self.argv = argv or list(sys.orig_argv)
        self.cwd = cwd or os.getcwd()
        self.upgrade: Upgrade | None = None
        self.upgrade_attempt = 0
        self.successor = 0  # pid of the master we handed over to
        self.status_file = status_path(cfg.pidfile, index)

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
                    self.inherited.channel.send({"type": "failed", "reason": exc.reason})
            self.kill_everything()
        finally:
            self.cleanup()
        return self.exit_status

    def start(self) -> None:
        log.info("Starting polycorn %s", _version())
        self.cfg.on_starting(self)
        self.install_signals()
        for listener in self.listeners:
            log.info("Listening at: http://%s (%s)", listener, self.pid)
        log.info("Using worker: %s", _worker_class(self.cfg).__name__)
        self.sidecars.broadcast(self._hello())
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

    def cleanup(self) -> None:
        if self.group is not None:
            self.group.close(successor=bool(self.successor))
        if self.cfg.pidfile:
            pidfile.remove_if_ours(self.cfg.pidfile, self.pid)
        with contextlib.suppress(Exception):
            self.cfg.on_exit(self)
        log.info("Shutting down: Master")

    # ---- the loop -----------------------------------------------------------

    def loop_once(self) -> None:
        self.wait(self._next_timeout())
        while self.sig_queue:
            self.dispatch(self.sig_queue.popleft())
        self.reap()
        self.sidecars.start_due()
        stopping = self.state in (MasterState.DRAINING, MasterState.STOPPING)
        if self.group is not None:
            self.group.tick(stopping)
            if not stopping and self.group.stop_requested():
                log.info("a peer master asked the group to stop")
                self.begin_stop(graceful=True, announce=False)
                stopping = True
        if stopping:
            self.advance_stop()
            return
        self.enforce_timeouts()
        self.advance_reload()
        self.advance_upgrade()
        self.manage_workers()
        self.notice_readiness()

    def _next_timeout(self) -> float:
        if self.state is MasterState.BOOTING or self.candidate is not None:
            return 0.05  # readiness is polled from shared memory while booting
        return 0.5

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
        self.begin_stop(graceful=True)

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

    # ---- workers ------------------------------------------------------------

    def set_num_workers(self, n: int) -> None:
        n = max(0, n)
        if n == self.num_workers:
            return
        old, self.num_workers = self.num_workers, n
        log.info("workers: %s -> %s", old, n)
        self.cfg.nworkers_changed(self, n, old)
        self.broadcast_state()

    def live(self, generation: int | None = None) -> list[WorkerRecord]:
        gen = self.generation if generation is None else generation
        return [r for r in self.workers.values() if r.generation == gen and not r.term_sent]

    def manage_workers(self) -> None:
        if self.state not in (MasterState.BOOTING, MasterState.READY, MasterState.RELOADING,
                              MasterState.UPGRADING):
            return
        serving = self.live()
        if len(serving) < self.num_workers and time.monotonic() >= self.respawn_at:
            for _ in range(self.num_workers - len(serving)):
                self.spawn_worker(self.generation)
        elif len(serving) > self.num_workers:
            # Retire the oldest first (they are nearest to max-requests anyway).
            for rec in sorted(serving, key=lambda r: r.started)[: len(serving) - self.num_workers]:
                self.retire(rec)

    def spawn_worker(self, generation: int, cfg: Any = None) -> None:
        cfg = cfg or self.cfg
        self.worker_age += 1
        slot = self.slots.claim()
        worker = _worker_class(cfg)(
            age=self.worker_age, generation=generation, ppid=self.pid, cfg=cfg,
            listeners=self.listeners, slots=self.slots, slot=slot, parent_fd=self.parent_r,
            app=self.app, server=self)
        cfg.pre_fork(self, worker)
        pid = os.fork()
        if pid == 0:
            self._close_master_fds()
            for proc in self.sidecars.procs:
                if proc.channel is not None:
                    with contextlib.suppress(OSError):
                        proc.channel.close()
            worker.pid = os.getpid()
            self._drop_privileges(cfg)
            try:
                cfg.post_fork(self, worker)
            except Exception:
                log.exception("post_fork hook failed")
                os._exit(WORKER_BOOT_ERROR)
            worker.start()  # never returns
        worker.pid = pid
        self.workers[pid] = WorkerRecord(pid, worker, generation, slot, time.monotonic())
        log.info("Booting worker with pid: %s", pid)

    def _drop_privileges(self, cfg: Any) -> None:
        gid, uid = cfg.group, cfg.user
        try:
            if gid is not None and gid != os.getgid():
                os.setgroups([])
                os.setgid(gid)
            if uid is not None and uid != os.getuid():
                os.setuid(uid)
        except OSError as exc:
            log.error("cannot switch to user %s / group %s: %s", uid, gid, exc)
            os._exit(WORKER_BOOT_ERROR)

    def retire(self, rec: WorkerRecord, sig: int = signal.SIGTERM) -> None:
        """Ask one worker to finish what it holds and exit."""
        rec.term_sent = time.monotonic()
        self.slots.set_state(rec.slot, WorkerState.STOPPING)
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, sig)

    def kill_workers(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if self.sidecars.reaped(pid, describe_status(status)):
                continue
            rec = self.workers.pop(pid, None)
            if rec is not None:
                self.worker_exited(rec, status)
            else:
                self.other_child_exited(pid, status)

    def other_child_exited(self, pid: int, status: int) -> None:
        """A child that is neither worker nor sidecar: an upgrade's new master or a peer."""
        if self.upgrade is not None and pid == self.upgrade.new_pid:
            self.upgrade.child_exited(describe_status(status))
            self.advance_upgrade()
        elif self.group is not None and pid in self.group.peer_pids:
            self.group.peer_pids.discard(pid)
        elif pid != self.successor:
            log.info("child %s exited: %s", pid, describe_status(status))

    def worker_exited(self, rec: WorkerRecord, status: int) -> None:
        _, state, reason = self.slots.read(rec.slot)
        self.slots.release(rec.slot)
        try:
            self.cfg.child_exit(self, rec.worker)
        except Exception:
            log.exception("child_exit hook failed")
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        boot_failed = code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR) or state is WorkerState.BOOT_FAILED
        if rec.term_sent:
            log.info("Worker exiting (pid: %s)", rec.pid)
            return
        if boot_failed:
            self.worker_boot_failed(rec, reason or describe_status(status))
            return
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            log.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", rec.pid)
        elif code != 0:
            log.error("Worker (pid:%s) exited: %s", rec.pid, describe_status(status))
        else:
            log.info("Worker (pid:%s) exited (max requests or orphaned)", rec.pid)
        self.broadcast_state()

    def worker_boot_failed(self, rec: WorkerRecord, reason: str) -> None:
        if rec.generation == self.candidate:
            self.abort_reload(f"new worker failed to boot: {reason}")
            return
        if not self.ever_ready and not getattr(self.cfg, "reload", False):
            raise HaltServer(f"worker failed to boot: {reason}", exit_status=1)
        self.boot_failures += 1
        if self.boot_failures >= BOOT_FAILURE_LIMIT and not getattr(self.cfg, "reload", False):
            raise HaltServer(f"workers failed to boot {self.boot_failures} times in a row: {reason}")
        delay = min(10.0, 0.5 * 2 ** self.boot_failures)
        self.respawn_at = time.monotonic() + delay
        log.error("worker failed to boot (%s); retrying in %.1fs", reason, delay)

    def notice_readiness(self) -> None:
        ready_any = False
        for rec in self.workers.values():
            if not rec.ready_seen and self.slots.read(rec.slot)[1] is WorkerState.READY:
                rec.ready_seen = True
                ready_any = True
                if rec.generation == self.generation:
                    self.boot_failures = 0
        if self.state is MasterState.BOOTING:
            serving = self.live()
            if serving and all(r.ready_seen for r in serving) and len(serving) >= self.num_workers:
                self.state = MasterState.READY
                self.ever_ready = True
                log.info("ready: %s workers serving", len(serving))
                self.cfg.when_ready(self)
                if self.inherited is not None:
                    try:  # the old master promotes us, or rolls us back
                        self.inherited.channel.send({"type": "ready", "pid": self.pid})
                    except ChannelClosed:
                        self.promoted("the old master is gone")
                else:
                    systemd.notify(f"READY=1\nMAINPID={self.pid}")
                self.broadcast_state("ready")
                while self.deferred:
                    self.deferred.pop(0)()
                return
        if ready_any:
            self.broadcast_state()

    def enforce_timeouts(self) -> None:
        timeout = float(self.cfg.timeout or 0)
        if timeout <= 0:
            return
        now = time.monotonic()
        for rec in list(self.workers.values()):
            beat = self.slots.read(rec.slot)[0]
            if rec.abort_sent:
                if now - rec.abort_sent > KILL_AFTER_ABORT:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rec.pid, signal.SIGKILL)
            elif now - beat > timeout:
                log.critical("WORKER TIMEOUT (pid:%s)", rec.pid)
                rec.abort_sent = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGABRT)
            elif rec.term_sent and now - rec.term_sent > float(self.cfg.graceful_timeout) + 1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)

    # ---- HUP: a new generation, health-gated --------------------------------

    def start_reload(self, why: str) -> None:
        if self.state is MasterState.BOOTING:
            self.deferred.append(self.handle_hup)  # done once the first workers are ready
            return
        if self.state is not MasterState.READY:
            log.warning("reload (%s) ignored: master is %s", why, self.state.value)
            return
        new_cfg = self.cfg
        if self.reload_config is not None:
            try:
                new_cfg = self.reload_config()
            except Exception as exc:
                log.error("reload failed: bad configuration: %s", exc)
                return
        self.previous_cfg, self.cfg = self.cfg, new_cfg
        self.cfg.on_reload(self)
        self.state = MasterState.RELOADING
        self.candidate = self.generation + 1
        self.candidate_deadline = time.monotonic() + float(getattr(self.cfg, "upgrade_timeout", 60))
        target = int(self.cfg.workers) if new_cfg is not self.previous_cfg else self.num_workers
        self.candidate_target = target
        for _ in range(target):
            self.spawn_worker(self.candidate, self.cfg)

    def advance_reload(self) -> None:
        if self.candidate is None:
            return
        self.notice_readiness()
        new = self.live(self.candidate)
        if len(new) >= self.candidate_target and all(r.ready_seen for r in new):
            for rec in self.live(self.generation):
                self.retire(rec)
            self.generation, self.candidate = self.candidate, None
            old = self.num_workers
            self.num_workers = self.candidate_target
            if old != self.num_workers:
                self.cfg.nworkers_changed(self, self.num_workers, old)
            self.state = MasterState.READY
            self.previous_cfg = None
            log.info("reload complete: %s new workers serving", len(new))
            self.broadcast_state("ready")
        elif time.monotonic() > self.candidate_deadline:
            self.abort_reload(f"new workers not ready within {self.cfg.upgrade_timeout}s")
        elif len(new) < self.candidate_target:
            # A new worker died without a boot error (killed): replace it.
            for _ in range(self.candidate_target - len(new)):
                self.spawn_worker(self.candidate, self.cfg)

    def abort_reload(self, reason: str) -> None:
        gen = self.candidate
        for rec in list(self.workers.values()):
            if rec.generation == gen:
                rec.term_sent = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
        self.candidate = None
        if self.previous_cfg is not None:
            self.cfg, self.previous_cfg = self.previous_cfg, None
        self.state = MasterState.READY
        log.error("reload failed: %s; the old workers keep serving", reason)
        self.broadcast_event("reload_failed", reason)

    # ---- USR2: the next master, health-gated --------------------------------

    def start_upgrade(self) -> None:
        if self.state is MasterState.BOOTING:
            self.deferred.append(self.handle_usr2)
            return
        if self.state is not MasterState.READY or self.inherited is not None:
            log.warning("upgrade ignored: master is %s%s", self.state.value,
                        " and not yet promoted" if self.inherited is not None else "")
            return
        self.upgrade_attempt += 1
        timeout = float(getattr(self.cfg, "upgrade_timeout", 60) or 60)
        extra = self.group.upgrade_fds() if self.group is not None else {}
        self.state = MasterState.UPGRADING
        self.upgrade = Upgrade(self.upgrade_attempt, self.listeners, extra, self.argv, self.cwd,
                               timeout)
        log.info("upgrade started: new master pid %s (%s)", self.upgrade.new_pid,
                 " ".join(self.argv))
        self.cfg.pre_exec(self)
        self.record_status("upgrading")
        self.broadcast_state("upgrading")
        self.broadcast_event("upgrade_started", f"new master pid {self.upgrade.new_pid}")

    def advance_upgrade(self) -> None:
        if self.upgrade is None:
            return
        outcome = self.upgrade.poll()
        if outcome is Outcome.UPGRADING:
            return
        upgrade, self.upgrade = self.upgrade, None
        if outcome is Outcome.PROMOTED:
            self.successor = upgrade.new_pid
            log.info("upgrade promoted: new master pid %s; draining the old workers",
                     upgrade.new_pid)
            # The new master records itself in the status file; writing here would race it.
            self.broadcast_event("upgrade_promoted", f"new master pid {upgrade.new_pid}")
            self.state = MasterState.READY  # so that begin_stop drains from a clean state
            self.begin_stop(graceful=True, announce=False)
        else:
            log.error("upgrade rolled back: %s", upgrade.reason)
            self.state = MasterState.READY
            self.record_status("rolled_back", reason=upgrade.reason, new_pid=upgrade.new_pid)
            self.broadcast_state("ready")
            self.broadcast_event("upgrade_rolled_back", upgrade.reason)

    def read_old_master(self) -> None:
        assert self.inherited is not None
        try:
            messages = self.inherited.channel.receive_ready()
        except ChannelClosed:
            if self.state is MasterState.READY:
                self.promoted("the old master is gone")
            else:
                # Rolled back (we are about to be killed) or the old master died
                # while we boot: keep booting, and take over when ready.
                self.inherited.channel.close()
                self.inherited = None
            return
        for msg in messages:
            if msg.get("type") == "promote":
                self.promoted("promoted by the old master")

    def promoted(self, why: str) -> None:
        assert self.inherited is not None
        old = self.inherited.old_pid
        self.inherited.channel.close()
        self.inherited = None
        log.info("this master (pid %s) now serves: %s (old master %s)", self.pid, why, old)
        if self.cfg.pidfile and (self.group is None or self.group.owner is not None
                                 or not self.cfg.handoff):
            pidfile.write(self.cfg.pidfile, self.pid)
        systemd.notify(f"MAINPID={self.pid}\nREADY=1")
        self.record_status("running", upgraded_from=old)

    def record_status(self, state: str, **extra: Any) -> None:
        write_status(self.status_file, {"pid": self.pid, "index": self.index, "state": state,
                                        "attempt": self.upgrade_attempt, "time": time.time(),
                                        **extra})

    # ---- stopping -----------------------------------------------------------

    def begin_stop(self, graceful: bool, announce: bool = True) -> None:
        if self.state is MasterState.STOPPING or (graceful and self.state is MasterState.DRAINING):
            return
        if self.upgrade is not None and self.upgrade.outcome is Outcome.UPGRADING:
            self.upgrade.fail("the old master was asked to stop")
        if announce and self.group is not None:
            self.group.announce_stop()  # peers stop too, rather than restart us
        self.state = MasterState.DRAINING if graceful else MasterState.STOPPING
        self.broadcast_state("stopping")
        self.stop_deadline = time.monotonic() + float(self.cfg.graceful_timeout)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for rec in self.workers.values():
            rec.term_sent = rec.term_sent or time.monotonic()
        self.kill_workers(sig)

    def advance_stop(self) -> None:
        if self.workers and time.monotonic() > self.stop_deadline:
            log.warning("graceful timeout: killing %s workers", len(self.workers))
            self.kill_workers(signal.SIGKILL)
            self.stop_deadline = time.monotonic() + 5
        if not self.workers:
            self.stop_sidecars()
            self.state = MasterState.STOPPED

    def stop_sidecars(self) -> None:
        self.sidecars.stop(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while self.sidecars.pids() and time.monotonic() < deadline:
            for pid in list(self.sidecars.pids()):
                with contextlib.suppress(ChildProcessError):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        for proc in self.sidecars.procs:
                            if proc.pid == done:
                                proc.pid = 0
            time.sleep(0.02)
        self.sidecars.stop(signal.SIGKILL)

    def kill_everything(self) -> None:
        self.kill_workers(signal.SIGKILL)
        self.sidecars.stop(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)

    # ---- sidecars -----------------------------------------------------------

    def _hello(self) -> dict[str, Any]:
        return {"type": "hello", "pid": self.pid, "node": {
            "bind": [str(lst) for lst in self.listeners],
            "workers": int(self.cfg.workers),
            "max_workers": self.max_workers(),
            "proc_name": getattr(self.cfg, "proc_name", None),
            "release": getattr(self.cfg, "release", None),
        }}

    def max_workers(self) -> int:
        return int(self.cfg.max_workers_resolved)

    def broadcast_state(self, state: str | None = None, reason: str = "") -> None:
        if state is not None:
            self._public_state = state
        ready = sum(1 for r in self.live() if r.ready_seen)
        self.sidecars.broadcast({
            "type": "state", "state": getattr(self, "_public_state", "booting"),
            "workers": ready, "workers_target": self.num_workers,
            "workers_configured": int(self.cfg.workers), "max_workers": self.max_workers(),
            "pid": self.pid, "reason": reason})

    def broadcast_event(self, event: str, reason: str) -> None:
        self.sidecars.broadcast({"type": "event", "event": event, "reason": reason})

    def handle_sidecar_message(self, proc: SidecarProcess, msg: dict[str, Any]) -> None:
        if msg.get("type") != "command":
            return
        cmd, cid = msg.get("cmd"), msg.get("id")
        ok, reason = True, ""
        if cmd == "ttin":
            self.set_num_workers(min(self.max_workers(), self.num_workers + int(msg.get("n", 1))))
        elif cmd == "ttou":
            self.set_num_workers(self.num_workers - int(msg.get("n", 1)))
        elif cmd == "set_workers":
            n = int(msg.get("n", self.cfg.workers))
            if not 0 <= n <= self.max_workers():
                ok, reason = False, f"{n} workers is outside 0..{self.max_workers()}"
            else:
                self.set_num_workers(n)
        elif cmd == "reload":
            self.start_reload("sidecar")
        elif cmd == "upgrade":
            self.handle_usr2()
        else:
            ok, reason = False, f"unknown command {cmd!r}"
        self.sidecars.reply(proc, {"type": "result", "id": cid, "ok": ok, "reason": reason})


def _version() -> str:
    from polycorn import __version__
    return __version__

