"""HUP: a new generation of workers, health-gated, beside the serving one.

A mixin of Arbiter. The new generation boots with the freshly read config;
only when every new worker is ready are the old ones retired. A new worker
that fails to boot, or a generation not ready within --upgrade-timeout, is
killed and the old configuration and workers stay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

from polycorn.server.arbiter_state import MasterState

log = logging.getLogger("polycorn.error")


class ReloadMixin:

    def start_reload(self, why: str, *, fresh_config: bool = True) -> None:
        if self.state is MasterState.BOOTING:
            self.deferred.append(self.handle_hup)  # done once the first workers are ready
            return
        if self.state is not MasterState.READY:
            log.warning("reload (%s) ignored: master is %s", why, self.state.value)
            return
        new_cfg = self.cfg
        if self.reload_config is not None and fresh_config:
            try:
                new_cfg = self.reload_config()
            except Exception as exc:
                log.error("reload failed: bad configuration: %s", exc)
                return
        self.previous_cfg, self.cfg = self.cfg, new_cfg
        if fresh_config:
            self.retitle()
            self.cfg.on_reload(self)
        self.state = MasterState.RELOADING
        self.candidate = self.generation + 1
        self.candidate_deadline = time.monotonic() + float(getattr(self.cfg, "upgrade_timeout", 60))
        target = int(self.cfg.workers) if new_cfg is not self.previous_cfg else self.num_workers
        self.candidate_target = target
        for _ in range(target):
            self.spawn_worker(self.candidate, self.cfg)

    def follow_code_changes(self) -> None:
        """--reload: a worker saw a source file change since our last reload began.

        Gunicorn restarts each worker on its own, so a syntax error leaves nothing
        serving; here the change starts a health-gated reload (the code only, not the
        configuration, and no on_reload hook, as in Gunicorn). Checked only when
        READY: a change seen during a reload starts the next one after it.
        """
        if self.state is not MasterState.READY or not getattr(self.cfg, "reload", False):
            return
        if self.slots.code_changed_at() > self.code_reload_at:
            # Wall-clock, as file times are: an edit saved after this instant (which
            # the new workers may not have imported) starts one more reload.
            self.code_reload_at = time.time()
            log.info("reload: the application's code changed")
            self.start_reload("code change", fresh_config=False)

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
            self.retitle()
        self.state = MasterState.READY
        log.error("reload failed: %s; the old workers keep serving", reason)
        self.broadcast_event("reload_failed", reason)
