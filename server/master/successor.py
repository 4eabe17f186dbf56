"""USR2, in one place: the next master, health-gated, promoted or rolled back.

The old master re-executes the original command line (`sys.orig_argv`, in the
working directory as the operator spelled it, so a switched `current` symlink
brings the new release and its interpreter) in its own process group, and
passes it, over a private socketpair, the listening sockets and every lock
that makes this master who it is (hand-off path, master index). The new master
boots its workers; when all are ready it says "ready", the old one answers
"promote" and drains. If the new one says "failed", exits, or is not ready in
time, the old one kills its whole process group and keeps serving: requests
are never refused because the listeners were never closed.

Old side: `Succession` (one `SuccessorAttempt` at a time). New side:
`Predecessor` (the link to the master it replaces). Both record outcomes in
the status file (`StatusFile`) that `polycorn --upgrade` reads.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polycorn.server import identity, messages, pidfile, systemd
from polycorn.server.handoff import receive_listeners, send_listeners
from polycorn.server.master.sidecars import Announcer
from polycorn.server.master.state import (
    CurrentConfig,
    Lifecycle,
    MasterState,
    Rotation,
    describe_status,
)
from polycorn.server.master.system import System
from polycorn.server.messages import FOR_NEW_MASTER, Failed, Promote, Ready, Received, speak
from polycorn.server.process import successor_environ
from polycorn.server.sidecar import Channel, ChannelClosed
from polycorn.server.sockets import Listener

log = logging.getLogger("polycorn.error")

ENV_FD = "POLYCORN_UPGRADE_FD"


class Outcome(enum.Enum):
    UPGRADING = "upgrading"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


# ---- the status file (read by `polycorn --upgrade`, server/upgrade_command.py) ----

def status_path(pidfile_path: str | None, index: int) -> str | None:
    """Where a master records its upgrade outcomes, for `polycorn --upgrade PIDFILE`."""
    return f"{pidfile_path}.m{index}" if pidfile_path else None


class StatusFile:
    """`PIDFILE.m<index>`: this master's stamp, state and upgrade attempt count."""

    def __init__(self, system: System, path: str | None, *, pid: int, index: int) -> None:
        self.system = system
        self.path = path
        self.pid = pid
        self.index = index
        self.attempt = 0  # upgrade attempts started by this master

    def record(self, state: str, **extra: Any) -> None:
        if not self.path:
            return
        # The stamp (pid, start time, boot id) lets `polycorn --upgrade` tell this master
        # from a process that got its pid after it died.
        record = {**identity.stamp(self.pid), "index": self.index, "state": state,
                  "attempt": self.attempt, "time": self.system.time(), **extra}
        try:
            identity.write_record(self.path, record)
        except OSError as exc:
            log.warning("cannot write upgrade status %s: %s", self.path, exc)

    def remove(self) -> None:
        """On exit: remove the file if it still records this master.

        A stale file names a pid the kernel may give to another process. After a
        promotion the new master has rewritten it with its own pid, and it stays.
        """
        if not self.path:
            return
        record = identity.read_record(self.path)
        if record is not None and record.get("pid") == self.pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


# ---- the old master's side ------------------------------------------------------

class SuccessorAttempt:
    """One spawned successor: its channel, its messages, its deadline."""

    def __init__(self, system: System, attempt: int, listeners: list[Listener],
                 extra_fds: dict[str, int], argv: list[str], cwd: str, timeout: float, *,
                 drained: bool = False) -> None:
        self.system = system
        self.attempt = attempt
        self.outcome = Outcome.UPGRADING
        self.reason = ""
        self.started = system.monotonic()
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.new_pid = 0
        self.channel: Channel | None = None
        self._spawn(listeners, extra_fds, argv, cwd, drained)

    def _spawn(self, listeners: list[Listener], extra_fds: dict[str, int], argv: list[str],
               cwd: str, drained: bool) -> None:
        ours, theirs = socket.socketpair()
        env = successor_environ()
        env[ENV_FD] = str(theirs.fileno())
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
        self.new_pid = self.system.spawn_successor(argv, env, cwd, theirs.fileno())
        theirs.close()
        ours.settimeout(5)
        try:
            send_listeners(ours, listeners, {"owner": os.getpid(), "attempt": self.attempt,
                                             "drained": drained,
                                             messages.ANNOUNCE_KEY: messages.WIRE_VERSION},
                           extra_fds)
        except OSError as exc:
            self.fail(f"could not pass the sockets: {exc}")
        ours.setblocking(False)
        self.channel = Channel(ours)

    def fileno(self) -> int:
        return self.channel.fileno() if self.channel else -1

    def poll(self) -> Outcome:
        """Read the new master's messages; roll back on failure or timeout."""
        if self.outcome is not Outcome.UPGRADING:
            return self.outcome
        if self.channel is not None:
            try:
                for msg in self.channel.receive_ready():
                    self._receive(msg)
            except ChannelClosed:
                self.fail("the new master closed its channel before it was ready")
        if self.outcome is Outcome.UPGRADING and self.system.monotonic() > self.deadline:
            self.fail(f"the new master was not ready within {self.timeout:g}s")
        return self.outcome

    def _receive(self, raw: dict[str, Any]) -> None:
        if self.outcome is not Outcome.UPGRADING:
            return
        try:
            received = messages.from_wire(raw, messages.FOR_OLD_MASTER)
        except messages.MessageError as exc:
            # A new master this release cannot understand can never be promoted by it:
            # roll back now, with the reason, rather than at the readiness timeout.
            log.warning(messages.refusal_line(
                "master", exc, f"rolling back the new master {self.new_pid} "
                f"(upgrade attempt {self.attempt})"))
            self.fail(f"the new master {self.new_pid} sent a message this release cannot "
                      f"read: {exc.reason}")
            return
        self._handle(received)

    def _handle(self, received: Received) -> None:
        msg = received.message
        if isinstance(msg, Ready):
            assert self.channel is not None
            try:  # in the version the new master spoke: an older release reads it
                self.channel.send(Promote().to_wire(speak(received.version)))
            except ChannelClosed:
                self.fail("the new master vanished at promotion")
                return
            self.outcome = Outcome.PROMOTED
        elif isinstance(msg, Failed):
            self.fail(msg.reason or "the new master failed")

    def child_exited(self, status_text: str) -> None:
        if self.outcome is Outcome.UPGRADING:
            self.fail(f"the new master exited ({status_text})")

    def fail(self, reason: str) -> None:
        if self.outcome is not Outcome.UPGRADING:
            return
        self.outcome, self.reason = Outcome.ROLLED_BACK, reason
        if self.new_pid:
            # The whole group: the new master, its workers and its sidecars.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self.system.killpg(self.new_pid, signal.SIGKILL)
        if self.channel is not None:
            self.channel.close()
            self.channel = None


class Succession:
    """The old master's side of USR2: start an attempt, follow it, promote or roll back."""

    def __init__(self, system: System, lifecycle: Lifecycle, config: CurrentConfig,
                 rotation: Rotation, announcer: Announcer, status: StatusFile,
                 predecessor: Predecessor, *, server: Any, argv: list[str], cwd: str,
                 on_promoted: Callable[[], None]) -> None:
        self.system = system
        self.lifecycle = lifecycle
        self.config = config
        self.rotation = rotation
        self.announcer = announcer
        self.status = status
        self.predecessor = predecessor  # set while we are ourselves a successor
        self.server = server  # the object Gunicorn's pre_exec hook receives
        self.argv = argv
        self.cwd = cwd
        self.on_promoted = on_promoted  # drain and stop: the successor serves now
        self.listeners: list[Listener] = []
        self.group: Any = None  # MasterGroup: its locks go to the successor
        self.attempt: SuccessorAttempt | None = None
        self.successor = 0  # pid of the master we handed over to

    def attach(self, listeners: list[Listener], group: Any) -> None:
        self.listeners, self.group = listeners, group

    def refusal(self) -> str:
        """Why an upgrade asked for now would be ignored ("" when it would start)."""
        if self.predecessor.active:
            return "this master is itself a new generation, not yet promoted"
        if self.lifecycle.state is not MasterState.READY:
            return f"master is {self.lifecycle.state.value}"
        return ""

    def start(self) -> None:
        state = self.lifecycle.state
        if state is MasterState.BOOTING:
            self.lifecycle.defer(self.start)
            return
        if state is not MasterState.READY or self.predecessor.active:
            log.warning("upgrade ignored: master is %s%s", state.value,
                        " and not yet promoted" if self.predecessor.active else "")
            return
        self.status.attempt += 1
        cfg = self.config.cfg
        timeout = float(getattr(cfg, "upgrade_timeout", 60) or 60)
        extra = self.group.successor_fds() if self.group is not None else {}
        self.lifecycle.state = MasterState.UPGRADING
        self.attempt = SuccessorAttempt(self.system, self.status.attempt, self.listeners, extra,
                                        self.argv, self.cwd, timeout,
                                        drained=self.rotation.drained)
        log.info("upgrade started: new master pid %s (%s)", self.attempt.new_pid,
                 " ".join(self.argv))
        cfg.pre_exec(self.server)
        self.status.record("upgrading")
        self.announcer.state("upgrading")
        self.announcer.event("upgrade_started", f"new master pid {self.attempt.new_pid}")

    def advance(self) -> None:
        if self.attempt is None:
            return
        outcome = self.attempt.poll()
        if outcome is Outcome.UPGRADING:
            return
        attempt, self.attempt = self.attempt, None
        if outcome is Outcome.PROMOTED:
            self.successor = attempt.new_pid
            log.info("upgrade promoted: new master pid %s; draining the old workers",
                     attempt.new_pid)
            # The new master records itself in the status file; writing here would race it.
            self.announcer.event("upgrade_promoted", f"new master pid {attempt.new_pid}")
            self.lifecycle.state = MasterState.READY  # so that the stop drains from a clean state
            self.on_promoted()
        else:
            log.error("upgrade rolled back: %s", attempt.reason)
            self.lifecycle.state = MasterState.READY
            self.status.record("rolled_back", reason=attempt.reason, new_pid=attempt.new_pid)
            self.announcer.state("ready")
            self.announcer.event("upgrade_rolled_back", attempt.reason)

    def abandon(self, reason: str) -> None:
        """A stop during a USR2 upgrade: kill the new generation and say so now.

        Left to the reaper, the rolled-back upgrade would put the stopping master
        back to READY, and it would respawn its workers instead of stopping.
        """
        if self.attempt is None or self.attempt.outcome is not Outcome.UPGRADING:
            return
        attempt, self.attempt = self.attempt, None
        attempt.fail(reason)
        log.error("upgrade rolled back: %s", reason)
        self.status.record("rolled_back", reason=reason, new_pid=attempt.new_pid)
        self.announcer.event("upgrade_rolled_back", reason)

    def child_exited(self, pid: int, status: int) -> bool:
        """The reaper's question: was pid our successor (trying, or promoted)?"""
        if self.attempt is not None and pid == self.attempt.new_pid:
            self.attempt.child_exited(describe_status(status))
            self.advance()
            return True
        return bool(pid) and pid == self.successor

    def readers(self) -> dict[int, Callable[[], None]]:
        if self.attempt is None or self.attempt.channel is None:
            return {}
        return {self.attempt.fileno(): self.advance}

    def fds(self) -> list[int]:
        return [self.attempt.channel.fileno()] if self.attempt and self.attempt.channel else []


# ---- the new master's side ----------------------------------------------------------

@dataclass
class Inherited:
    """What a new master received from the master it replaces."""

    channel: Channel
    listeners: list[Listener]
    extra_fds: dict[str, int] = field(default_factory=dict)  # "handoff_lock", "handoff_sock", "index_lock"
    old_pid: int = 0
    drained: bool = False  # the node was drained (polycorn-ctl drain): stay so from the start
    wire_version: int = 1  # the old master's, from its hand-off header: we answer in it


def inherit_from_parent(environ: dict[str, str]) -> Inherited | None:
    """In a new master: take the sockets the old master passed, if we are an upgrade."""
    text = environ.pop(ENV_FD, None)
    if not text:
        return None
    sock = socket.socket(fileno=int(text))
    sock.settimeout(10)
    listeners, info, extra = receive_listeners(sock)
    sock.setblocking(False)
    return Inherited(Channel(sock), listeners, extra, int(info.get("owner", 0)),
                     bool(info.get("drained", False)), messages.announced_version(info))


class Predecessor:
    """The new master's link to the master it replaces, until promoted."""

    def __init__(self, system: System, inherited: Inherited | None, lifecycle: Lifecycle,
                 config: CurrentConfig, status: StatusFile, *, pid: int) -> None:
        self.system = system
        self.inherited = inherited
        self.lifecycle = lifecycle
        self.config = config
        self.status = status
        self.pid = pid
        self.group: Any = None  # MasterGroup: joined once promoted
        # The old master, from our promotion until it has exited: see keep_pidfile().
        self.exiting_master = 0

    @property
    def active(self) -> bool:
        return self.inherited is not None

    def attach(self, group: Any) -> None:
        self.group = group

    def report_ready(self) -> None:
        assert self.inherited is not None
        try:  # the old master promotes us, or rolls us back
            self.inherited.channel.send(
                Ready(self.pid).to_wire(speak(self.inherited.wire_version)))
        except ChannelClosed:
            self.promoted("the old master is gone")

    def report_failed(self, reason: str) -> None:
        """Tell the old master why we halt, so it can report it."""
        if self.inherited is not None:
            with contextlib.suppress(ChannelClosed, OSError):
                self.inherited.channel.send(
                    Failed(reason).to_wire(speak(self.inherited.wire_version)))

    def read(self) -> None:
        if self.inherited is None:  # closed earlier in this turn
            return
        try:
            raws = self.inherited.channel.receive_ready()
        except ChannelClosed:
            if self.lifecycle.state is MasterState.READY:
                self.promoted("the old master is gone")
            else:
                # Rolled back (we are about to be killed) or the old master died
                # while we boot: keep booting, and take over when ready.
                self.inherited.channel.close()
                self.inherited = None
            return
        old_pid = self.inherited.old_pid
        for received in messages.receive(
                raws, FOR_NEW_MASTER, "new master", log,
                f"ignored it (sent by the old master {old_pid}); "
                "taking over when the old master exits"):
            if isinstance(received.message, Promote):
                self.promoted("promoted by the old master")
                return

    def promoted(self, why: str) -> None:
        assert self.inherited is not None
        old = self.inherited.old_pid
        self.inherited.channel.close()
        self.inherited = None
        log.info("this master (pid %s) now serves: %s (old master %s)", self.pid, why, old)
        if self.owns_pidfile():
            pidfile.write(self.config.cfg.pidfile, self.pid)
            self.exiting_master = old
        systemd.notify(f"MAINPID={self.pid}\nREADY=1")
        if self.group is not None:
            self.group.join()  # from now on it counts among the masters serving the path
        self.status.record("running", upgraded_from=old)

    def owns_pidfile(self) -> bool:
        cfg = self.config.cfg
        return bool(cfg.pidfile) and (self.group is None or self.group.owner is not None
                                      or not cfg.handoff)

    def keep_pidfile(self) -> None:
        """Once the old master has exited, the pid file names us: rewrite it if not.

        An old master removes the pid file on exit if it still names itself, by a
        read then an unlink: our write can fall between the two and be unlinked
        (releases up to 5588dfb do that; this one no longer removes it after
        promoting). We are the old master's child, so its exit shows as a new parent.
        """
        if not self.exiting_master or self.system.getppid() == self.exiting_master:
            return
        self.exiting_master = 0
        path = self.config.cfg.pidfile
        with contextlib.suppress(pidfile.PidfileError):
            if pidfile.read(path) == self.pid and pidfile.running_pid(path) == self.pid:
                return  # the bare pid and its stamp both name us
        log.warning("master %s: the pid file %s no longer named this master after the "
                    "old master exited: written again", self.pid, path)
        with contextlib.suppress(pidfile.PidfileError):
            pidfile.write(path, self.pid)

    def readers(self) -> dict[int, Callable[[], None]]:
        return {} if self.inherited is None else {self.inherited.channel.fileno(): self.read}

    def fds(self) -> list[int]:
        return [] if self.inherited is None else [self.inherited.channel.fileno()]


def reexec_argv() -> list[str]:
    """The command line that starts this master again, paths as the operator gave them.

    A console script (`current/venv/bin/polycorn`) runs as [interpreter, script,
    ...], where the interpreter is the one written into the shebang at install
    time, i.e. the old release's. Exec the script itself instead, so the kernel
    reads its shebang anew and a switched `current` brings its own interpreter.
    """
    argv = list(sys.orig_argv)
    if len(argv) >= 2 and not argv[1].startswith("-") and os.access(argv[1], os.X_OK):
        try:
            with open(argv[1], "rb") as f:
                if f.read(2) == b"#!":
                    return argv[1:]
        except OSError:
            pass
    return argv
