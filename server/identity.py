"""Who a pid is: a master is known by its pid together with its start time and boot id.

A pid alone names a process only while that process lives; once it exits the
kernel hands the number to the next process, and after a reboot to any process
at all. So everything a master writes for others to signal it (the pid file's
identity record, the `PIDFILE.m<i>` status files) carries a stamp: its pid,
its start time (field 22 of /proc/PID/stat, clock ticks after boot, fixed for
the life of the process) and the boot id. Whoever signals first checks the
stamp against the live process; a mismatch means the record is stale and the
answer is "not running", never a signal. Standard library only.

Records written before stamps existed (a release older than this one, still
running while it is upgraded to this one) are trusted only when the process
with that pid started before the record was last written: the writer held the
pid then, and a process that took the pid later started after the write.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name may hold spaces and parentheses: split after the last ')'.
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """The start time of a live process (None: no such process, or a zombie)."""
    if pid <= 0:
        return None
    fields = stat_fields(pid)
    if not fields or fields[0] == b"Z":  # an unreaped zombie is not a running process
        return None
    try:
        return int(fields[19])  # field 22, counted from 1 before the name was split off
    except (IndexError, ValueError):
        return None


def started_at(pid: int) -> float | None:
    """Wall-clock time a live process started; at most a second early (boot time is
    whole seconds), never late, so a writer always compares as started before it wrote."""
    ticks = start_time(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def verified_legacy_pid(pid: int, written_at: float) -> int:
    """A stampless record's pid, when that process started before the record was written."""
    started = started_at(pid) if pid > 0 else None
    return pid if started is not None and started <= written_at else 0


def boot_id() -> str:
    try:
        with open(BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def stamp(pid: int | None = None) -> dict[str, Any]:
    """{"pid", "start", "boot"} of a live process (ours by default), to write beside its pid."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "start": start_time(pid), "boot": boot_id()}


def verified_pid(record: Any, written_at: float | None = None) -> int:
    """The pid a record names when that very process still runs; else 0.

    A record without a start time (written by a release before stamps) is trusted
    only with `written_at`, the time the record was last written (its file's mtime),
    by verified_legacy_pid; without it, it may name any process that got the pid since.
    """
    if not isinstance(record, dict):
        return 0
    try:
        pid = int(record.get("pid") or 0)
        start = record.get("start")
        start = None if start is None else int(start)
    except (TypeError, ValueError):
        return 0
    if start is None and written_at is not None:
        return verified_legacy_pid(pid, written_at)
    if pid <= 0 or start is None or start_time(pid) != start:
        return 0
    boot = record.get("boot") or ""
    return pid if not boot or boot == boot_id() else 0


def written_at(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def read_record(path: str) -> dict[str, Any] | None:
    """A JSON record (stamp or status file); None when missing or unreadable."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: str, record: dict[str, Any]) -> None:
    """Atomically (a temporary name renamed over): a reader never sees half a record."""
    write_atomic(path, json.dumps(record))


def write_atomic(path: str, text: str) -> None:
    """Write text to a temporary name and rename it over path, mode 0644 (Gunicorn's).

    The mode is set outright, not left to the umask: these files name a process
    that others signal, so they are never writable by group or world.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
