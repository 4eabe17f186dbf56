"""The master's loop and its signal table.

Signal handlers only enqueue (and wake select() through the wakeup fd); the
loop does the work, in Gunicorn's arbiter order: wait, dispatch the queued
signals through the table (one `handle_<name>` each), then the turn's duties
(reap, enforce heartbeats, advance a reload or an upgrade, keep the worker
count). Never start a thread here: the master forks, and a fork copies locks
held by other threads.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from polycorn.server.master.state import Lifecycle, MasterState
from polycorn.server.master.system import System

log = logging.getLogger("polycorn.error")

SIGNALS = {signal.SIGHUP: "hup", signal.SIGTERM: "term", signal.SIGINT: "int",
           signal.SIGQUIT: "quit", signal.SIGTTIN: "ttin", signal.SIGTTOU: "ttou",
           signal.SIGUSR1: "usr1", signal.SIGUSR2: "usr2", signal.SIGWINCH: "winch",
           signal.SIGCHLD: "chld"}
QUEUE_LIMIT = 64  # signals beyond this, unhandled yet, are dropped (a flood, not intent)


class MasterLoop:
    """wait -> dispatch signals -> duties, until the master is STOPPED."""

    def __init__(self, system: System, lifecycle: Lifecycle,
                 handlers: dict[str, Callable[[], None]], *,
                 duties: Callable[[], None],
                 timeout: Callable[[], float],
                 readers: Callable[[], dict[int, Callable[[], None]]]) -> None:
        missing = set(SIGNALS.values()) - set(handlers)
        if missing:
            raise ValueError(f"no handler for signals: {sorted(missing)}")
        self.system = system
        self.lifecycle = lifecycle
        self.handlers = handlers  # the signal table: name -> what the loop does for it
        self.duties = duties  # the rest of one turn
        self.timeout = timeout  # how long the next wait may last
        self.readers = readers  # fd -> what to do when it is readable
        self.queue: collections.deque[int] = collections.deque()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)

    def install(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, self.enqueue)
            signal.siginterrupt(sig, False)

    def enqueue(self, signum: int, frame: Any = None) -> None:
        # Only enqueue: the loop does the work (logging here could deadlock).
        if len(self.queue) < QUEUE_LIMIT:
            self.queue.append(signum)

    def run(self) -> None:
        while self.lifecycle.state is not MasterState.STOPPED:
            self.turn()

    def turn(self) -> None:
        self.wait(self.timeout())
        while self.queue:
            self.dispatch(self.queue.popleft())
        self.duties()

    def wait(self, timeout: float) -> None:
        readers = self.readers()
        try:
            ready = self.system.select([self.wake_r, *readers], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd == self.wake_r:
                self._drain_wakeups()
            elif fd in readers:
                readers[fd]()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass

    def dispatch(self, signum: int) -> None:
        name = SIGNALS.get(signum)
        if name is None:
            return
        if name != "chld":
            log.info("Handling signal: %s", name)
        self.handlers[name]()

    def fds(self) -> list[int]:
        """What a forked child must close (the wakeup pipe is the master's alone)."""
        return [self.wake_r, self.wake_w]
