"""`-D/--daemon`: detach, and still tell the operator's shell whether the start worked.

Gunicorn's order is kept (detach, then on_starting, then bind): hooks run in the
process that serves, so a thread or a file they open survives. Unlike Gunicorn's,
the command does not return at once: the foreground process waits on a pipe that
stands in for the daemon's stderr until the daemon says it listens (`ready`) or
fails, then prints what the daemon wrote there and exits with its status. So a
port in use still ends `polycorn -D` with one line and status 1, and a service
manager (systemd Type=forking) sees the pid file before the command returns.
"""

from __future__ import annotations

import contextlib
import os
import sys

# After this byte, the daemon's exit status as text, then a newline.
_MARK = b"\x00"

_report_fd = -1  # the pipe (our fd 2) while the foreground process waits; -1 after ready()


def detach() -> None:
    """Double fork and new session; returns in the daemon, never in the foreground."""
    for stream in (sys.stdout, sys.stderr):  # else both processes would write it
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        os._exit(_wait_for_daemon(r))
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(w, 2)  # what the start-up writes to stderr reaches the operator's terminal
    os.close(devnull)
    os.close(w)
    global _report_fd
    _report_fd = 2


def ready() -> None:
    """The daemon listens: release the foreground process with status 0."""
    finish(0)


def finish(status: int) -> None:
    """Report `status` to the waiting foreground process (once), then drop stderr."""
    global _report_fd
    if _report_fd < 0:
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    with contextlib.suppress(OSError):
        os.write(_report_fd, _MARK + str(status).encode() + b"\n")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _report_fd = -1


def _wait_for_daemon(r: int) -> int:
    """In the foreground: copy the daemon's start-up stderr and return its status.

    The mark ends the wait even if a child of the daemon (a hook's subprocess) keeps
    the pipe open; EOF without a mark means the daemon died before it said anything.
    """
    data = b""
    while _MARK not in data:
        try:
            chunk = os.read(r, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    text, mark, rest = data.partition(_MARK)
    if text:
        os.write(2, text)
    if not mark:
        os.write(2, b"polycorn: error: the daemon exited before it was ready\n")
        return 1
    status = rest.split(b"\n", 1)[0]
    return int(status) if status.isdigit() else 1
