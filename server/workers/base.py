"""The worker lifecycle shared by every worker class.

The base owns what is the same for all: signals, the heartbeat, readiness (the
app loaded and, with --health-check, answering 2xx in-process), parent death,
max-requests and graceful stop. A concrete worker owns only its accept/serve
loop (`run`), and calls `notify()` from that loop so the heartbeat proves real
progress.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import signal
import socket
import sys
import traceback
from typing import Any

from polycorn.server import instrument

# Imported here, in the master, not lazily in each worker: one import for all
# forks, and a worker that has dropped privileges may no longer be able to read
# the interpreter's library (e.g. a Python installed under /root).
from polycorn.server.app import AppImportError, load_app
from polycorn.server.asgi.shape import mismatch
from polycorn.server.exitcodes import WORKER_BOOT_ERROR
from polycorn.server.instrument.requests import request_log
from polycorn.server.liveness import MAX_REQUESTS_REASON, SlotTable, WorkerState
from polycorn.server.logs import reopen
from polycorn.server.reloader import Reloader
from polycorn.server.sockets import Listener
from polycorn.server.tls import TLSConfigError, build_context
from polycorn.server.wsgi.handler import WSGIHandler

log = logging.getLogger("polycorn.error")


# The signals the master sends a worker. Between fork() and the worker's own handlers
# the child runs the master's handler, which only queues a signal for the master's
# loop: a TERM sent then (a WINCH or TTOU right after a spawn) was lost, and the
# worker served on. The master blocks them over the fork; the worker unblocks them.
WORKER_SIGNALS = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT,
                            signal.SIGUSR1))

class RunState(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"  # stop accepting, finish what we hold, then exit
    STOPPED = "stopped"


class Worker:
    """One worker process. Built in the master, then `start()` runs in the child after fork."""

    def __init__(self, *, age: int, generation: int, ppid: int, cfg: Any, listeners: list[Listener],
                 slots: SlotTable, slot: int, parent_fd: int, app: Any = None,
                 server: Any = None) -> None:
        self.age = age
        self.generation = generation
        self.ppid = ppid
        self.cfg = cfg
        self.listeners = listeners
        self.slots = slots
        self.slot = slot
        self.parent_fd = parent_fd  # read end of the master's pipe: EOF means the master died
        self.app = app  # already loaded when --preload
        self.pid = 0
        self.log = log
        self.state = RunState.RUNNING
        self.requests = 0
        self.max_requests = self._max_requests(cfg)
        self.handler: Any = None
        self.server = server  # the arbiter, as Gunicorn's hooks receive it
        self.booted = False  # Gunicorn's: True once post_worker_init has run
        self.ssl_context: Any = None  # an ssl.SSLContext once booted with --certfile
        self.aborted = False  # Gunicorn's: the master's timeout (SIGABRT) stopped us
        self._wake_r = self._wake_w = -1

    # ---- what Gunicorn's hooks read from `worker` ---------------------------

    @property
    def alive(self) -> bool:
        return self.state is RunState.RUNNING

    @property
    def wsgi(self) -> Any:
        """The WSGI callable (Gunicorn's worker.wsgi; worker.app is the same here)."""
        return self.app

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets this worker accepts on."""
        return [listener.sock for listener in self.listeners]

    @property
    def nr(self) -> int:
        """Requests served so far (Gunicorn's counter name)."""
        return self.requests

    @property
    def timeout(self) -> float:
        return float(getattr(self.cfg, "timeout", 30) or 0)

    @staticmethod
    def _max_requests(cfg: Any) -> int:
        limit = int(getattr(cfg, "max_requests", 0) or 0)
        if limit <= 0:
            return sys.maxsize
        jitter = int(getattr(cfg, "max_requests_jitter", 0) or 0)
        return limit + (random.randint(0, jitter) if jitter > 0 else 0)

    # ---- in the child -------------------------------------------------------

    def start(self) -> None:
        """Entry point in the forked child; never returns."""
        status = 0
        try:
            self.pid = os.getpid()
            self._install_signals()
            try:
                self._boot()
            except SystemExit:
                raise
            except BaseException as exc:  # any failure before ready is a boot failure
                self._fail(WORKER_BOOT_ERROR, f"boot failed: {exc!r}", traceback.format_exc())
            self.run()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            log.exception("worker %s crashed", os.getpid())
            status = 1
        finally:
            try:
                self.cfg.worker_exit(self.server, self)
            except Exception:
                log.exception("worker_exit hook failed")
            finally:
                instrument.current().close()  # the last batch of metrics
                logging.shutdown()
                os._exit(status)

    def _boot(self) -> None:
        self.slots.heartbeat(self.slot)
        try:  # from the files now: a HUP or USR2 generation serves a rotated certificate
            self.ssl_context = build_context(self.cfg)
        except TLSConfigError as exc:  # the health-gated reload keeps the old workers
            self._fail(WORKER_BOOT_ERROR, f"TLS: {exc}")
        if self.app is None:
            self.app = self._load_app()
        problem = mismatch(self.app, getattr(self.cfg, "app_spec", None), self.kind)
        if problem:
            self._fail(WORKER_BOOT_ERROR, problem)
        self.handler = WSGIHandler(self.app, self.cfg, self, request_log(self.cfg))
        self._before_ready()
        self.cfg.post_worker_init(self)
        self.booted = True
        if getattr(self.cfg, "reload", False):
            Reloader(self._code_changed).start()
        self.slots.set_state(self.slot, WorkerState.READY)
        log.debug("worker %s ready", self.pid)

    @property
    def kind(self) -> str:
        """The -k name this worker runs as (what the app-shape check names)."""
        return str(getattr(self.cfg, "worker_class_resolved", None) or "sync")

    def _before_ready(self) -> None:
        """The app is loaded: with --health-check, it must answer 2xx before we are ready."""
        path = getattr(self.cfg, "health_check", None)
        if path:
            status = self.handler.health_check(path)
            if not 200 <= status < 300:
                # The app loaded but cannot serve: a failed boot, as a raising hook is.
                self._fail(WORKER_BOOT_ERROR, f"health check GET {path} answered {status}")

    def _load_app(self) -> Any:
        try:
            return load_app(self.cfg.app_spec)
        except AppImportError as exc:
            self._fail(exc.exit_status, str(exc), getattr(exc, "traceback", None))
        except Exception as exc:
            self._fail(WORKER_BOOT_ERROR, f"cannot load {self.cfg.app_spec}: {exc!r}",
                       traceback.format_exc())

    def _fail(self, status: int, reason: str, tb: str | None = None) -> None:
        """Record why this worker cannot serve, for the master, and exit."""
        self.slots.set_state(self.slot, WorkerState.BOOT_FAILED, reason)
        log.error("worker %s failed to boot: %s", self.pid, reason)
        if tb:
            log.debug("%s", tb)
        raise SystemExit(status)

    def _install_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU,
                    signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGABRT, self._on_abort)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        # A self-pipe wakes the accept loop at once on TERM (set_wakeup_fd
        # also interrupts select); system calls restart after the handler.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.siginterrupt(sig, False)
        # The master blocked these over the fork (see spawn_worker): one sent before now
        # is pending, and is delivered to our handlers here, not lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.drain("TERM")

    def _on_quit(self, signum: int, frame: Any) -> None:
        self.state = RunState.STOPPED  # so a request cut short answers 500, then we exit
        self.cfg.worker_int(self)
        sys.exit(0)

    def _on_abort(self, signum: int, frame: Any) -> None:
        # The master saw no heartbeat within --timeout. Where the main thread stood
        # tells an app that hangs from a worker that waited on something it must not.
        log.error("worker %s aborted: no heartbeat within --timeout %ss; it was in %s",
                  os.getpid(), self.cfg.timeout, where(frame))
        # The SystemExit below unwinds the app call it interrupts; the request cycle
        # answers 500 and runs post_request first.
        self.state = RunState.STOPPED
        self.aborted = True
        self.cfg.worker_abort(self)
        sys.exit(1)

    def _on_usr1(self, signum: int, frame: Any) -> None:
        reopen()

    def _code_changed(self, path: str, mtime: float) -> None:
        """--reload (in the reloader thread): the master reloads, health-gated; this
        worker serves on until the new ones are ready, and keeps watching."""
        log.info("worker %s: %s changed; asking master %s to reload", self.pid, path, self.ppid)
        self.slots.mark_code_changed(mtime)

    def drain(self, reason: str) -> None:
        if self.state is RunState.RUNNING:
            self.state = RunState.DRAINING
            self._drain_reason = reason

    # ---- helpers for the concrete loops -------------------------------------

    def notify(self) -> None:
        """Heartbeat: called from the worker's main loop only."""
        self.slots.heartbeat(self.slot)
        instruments = instrument.current()
        instruments.tick()  # metrics batched while requests came
        if instruments.active:
            instruments.connections(self.open_connections())

    def open_connections(self) -> int:
        """Client connections this worker holds now (the instruments' gauge)."""
        return 0

    @property
    def wait_fds(self) -> list[int]:
        """Descriptors besides the listeners that must wake the loop: parent death and signals."""
        return [self.parent_fd, self._wake_r]

    def check_wakeups(self, ready: list[int] | set[int]) -> None:
        """React to the non-listener fds that select() reported ready."""
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 512)
            except BlockingIOError:
                pass
        if self.parent_fd in ready:
            self.parent_died()

    def parent_died(self) -> None:
        """EOF on the master's pipe: never serve unsupervised (stop accepting, finish, exit)."""
        if self.state is RunState.RUNNING:
            log.warning("worker %s: master %s is gone; finishing in-flight requests and exiting",
                        self.pid, self.ppid)
        self.drain("master gone")

    def count_request(self) -> None:
        self.requests += 1
        if self.requests >= self.max_requests and self.state is RunState.RUNNING:
            log.info("worker %s: max requests (%s) reached; restarting", self.pid, self.max_requests)
            # The master reads why it left (worker exits by reason); the state is unchanged.
            self.slots.set_state(self.slot, WorkerState.READY, MAX_REQUESTS_REASON)
            self.drain("max requests")

    @property
    def select_timeout(self) -> float:
        # Wake often enough to heartbeat well inside --timeout.
        timeout = float(getattr(self.cfg, "timeout", 30) or 30)
        return max(0.05, min(1.0, timeout / 4))

    def accept(self, listener: Listener) -> tuple[socket.socket, Any] | None:
        try:
            sock, addr = listener.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None  # another worker (or master) won the race
        sock.setblocking(True)
        return sock, addr

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def where(frame: Any, depth: int = 4) -> str:
    """The innermost `depth` frames of a stack, innermost first, on one line."""
    if frame is None:
        return "?"
    stack = traceback.extract_stack(frame)[-depth:]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                       for f in reversed(stack))
