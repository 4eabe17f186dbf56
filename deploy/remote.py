"""One SSH session per host (Fabric's Connection) and the failure type of a remote step.

Every command runs with `in_stream=False` (there is no stdin under CI or pytest,
and Fabric would fail reading it), hidden output, `warn=True` and our own check
of the exit status, so a failure carries the step, the exit code and the tail
of stderr. Uploads always take a path or a per-host buffer, never a file object
shared between hosts (Fabric's ThreadingGroup corrupts those).
"""

from __future__ import annotations

import io
import shlex
import socket
from typing import Any

from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut
from paramiko.ssh_exception import SSHException
from polycorn.deploy.inventory import HostEntry

TAIL = 600  # characters of a failed command's output kept in the report


class RemoteError(Exception):
    """A step failed on a host; str() is one line fit for the final table."""

    def __init__(self, host: str, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.host, self.step, self.reason = host, step, reason


class UnreachableHost(RemoteError):
    pass


def tail(text: str) -> str:
    """The end of a command's output on one line, for a report."""
    text = " ".join(text.strip().split())
    return text if len(text) <= TAIL else "..." + text[-TAIL:]


class HostShell:
    """Commands and uploads on one host; one instance per host and thread."""

    def __init__(self, entry: HostEntry, connect_timeout: float) -> None:
        self.entry = entry
        config = Config(overrides={"run": {"in_stream": False, "hide": True, "warn": True}})
        connect_kwargs: dict[str, Any] = {"look_for_keys": entry.key is None,
                                          "allow_agent": entry.key is None,
                                          "banner_timeout": connect_timeout,
                                          "auth_timeout": connect_timeout}
        if entry.key:
            connect_kwargs["key_filename"] = [entry.key]
        self.connection = Connection(entry.address, user=entry.user, port=entry.ssh_port,
                                     config=config, connect_timeout=connect_timeout,
                                     connect_kwargs=connect_kwargs)

    @property
    def name(self) -> str:
        return self.entry.name

    def open(self) -> None:
        try:
            self.connection.open()
        except (OSError, SSHException, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, socket.timeout | TimeoutError):
                reason = "connection timed out"
            raise UnreachableHost(self.name, "connect",
                                  f"{self.entry.label} unreachable: {reason or type(exc).__name__}"
                                  ) from None

    def run(self, command: str, step: str, *, timeout: float = 120) -> str:
        """Run a shell command; its stdout, or RemoteError naming the step."""
        self.open()
        try:
            result = self.connection.run(command, in_stream=False, hide=True, warn=True,
                                         timeout=timeout)
        except CommandTimedOut:
            raise RemoteError(self.name, step, f"no answer within {timeout:g}s") from None
        except (OSError, SSHException, EOFError) as exc:
            raise RemoteError(self.name, step, f"connection lost: {exc}") from None
        if result.exited != 0:
            detail = tail(result.stderr or result.stdout) or "no output"
            raise RemoteError(self.name, step, f"exit {result.exited}: {detail}")
        return result.stdout

    def run_status(self, command: str, *, timeout: float = 120) -> tuple[int, str, str]:
        """Run a command whose exit status is an answer, not a failure:
        (status, stdout, stderr); status 124 when it did not end within `timeout`."""
        self.open()
        try:
            result = self.connection.run(command, in_stream=False, hide=True, warn=True,
                                         timeout=timeout)
        except CommandTimedOut:
            return 124, "", f"no answer within {timeout:g}s"
        except (OSError, SSHException, EOFError) as exc:
            raise RemoteError(self.name, "run", f"connection lost: {exc}") from None
        return result.exited, result.stdout, result.stderr

    def put_file(self, local: str, remote: str, step: str) -> None:
        self.open()
        try:
            self.connection.put(local, remote=remote)
        except (OSError, SSHException) as exc:
            raise RemoteError(self.name, step, f"upload of {local} failed: {exc}") from None

    def put_text(self, text: str, remote: str, step: str) -> None:
        self.open()
        try:
            self.connection.put(io.BytesIO(text.encode()), remote=remote)
        except (OSError, SSHException) as exc:
            raise RemoteError(self.name, step, f"writing {remote} failed: {exc}") from None

    def close(self) -> None:
        self.connection.close()


def q(*words: str) -> str:
    """Shell-quote words for a remote command."""
    return " ".join(shlex.quote(w) for w in words)
