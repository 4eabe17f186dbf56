"""Reload (HUP, a sidecar's command, --reload): a new generation, health-gated.

The new generation boots beside the serving one with the freshly read
configuration; only when every new worker is ready are the old ones retired.
A new worker that fails to boot, or a generation not ready within
--upgrade-timeout, is killed and the old configuration and workers stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from polycorn.server import instrument
from polycorn.server.master.pool import WorkerPool
from polycorn.server.master.sidecars import Announcer
from polycorn.server.master.state import CurrentConfig, Lifecycle, MasterState
from polycorn.server.master.system import System

log = logging.getLogger("polycorn.error")


class Reload:
    """One health-gated reload at a time: start, advance each turn, or abort."""

    def __init__(self, system: System, lifecycle: Lifecycle, config: CurrentConfig,
                 pool: WorkerPool, announcer: Announcer, *, server: Any,
                 reload_config: Callable[[], Any] | None = None,
                 retitle: Callable[[], None] = lambda: None) -> None:
        self.system = system
        self.lifecycle = lifecycle
        self.config = config
        self.pool = pool
        self.announcer = announcer
        self.server = server  # the object Gunicorn's on_reload hook receives
        self.reload_config = reload_config  # returns a freshly read Config (HUP)
        self.retitle = retitle  # a HUP may bring a new -n/--name
        self.target = 0  # worker count of the candidate generation
        self.deadline = 0.0
        self.code_reload_at = 0.0  # --reload: when (wall clock) the last code reload began

    @property
    def in_progress(self) -> bool:
        return self.pool.candidate is not None

    def start(self, why: str, *, fresh_config: bool = True) -> None:
        if self.lifecycle.state is MasterState.BOOTING:
            self.lifecycle.defer(lambda: self.start("HUP"))  # once the first workers are ready
            return
        if self.lifecycle.state is not MasterState.READY:
            log.warning("reload (%s) ignored: master is %s", why, self.lifecycle.state.value)
            return
        new_cfg = self.config.cfg
        if self.reload_config is not None and fresh_config:
            try:
                new_cfg = self.reload_config()
            except Exception as exc:
                log.error("reload failed: bad configuration: %s", exc)
                return
        self.config.swap(new_cfg)
        cfg = self.config.cfg
        if fresh_config:
            self.retitle()
            cfg.on_reload(self.server)
        self.lifecycle.state = MasterState.RELOADING
        candidate = self.pool.begin_candidate()
        self.deadline = self.system.monotonic() + float(getattr(cfg, "upgrade_timeout", 60))
        self.target = (int(cfg.workers) if new_cfg is not self.config.previous
                       else self.pool.num_workers)
        for _ in range(self.target):
            self.pool.spawn(candidate, cfg)

    def follow_code_changes(self) -> None:
        """--reload: a worker saw a source file change since our last reload began.

        Gunicorn restarts each worker on its own, so a syntax error leaves nothing
        serving; here the change starts a health-gated reload (the code only, not the
        configuration, and no on_reload hook, as in Gunicorn). Checked only when
        READY: a change seen during a reload starts the next one after it.
        """
        if self.lifecycle.state is not MasterState.READY \
                or not getattr(self.config.cfg, "reload", False):
            return
        if self.pool.slots.code_changed_at() > self.code_reload_at:
            # Wall-clock, as file times are: an edit saved after this instant (which
            # the new workers may not have imported) starts one more reload.
            self.code_reload_at = self.system.time()
            log.info("reload: the application's code changed")
            self.start("code change", fresh_config=False)

    def advance(self) -> None:
        candidate = self.pool.candidate
        if candidate is None:
            return
        if self.pool.notice_readiness():
            self.announcer.state()
        new = self.pool.live(candidate)
        if len(new) >= self.target and all(r.ready_seen for r in new):
            self.pool.promote_candidate(self.target)
            self.lifecycle.state = MasterState.READY
            self.config.settle()
            log.info("reload complete: %s new workers serving", len(new))
            instrument.current().event(instrument.RELOAD_PROMOTED, f"{len(new)} new workers")
            self.announcer.state("ready")
        elif self.system.monotonic() > self.deadline:
            self.abort(f"new workers not ready within {self.config.cfg.upgrade_timeout}s")
        elif len(new) < self.target:
            # A new worker died without a boot error (killed): replace it.
            for _ in range(self.target - len(new)):
                self.pool.spawn(candidate, self.config.cfg)

    def abort(self, reason: str) -> None:
        self.pool.drop_candidate()
        if self.config.restore():
            self.retitle()
        self.lifecycle.state = MasterState.READY
        log.error("reload failed: %s; the old workers keep serving", reason)
        self.announcer.event("reload_failed", reason)
