"""A client for HAProxy's runtime API over its Unix socket (the `stats socket`).

HAProxy's non-interactive mode: one command per connection, newline-terminated, and
the answer is everything until HAProxy closes the connection. Each call opens its
own connection with a short timeout, so a stopped or restarting HAProxy costs a
bounded wait and a RuntimeApiError, never a hang.
"""

from __future__ import annotations

import socket

TIMEOUT = 2.0  # seconds for one command: connect, send and read to EOF
MAX_ANSWER = 16 * 1024 * 1024


class RuntimeApiError(Exception):
    """The socket could not be reached or answered badly; the message says which."""


class RuntimeApi:
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RuntimeApi(unix:{self.path})"

    def command(self, line: str) -> str:
        """Send one command; return HAProxy's whole answer (text)."""
        if "\n" in line or ";" in line:
            # ';' chains commands on one connection: one command per call keeps each
            # answer attributable to its command.
            raise ValueError(f"one command at a time: {line!r}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(line.encode() + b"\n")
                chunks, size = [], 0
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        raise RuntimeApiError(f"answer to {line!r} over {MAX_ANSWER} bytes")
        except OSError as exc:
            raise RuntimeApiError(f"unix:{self.path}: {type(exc).__name__}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def set_command(self, line: str) -> str:
        """A `set ...` command: its answer is empty or an informational line on success;
        HAProxy reports refusals in words, which raise here."""
        answer = self.command(line).strip()
        lowered = answer.lower()
        if any(word in lowered for word in ("unknown", "invalid", "require", "not found",
                                             "no such", "permission denied", "error")):
            raise RuntimeApiError(f"{line!r}: {answer}")
        return answer

    def show_servers_state(self, backend: str) -> str:
        return self.command(f"show servers state {backend}")

    def show_all_servers_state(self) -> str:
        """Every backend, in the format of the server-state-file."""
        return self.command("show servers state")

    def show_stat(self, backend: str) -> str:
        # type 4: servers only; -1: every server of the backend
        return self.command(f"show stat {backend} 4 -1")

    def show_info(self) -> str:
        return self.command("show info")
