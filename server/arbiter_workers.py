"""The master's workers: spawn, retire, reap, heartbeat timeouts and readiness.

A mixin of Arbiter (one concern per module). Workers of the serving generation
are kept at `num_workers`; a worker that misses its heartbeat gets SIGABRT,
then SIGKILL; a worker that fails to boot halts a master that never became
ready (a typed one-line reason), and is retried with back-off otherwise.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pwd
import signal
import time
from typing import Any

from polycorn.server import proctitle, systemd
from polycorn.server.arbiter_state import (
    HaltServer,
    MasterState,
    WorkerRecord,
    describe_status,
    worker_class,
)
from polycorn.server.exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR
from polycorn.server.liveness import WorkerState
from polycorn.server.messages import Ready, speak
from polycorn.server.sidecar import ChannelClosed
from polycorn.server.workers.base import WORKER_SIGNALS

log = logging.getLogger("polycorn.error")

BOOT_FAILURE_LIMIT = 5  # consecutive boot failures after which a running master halts
KILL_AFTER_ABORT = 2.0  # seconds between SIGABRT and SIGKILL for a hung worker
EARLY_DEATH = 2.0  # a worker dying sooner than this after its start is respawned with back-off


def freeze_for_fork() -> None:
    """Keep what the master holds shared with its workers (copy-on-write).

    A full collection in a worker writes the GC header of every object it tracks,
    and so copies every page holding one: after one second of load, each sync worker
    (and the master, whose pages were then no longer shared) held 9.6 MiB private
    instead of 4.6. Frozen objects are never scanned again; garbage is collected
    first so that none is kept (the first time is a full pass, later ones only see
    what the master made since).
    """
    gc.collect()
    gc.freeze()

class WorkersMixin:

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
                              MasterState.UPGRADING, MasterState.DEREGISTERING):
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
        worker = worker_class(cfg)(
            age=self.worker_age, generation=generation, ppid=self.pid, cfg=cfg,
            listeners=self.listeners, slots=self.slots, slot=slot, parent_fd=self.parent_r,
            app=self.app, server=self)
        cfg.pre_fork(self, worker)
        freeze_for_fork()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)  # see WORKER_SIGNALS
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        else:
            self._close_master_fds()
            for proc in self.sidecars.procs:
                if proc.channel is not None:
                    with contextlib.suppress(OSError):
                        proc.channel.close()
            worker.pid = os.getpid()
            proctitle.set_title("worker", cfg.proc_name_resolved)
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
                os.setgroups([])  # none of the master user's supplementary groups
                os.setgid(gid)
            if uid is not None and uid != os.getuid():
                if getattr(cfg, "initgroups", False):
                    self._init_groups(uid)
                os.setuid(uid)
        except OSError as exc:
            log.error("cannot switch to user %s / group %s: %s", uid, gid, exc)
            os._exit(WORKER_BOOT_ERROR)

    @staticmethod
    def _init_groups(uid: int) -> None:
        """--initgroups: the worker also takes every group its user belongs to (as
        Gunicorn does with os.initgroups), e.g. to read files shared through a group."""
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:  # a bare uid has no group list to take
            log.warning("--initgroups: uid %s has no user name; no supplementary groups", uid)
            return
        os.initgroups(name, os.getgid())

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
        # Dying before ready, whatever the cause, counts as a failed boot: respawning
        # such a worker at once would spin.
        boot_failed = (code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR)
                       or state in (WorkerState.BOOT_FAILED, WorkerState.BOOTING))
        if rec.term_sent:
            log.info("Worker exiting (pid: %s)", rec.pid)
            self.broadcast_state()  # the registry's worker count follows TTOU at once
            return
        if boot_failed:
            # Gunicorn's halt statuses: 4 when the app could not be loaded, else 3.
            self.worker_boot_failed(rec, reason or describe_status(status),
                                    APP_LOAD_ERROR if code == APP_LOAD_ERROR
                                    else WORKER_BOOT_ERROR)
            return
        if code != 0:  # a crash, not a recycle (max-requests, --reload, orphan drain)
            self.note_early_death(rec)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            log.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", rec.pid)
        elif code != 0:
            log.error("Worker (pid:%s) exited: %s", rec.pid, describe_status(status))
        else:
            log.info("Worker (pid:%s) exited (max requests or orphaned)", rec.pid)
        self.broadcast_state()

    def note_early_death(self, rec: WorkerRecord) -> None:
        """A worker that dies soon after it started is respawned with back-off.

        An app that crashes its worker right after boot would otherwise be
        restarted thousands of times a minute.
        """
        if time.monotonic() - rec.started > EARLY_DEATH:
            self.early_deaths = 0
            return
        self.early_deaths += 1
        delay = min(10.0, 0.1 * 2 ** self.early_deaths)
        self.respawn_at = max(self.respawn_at, time.monotonic() + delay)
        log.warning("worker %s died %.1fs after it started; next start in %.1fs", rec.pid,
                    time.monotonic() - rec.started, delay)

    def worker_boot_failed(self, rec: WorkerRecord, reason: str,
                           exit_status: int = WORKER_BOOT_ERROR) -> None:
        if rec.generation == self.candidate:
            self.abort_reload(f"new worker failed to boot: {reason}")
            return
        if not self.ever_ready and not getattr(self.cfg, "reload", False):
            raise HaltServer(f"worker failed to boot: {reason}", exit_status=exit_status)
        self.boot_failures += 1
        if self.boot_failures >= BOOT_FAILURE_LIMIT and not getattr(self.cfg, "reload", False):
            raise HaltServer(f"workers failed to boot {self.boot_failures} times in a row: {reason}",
                             exit_status=exit_status)
        delay = min(10.0, 0.5 * 2 ** self.boot_failures)
        self.respawn_at = time.monotonic() + delay
        log.error("worker failed to boot (%s); retrying in %.1fs", reason, delay)

    def _watched_from(self, now: float, timeout: float) -> float:
        """Since when this master has watched its workers without a gap of its own.

        A heartbeat's age only counts the time the master was there to see it. After the
        master itself stood still (SIGSTOP of the node, a frozen VM or cgroup, a starved
        host), its workers stood still too, and may be resumed after it: judged at once,
        every one of them looked hung. A gap in the master's own loop (it wakes at least
        every half second) longer than a quarter of --timeout, and at least a second,
        gives every worker a full --timeout from now, as if the master had just started.
        """
        last, self.last_watch = self.last_watch, now
        if now - last > max(1.0, timeout / 4):
            if last:
                log.warning("master %s: its own loop stood still for %.1fs; every worker "
                            "gets a full --timeout (%gs) from now", self.pid, now - last, timeout)
            self.watch_from = now
        return self.watch_from

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
                        self.inherited.channel.send(
                            Ready(self.pid).to_wire(speak(self.inherited.wire_version)))
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
        watched_from = self._watched_from(now, timeout)
        for rec in list(self.workers.values()):
            beat = max(self.slots.read(rec.slot)[0], watched_from)
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
