"""The pid file: written atomically, refused when a live process already owns it.

Written to a temporary name and renamed over, so a reader never sees a half
file; removed on exit only if it still holds our pid (after an upgrade the new
master owns it).
"""

from __future__ import annotations

import contextlib
import os


class PidfileError(Exception):
    pass


def read(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidfileError(f"cannot read pid file {path}: {exc.strerror}") from None
    return int(text) if text.isdigit() else None


def alive(pid: int) -> bool:
    """Is pid a live process (ours or another user's)? A zombie is not.

    kill(pid, 0) succeeds on a zombie, and in containers whose init does not
    reap, an exited master can stay one for good: read its state where /proc is.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_free(path: str, allowed: set[int] = frozenset()) -> None:
    """Refuse to start over a pid file that names another live process."""
    pid = read(path)
    if pid and pid not in allowed and pid != os.getpid() and alive(pid):
        raise PidfileError(f"pid file {path} names a running process ({pid}): already running?")


def write(path: str, pid: int) -> None:
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PidfileError(f"cannot write pid file {path}: {exc.strerror}") from None


def remove_if_ours(path: str, pid: int) -> None:
    with contextlib.suppress(OSError, PidfileError):
        if read(path) == pid:
            os.unlink(path)
