"""USR2: start the next generation of the master, health-gated, with automatic rollback.

The old master re-executes the original command line (`sys.orig_argv`, in the
working directory as the operator spelled it, so a switched `current` symlink
brings the new release and its interpreter) in its own process group, and
passes it, over a private socketpair, the listening sockets and every lock
that makes this master who it is (hand-off path, master index). The new master
boots its workers; when all are ready it says so, the old one answers
"promote" and drains. If the new one fails, exits, or is not ready in time,
the old one kills its whole process group and keeps serving: requests are
never refused because the listeners were never closed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from polycorn.server import identity, messages
from polycorn.server.handoff import receive_listeners, send_listeners
from polycorn.server.messages import Failed, Promote, Ready, Received
from polycorn.server.process import successor_environ
from polycorn.server.sidecar import Channel, ChannelClosed
from polycorn.server.sockets import Listener

log = logging.getLogger("polycorn.error")

ENV_FD = "POLYCORN_UPGRADE_FD"


class Outcome(enum.Enum):
    UPGRADING = "upgrading"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


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


class Upgrade:
    """The old master's side of one upgrade attempt."""

    def __init__(self, attempt: int, listeners: list[Listener], extra_fds: dict[str, int],
                 argv: list[str], cwd: str, timeout: float, *, drained: bool = False) -> None:
        self.attempt = attempt
        self.outcome = Outcome.UPGRADING
        self.reason = ""
        self.started = time.monotonic()
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
        pid = os.fork()
        if pid == 0:  # the new master, before exec
            try:
                os.setpgid(0, 0)  # its own group: a rollback kills it and its workers at once
                signal.set_wakeup_fd(-1)
                for sig in range(1, signal.NSIG):
                    with contextlib.suppress(OSError, ValueError, RuntimeError):
                        if signal.getsignal(sig) not in (None, signal.SIG_IGN, signal.SIG_DFL):
                            signal.signal(sig, signal.SIG_DFL)
                os.set_inheritable(theirs.fileno(), True)
                with contextlib.suppress(OSError):
                    os.chdir(cwd)  # by name: a switched symlink resolves anew
                os.execvpe(argv[0], argv, env)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"polycorn: error: cannot start the new master: {exc}\n")
            os._exit(127)
        theirs.close()
        self.new_pid = pid
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
        if self.outcome is Outcome.UPGRADING and time.monotonic() > self.deadline:
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
                self.channel.send(Promote().to_wire(messages.speak(received.version)))
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
                os.killpg(self.new_pid, signal.SIGKILL)
        if self.channel is not None:
            self.channel.close()
            self.channel = None


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


def status_path(pidfile: str | None, index: int) -> str | None:
    """Where a master records its upgrade outcomes, for `polycorn --upgrade PIDFILE`."""
    return f"{pidfile}.m{index}" if pidfile else None


def write_status(path: str | None, record: dict[str, Any]) -> None:
    if not path:
        return
    try:
        identity.write_record(path, record)
    except OSError as exc:
        log.warning("cannot write upgrade status %s: %s", path, exc)


def remove_status(path: str | None, pid: int) -> None:
    """On exit: remove the status file if it still records this master.

    A stale file names a pid the kernel may give to another process. After a
    promotion the new master has rewritten it with its own pid, and it stays.
    """
    if not path:
        return
    record = identity.read_record(path)
    if record is not None and record.get("pid") == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)
