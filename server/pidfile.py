"""The pid file: a bare pid for people and scripts, and beside it the master's stamp.

`PIDFILE` holds the pid alone, as Gunicorn writes it, so `kill -HUP $(cat
PIDFILE)` and systemd's PIDFile= keep working. A second line would break them
(`kill "$(cat PIDFILE)"` refuses the whole text, and an unquoted
`$(cat PIDFILE)` would signal a number on the second line as a pid), so the
stamp (pid, start time, boot id; see identity.py) lives in `PIDFILE.identity`.
Whatever signals a master reads the stamp, never the bare pid: a pid file left
by a master that died names whatever process has that pid now.

Both are written atomically (a temporary name renamed over), the stamp first:
a reader of the stamp sees the old master or the new one, never a mix. They are
removed on exit only if they still name us (after an upgrade the new master
owns them).
"""

from __future__ import annotations

import contextlib
import os

from polycorn.server import identity


class PidfileError(Exception):
    pass


def stamp_path(path: str) -> str:
    return f"{path}.identity"


def read(path: str) -> int | None:
    """The bare pid in the file, unverified (for messages, never for a signal)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidfileError(f"cannot read pid file {path}: {exc.strerror}") from None
    return int(text) if text.isdigit() else None


def running_pid(path: str) -> int:
    """The pid of the live master this pid file belongs to; 0 when none runs.

    Only the stamp is trusted: a stamp that does not match the live process with
    that pid (a reused pid) names no master. A pid file without a stamp (written by
    a release before stamps) names its pid only if that process started before the
    file was written (identity.verified_legacy_pid).
    """
    record = identity.read_record(stamp_path(path))
    if record is not None:
        return identity.verified_pid(record)
    try:
        pid, written = read(path), identity.written_at(path)
    except PidfileError:
        return 0
    return identity.verified_legacy_pid(pid, written) if pid and written else 0


def check_free(path: str, allowed: set[int] = frozenset()) -> None:
    """Refuse to start over a pid file whose master still runs."""
    pid = running_pid(path)
    if pid and pid not in allowed and pid != os.getpid():
        raise PidfileError(f"pid file {path} names a running process ({pid}): already running?")


def write(path: str, pid: int) -> None:
    try:
        identity.write_record(stamp_path(path), identity.stamp(pid))
        identity.write_atomic(path, f"{pid}\n")  # mode 0644, whatever the umask
    except OSError as exc:
        raise PidfileError(f"cannot write pid file {path}: {exc.strerror}") from None


def remove_if_ours(path: str, pid: int) -> None:
    with contextlib.suppress(OSError, PidfileError):
        if read(path) == pid:
            os.unlink(path)
    record = identity.read_record(stamp_path(path))
    if record is not None and record.get("pid") == pid:
        with contextlib.suppress(OSError):
            os.unlink(stamp_path(path))
