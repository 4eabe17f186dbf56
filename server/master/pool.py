"""The worker pool: spawn, retire, reap, heartbeat timeouts, readiness, early deaths.

Workers of the serving generation are kept at `num_workers`; a HUP boots a
candidate generation beside them (the reload part decides when it serves). A
worker that misses its heartbeat gets SIGABRT, then SIGKILL; a worker that
fails to boot halts a master that never became ready (a typed one-line
reason), and is retried with back-off otherwise; one that dies soon after its
start is respawned with back-off. Every OS call goes through the System seam.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
from collections.abc import Callable
from typing import Any

from polycorn.server import proctitle
from polycorn.server.exitcodes import APP_LOAD_ERROR, WORKER_BOOT_ERROR
from polycorn.server.instrument import master as instrument_master
from polycorn.server.liveness import MAX_REQUESTS_REASON, SlotTable, WorkerState
from polycorn.server.master.state import (
    CurrentConfig,
    HaltServer,
    Lifecycle,
    MasterState,
    WorkerRecord,
    describe_status,
    worker_class,
)
from polycorn.server.master.system import System
from polycorn.server.workers.base import WORKER_SIGNALS

log = logging.getLogger("polycorn.error")

BOOT_FAILURE_LIMIT = 5  # consecutive boot failures after which a running master halts
KILL_AFTER_ABORT = 2.0  # seconds between SIGABRT and SIGKILL for a hung worker
EARLY_DEATH = 2.0  # a worker dying sooner than this after its start is respawned with back-off

# States in which the serving generation is kept at its count.
MANAGED = frozenset({MasterState.BOOTING, MasterState.READY, MasterState.RELOADING,
                     MasterState.UPGRADING, MasterState.DEREGISTERING})


class WorkerPool:
    """The master's workers, by pid, and the generations they belong to."""

    def __init__(self, system: System, lifecycle: Lifecycle, config: CurrentConfig,
                 slots: SlotTable, *, pid: int, server: Any, app: Any = None,
                 close_in_child: Callable[[], None] = lambda: None,
                 on_change: Callable[[], None] = lambda: None,
                 on_candidate_failed: Callable[[str], None] = lambda reason: None,
                 other_child: Callable[[int, int], None] = lambda pid, status: None) -> None:
        self.system = system
        self.lifecycle = lifecycle
        self.config = config
        self.slots = slots
        self.pid = pid  # the master's
        self.server = server  # the object Gunicorn's hooks receive (opaque here)
        self.app = app  # loaded in the master only with --preload
        self.listeners: list[Any] = []
        self.close_in_child = close_in_child  # a forked worker drops the master's own fds
        self.on_change = on_change  # the counts the cluster sees changed
        self.on_candidate_failed = on_candidate_failed  # a reload's new worker failed to boot
        self.other_child = other_child  # a reaped child that is no worker of ours
        self.num_workers = int(config.cfg.workers)
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 0  # the serving generation
        self.candidate: int | None = None  # the generation booting during a reload
        self.worker_age = 0
        self.boot_failures = 0
        self.early_deaths = 0  # consecutive workers that died soon after starting
        self.respawn_at = 0.0
        self.last_watch = 0.0  # when the heartbeats were last checked (enforce_timeouts)
        self.watch_from = 0.0  # heartbeats are judged from here on (see _watched_from)
        # Parent-death pipe: workers hold the read end; EOF there means we are gone.
        self.parent_r, self.parent_w = os.pipe()

    @property
    def cfg(self) -> Any:
        return self.config.cfg

    def attach(self, listeners: list[Any]) -> None:
        """The listening sockets every worker spawned from now on accepts on."""
        self.listeners = listeners

    # ---- counts and generations ----------------------------------------------

    def set_num_workers(self, n: int) -> None:
        n = max(0, n)
        if n == self.num_workers:
            return
        old, self.num_workers = self.num_workers, n
        log.info("workers: %s -> %s", old, n)
        self.cfg.nworkers_changed(self.server, n, old)
        self.on_change()

    def live(self, generation: int | None = None) -> list[WorkerRecord]:
        gen = self.generation if generation is None else generation
        return [r for r in self.workers.values() if r.generation == gen and not r.term_sent]

    def ready_count(self) -> int:
        return sum(1 for r in self.live() if r.ready_seen)

    def serving_ready(self) -> bool:
        """Every worker of the serving generation is up and ready, and enough of them."""
        serving = self.live()
        return bool(serving) and all(r.ready_seen for r in serving) \
            and len(serving) >= self.num_workers

    def any_slot_ready(self) -> bool:
        """A worker already accepts (its health path answers 200), seen or not."""
        return any(self.slots.read(rec.slot)[1] is WorkerState.READY
                   for rec in self.workers.values())

    def begin_candidate(self) -> int:
        self.candidate = self.generation + 1
        return self.candidate

    def promote_candidate(self, num_workers: int) -> None:
        """The candidate generation serves now; the old one is retired."""
        assert self.candidate is not None
        for rec in self.live(self.generation):
            self.retire(rec)
        self.generation, self.candidate = self.candidate, None
        old, self.num_workers = self.num_workers, num_workers
        if old != num_workers:
            self.cfg.nworkers_changed(self.server, num_workers, old)

    def drop_candidate(self) -> None:
        """Kill the candidate generation at once (a failed reload)."""
        gen, self.candidate = self.candidate, None
        for rec in list(self.workers.values()):
            if rec.generation == gen:
                rec.term_sent = self.system.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    self.system.kill(rec.pid, signal.SIGKILL)

    # ---- spawning and retiring ----------------------------------------------

    def manage(self) -> None:
        if self.lifecycle.state not in MANAGED:
            return
        serving = self.live()
        if len(serving) < self.num_workers and self.system.monotonic() >= self.respawn_at:
            for _ in range(self.num_workers - len(serving)):
                self.spawn(self.generation)
        elif len(serving) > self.num_workers:
            # Retire the oldest first (they are nearest to max-requests anyway).
            for rec in sorted(serving, key=lambda r: r.started)[: len(serving) - self.num_workers]:
                self.retire(rec)
        instrument_master.sample(len(self.live()), self.listeners, self.cfg,
                                 self.state_counts)

    def state_counts(self) -> dict[str, int]:
        """The workers by slot state (booting, ready, stopping), for the instruments."""
        counts = {"booting": 0, "ready": 0, "stopping": 0}
        for rec in self.workers.values():
            state = self.slots.read(rec.slot)[1]
            name = "stopping" if rec.term_sent or state is WorkerState.STOPPING else \
                "ready" if state is WorkerState.READY else "booting"
            counts[name] += 1
        return counts

    def spawn(self, generation: int, cfg: Any = None) -> None:
        cfg = cfg or self.cfg
        self.worker_age += 1
        slot = self.slots.claim()
        worker = worker_class(cfg)(
            age=self.worker_age, generation=generation, ppid=self.pid, cfg=cfg,
            listeners=self.listeners, slots=self.slots, slot=slot, parent_fd=self.parent_r,
            app=self.app, server=self.server)
        cfg.pre_fork(self.server, worker)
        self.system.freeze_for_fork()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)  # see WORKER_SIGNALS
        try:
            pid = self.system.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        if pid == 0:
            self._become_worker(worker, cfg)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        worker.pid = pid
        self.workers[pid] = WorkerRecord(pid, worker, generation, slot, self.system.monotonic())
        log.info("Booting worker with pid: %s", pid)

    def _become_worker(self, worker: Any, cfg: Any) -> None:
        """In the forked child: drop the master's fds and privileges, then serve."""
        self.close_in_child()
        worker.pid = os.getpid()
        proctitle.set_title("worker", cfg.proc_name_resolved)
        _drop_privileges(cfg)
        try:
            cfg.post_fork(self.server, worker)
        except Exception:
            log.exception("post_fork hook failed")
            os._exit(WORKER_BOOT_ERROR)
        worker.start()  # never returns

    def retire(self, rec: WorkerRecord, sig: int = signal.SIGTERM) -> None:
        """Ask one worker to finish what it holds and exit."""
        rec.term_sent = self.system.monotonic()
        self.slots.set_state(rec.slot, WorkerState.STOPPING)
        with contextlib.suppress(ProcessLookupError):
            self.system.kill(rec.pid, sig)

    def kill_all(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                self.system.kill(pid, sig)

    def stop_all(self, sig: int) -> None:
        """Every worker is on its way out (a stop): mark them, then signal them."""
        for rec in self.workers.values():
            rec.term_sent = rec.term_sent or self.system.monotonic()
        self.kill_all(sig)

    # ---- reaping ------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            rec = self.workers.pop(pid, None)
            if rec is not None:
                self.worker_exited(rec, status)
            else:
                self.other_child(pid, status)

    def worker_exited(self, rec: WorkerRecord, status: int) -> None:
        _, state, reason = self.slots.read(rec.slot)
        self.slots.release(rec.slot)
        try:
            self.cfg.child_exit(self.server, rec.worker)
        except Exception:
            log.exception("child_exit hook failed")
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        instrument_master.worker_exited(exit_reason(rec, status, code, state, reason))
        # Dying before ready, whatever the cause, counts as a failed boot: respawning
        # such a worker at once would spin.
        boot_failed = (code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR)
                       or state in (WorkerState.BOOT_FAILED, WorkerState.BOOTING))
        if rec.term_sent:
            log.info("Worker exiting (pid: %s)", rec.pid)
            self.on_change()  # the registry's worker count follows TTOU at once
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
        self.on_change()

    def note_early_death(self, rec: WorkerRecord) -> None:
        """A worker that dies soon after it started is respawned with back-off.

        An app that crashes its worker right after boot would otherwise be
        restarted thousands of times a minute.
        """
        now = self.system.monotonic()
        if now - rec.started > EARLY_DEATH:
            self.early_deaths = 0
            return
        self.early_deaths += 1
        delay = min(10.0, 0.1 * 2 ** self.early_deaths)
        self.respawn_at = max(self.respawn_at, now + delay)
        log.warning("worker %s died %.1fs after it started; next start in %.1fs", rec.pid,
                    now - rec.started, delay)

    def worker_boot_failed(self, rec: WorkerRecord, reason: str,
                           exit_status: int = WORKER_BOOT_ERROR) -> None:
        if rec.generation == self.candidate:
            self.on_candidate_failed(f"new worker failed to boot: {reason}")
            return
        code_reload = getattr(self.cfg, "reload", False)
        if not self.lifecycle.ever_ready and not code_reload:
            raise HaltServer(f"worker failed to boot: {reason}", exit_status=exit_status)
        self.boot_failures += 1
        if self.boot_failures >= BOOT_FAILURE_LIMIT and not code_reload:
            raise HaltServer(f"workers failed to boot {self.boot_failures} times in a row: {reason}",
                             exit_status=exit_status)
        delay = min(10.0, 0.5 * 2 ** self.boot_failures)
        self.respawn_at = self.system.monotonic() + delay
        log.error("worker failed to boot (%s); retrying in %.1fs", reason, delay)

    # ---- liveness and readiness ------------------------------------------------

    def notice_readiness(self) -> bool:
        """Record workers that became ready; True when any did."""
        ready_any = False
        for rec in self.workers.values():
            if not rec.ready_seen and self.slots.read(rec.slot)[1] is WorkerState.READY:
                rec.ready_seen = True
                ready_any = True
                if rec.generation == self.generation:
                    self.boot_failures = 0
        return ready_any

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

    def enforce_timeouts(self) -> None:
        timeout = float(self.cfg.timeout or 0)
        if timeout <= 0:
            return
        now = self.system.monotonic()
        watched_from = self._watched_from(now, timeout)
        for rec in list(self.workers.values()):
            beat = max(self.slots.read(rec.slot)[0], watched_from)
            if rec.abort_sent:
                if now - rec.abort_sent > KILL_AFTER_ABORT:
                    self._signal(rec.pid, signal.SIGKILL)
            elif now - beat > timeout:
                log.critical("WORKER TIMEOUT (pid:%s)", rec.pid)
                rec.abort_sent = now
                self._signal(rec.pid, signal.SIGABRT)
            elif rec.term_sent and now - rec.term_sent > float(self.cfg.graceful_timeout) + 1:
                self._signal(rec.pid, signal.SIGKILL)

    def _signal(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.system.kill(pid, sig)

    def master_fds(self) -> list[int]:
        """What a child other than a worker-to-be must not keep: the pipe's write end."""
        return [self.parent_w]


def exit_reason(rec: WorkerRecord, status: int, code: int, state: WorkerState,
                slot_reason: str = "") -> str:
    """Why a worker left, as one of instrument's WORKER_EXIT_REASONS."""
    if rec.abort_sent:
        return "timeout"
    if rec.term_sent:
        return "retired"
    if code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR) or state in (WorkerState.BOOT_FAILED,
                                                                  WorkerState.BOOTING):
        return "boot_failed"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    if code != 0:
        return "crashed"
    return "max_requests" if slot_reason == MAX_REQUESTS_REASON else "exited"


def _drop_privileges(cfg: Any) -> None:
    gid, uid = cfg.group, cfg.user
    try:
        if gid is not None and gid != os.getgid():
            os.setgroups([])  # none of the master user's supplementary groups
            os.setgid(gid)
        if uid is not None and uid != os.getuid():
            if getattr(cfg, "initgroups", False):
                _init_groups(uid)
            os.setuid(uid)
    except OSError as exc:
        log.error("cannot switch to user %s / group %s: %s", uid, gid, exc)
        os._exit(WORKER_BOOT_ERROR)


def _init_groups(uid: int) -> None:
    """--initgroups: the worker also takes every group its user belongs to (as
    Gunicorn does with os.initgroups), e.g. to read files shared through a group."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a bare uid has no group list to take
        log.warning("--initgroups: uid %s has no user name; no supplementary groups", uid)
        return
    os.initgroups(name, os.getgid())
