"""Sidecars: extra child processes of the master (the cluster agent is one).

The master forks each sidecar after binding, supervises it like a worker
(restart with capped exponential back-off) and talks to it over a socketpair
in newline-delimited JSON. The master never blocks on a sidecar: its end of
the channel is non-blocking and read only when select() says so. EOF on the
sidecar's end means the master is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polycorn.server import messages, proctitle
from polycorn.server.master.system import System
from polycorn.server.messages import Hello, Message, Received, State

log = logging.getLogger("polycorn.error")

MAX_MESSAGE = 1 << 20  # a peer that sends a longer line is broken


class ChannelClosed(Exception):
    """The other end closed the channel (for a sidecar: its master is gone)."""


class Channel:
    """One end of a JSON-lines socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(str(exc)) from None

    def _read_available(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            data = b""
        if not data:
            raise ChannelClosed("peer closed the channel")
        self._buf += data
        if len(self._buf) > MAX_MESSAGE and b"\n" not in self._buf:
            raise ChannelClosed("message too long")

    def _pop(self) -> dict[str, Any] | None:
        line, sep, rest = self._buf.partition(b"\n")
        if not sep:
            return None
        self._buf = rest
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("dropping a malformed sidecar message: %r", line[:200])
            return self._pop()
        return message if isinstance(message, dict) else self._pop()

    def receive_ready(self) -> list[dict[str, Any]]:
        """Non-blocking: read what is there and return every complete message."""
        self._read_available()
        out = []
        while (msg := self._pop()) is not None:
            out.append(msg)
        return out

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Blocking (for the sidecar side): the next message, or None after timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (msg := self._pop()) is None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return None
            self._read_available()
        return msg

    def close(self) -> None:
        self.sock.close()


@dataclass
class Sidecar:
    """A process the master runs beside its workers: `target(channel)` runs in the child.

    Its process title is `polycorn: TITLE [NAME]` (TITLE defaults to its name).
    """

    name: str
    target: Callable[[Channel], None]
    title: str = ""


@dataclass
class SidecarProcess:
    spec: Sidecar
    pid: int = 0
    channel: Channel | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    pending: list[dict[str, Any]] = field(default_factory=list)


BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a sidecar that ran this long resets its back-off


class SidecarSupervisor:
    """Master-side: start, watch and restart sidecars; route their messages."""

    def __init__(self, specs: list[Sidecar], close_in_child: Callable[[], None],
                 proc_name: str = "polycorn", system: System | None = None) -> None:
        self.system = system or System()  # fork, kill, clock: a fake one in unit tests
        self.procs = [SidecarProcess(spec) for spec in specs]
        self.proc_name = proc_name  # NAME in the sidecars' process titles
        self._close_in_child = close_in_child  # closes the master's own fds after fork
        self.stopping = False  # the master is stopping: a sidecar that exits stays down
        self.last_hello: Hello | None = None
        self.last_state: State | None = None

    def channels(self) -> dict[int, SidecarProcess]:
        return {p.channel.fileno(): p for p in self.procs if p.channel is not None}

    def pids(self) -> set[int]:
        return {p.pid for p in self.procs if p.pid}

    def start_due(self) -> None:
        if self.stopping:
            return
        now = self.system.monotonic()
        for proc in self.procs:
            if proc.pid == 0 and now >= proc.restart_at:
                self._spawn(proc)

    def _spawn(self, proc: SidecarProcess) -> None:
        master_end, child_end = socket.socketpair()
        pid = self.system.fork()
        if pid == 0:  # child
            status = 0
            try:
                master_end.close()
                proctitle.set_title(proc.spec.title or proc.spec.name, self.proc_name)
                for other in self.procs:
                    if other.channel is not None:
                        other.channel.close()
                self._close_in_child()
                proc.spec.target(Channel(child_end))
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 0
            except BaseException:
                log.exception("sidecar %s crashed", proc.spec.name)
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        child_end.close()
        master_end.setblocking(False)
        proc.pid, proc.channel, proc.started = pid, Channel(master_end), self.system.monotonic()
        log.info("sidecar %s started (pid %s)", proc.spec.name, pid)
        # A restarted sidecar must learn the node's current facts at once.
        for msg in (self.last_hello, self.last_state):
            if msg is not None:
                self._send(proc, msg, messages.WIRE_VERSION)

    def reaped(self, pid: int, status: str) -> bool:
        """Called by the master's reaper; True when pid was one of ours."""
        for proc in self.procs:
            if proc.pid == pid:
                if proc.channel is not None:
                    proc.channel.close()
                ran = self.system.monotonic() - proc.started
                proc.failures = 0 if ran > STABLE_AFTER else proc.failures + 1
                delay = min(BACKOFF_MAX, 0.5 * (2 ** proc.failures)) if proc.failures else 0.1
                proc.pid, proc.channel = 0, None
                proc.restart_at = self.system.monotonic() + delay
                if self.stopping:
                    log.info("sidecar %s (pid %s) exited: %s", proc.spec.name, pid, status)
                else:
                    log.warning("sidecar %s (pid %s) exited: %s; restarting in %.1fs",
                                proc.spec.name, pid, status, delay)
                return True
        return False

    def broadcast(self, message: Message) -> None:
        """To every sidecar, in WIRE_VERSION: the master speaks first on this channel."""
        if isinstance(message, Hello):
            self.last_hello = message
        elif isinstance(message, State):
            self.last_state = message
        for proc in self.procs:
            if proc.channel is not None:
                self._send(proc, message, messages.WIRE_VERSION)

    def reply(self, proc: SidecarProcess, message: Message, version: int) -> None:
        """An answer, in the version the sidecar spoke (messages.speak)."""
        if proc.channel is not None:
            self._send(proc, message, messages.speak(version))

    def _send(self, proc: SidecarProcess, message: Message, version: int) -> None:
        try:
            assert proc.channel is not None
            proc.channel.send(message.to_wire(version))
        except (ChannelClosed, BlockingIOError, OSError) as exc:
            # A sidecar that does not read its channel must not stall the master.
            log.warning("sidecar %s: message dropped: %s", proc.spec.name, exc)

    def read(self, proc: SidecarProcess) -> list[Received]:
        """The sidecar's commands; a message this release cannot read is logged and dropped."""
        assert proc.channel is not None
        try:
            raws = proc.channel.receive_ready()
        except ChannelClosed:
            return []
        return messages.receive(raws, messages.FOR_MASTER_FROM_SIDECAR, f"master {self.proc_name}",
                                log, f"dropped it (sent by sidecar {proc.spec.name}, pid "
                                f"{proc.pid}); the master carries on")

    def stop(self, sig: int) -> None:
        self.stopping = True
        for proc in self.procs:
            if proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    self.system.kill(proc.pid, sig)
