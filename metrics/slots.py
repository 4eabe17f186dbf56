"""One slot file per process of the node: a locked, memory-mapped array of floats.

A process creates its file on first report (after the fork that made it), holds a
POSIX record lock on it for its whole life, and adds to its floats in place: an
indexed add into shared memory, no system call, nothing lost when the process is
killed (the page is the file's). The lock is the liveness test: the kernel drops it
when the process dies (record locks are per process, not inherited by fork), so a
file whose lock can be taken belongs to a dead process. Only a live process writes
its file; the aggregator reads them all (aggregate.py).

Layout: magic (8 bytes), header length (u64), the header (JSON: the slot table and
the pid, padded to 8 bytes), then one double per slot (native byte order: the file never leaves the host).
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import struct
import uuid
from dataclasses import dataclass

from polycorn.metrics.schema import KEYS, SlotKey

MAGIC = b"PCSLOTS1"
_PREFIX = struct.Struct("<8sQ")
SUFFIX = ".slots"


class SlotFile:
    """This process's slot file, created, locked and mapped; `values[i] += x` reports."""

    def __init__(self, directory: str) -> None:
        self.pid = os.getpid()
        self.path = os.path.join(directory, f"{self.pid}-{uuid.uuid4().hex[:8]}{SUFFIX}")
        header = json.dumps({"pid": self.pid, "keys": KEYS}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        offset = _PREFIX.size + len(header)
        size = offset + 8 * len(KEYS)
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, _PREFIX.pack(MAGIC, len(header)) + header, 0)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until this process dies
            # Named only once complete and locked: a reader never sees a half-made file
            # or takes a live process's file for a dead one.
            os.rename(tmp, self.path)
            self._mmap = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.values = memoryview(self._mmap)[offset:].cast("d")


@dataclass
class Reading:
    """One slot file as read by the aggregator."""

    path: str
    pid: int
    values: dict[SlotKey, float]
    alive: bool


def read(path: str) -> Reading | None:
    """The file's values and whether its process lives; None if it vanished or is not
    a slot file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, 1 << 20, 0)
        if len(data) < _PREFIX.size:
            return None
        magic, length = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            return None
        header = json.loads(data[_PREFIX.size:_PREFIX.size + length])
        pid = int(header["pid"])
        # Our own file: record locks are per process, so taking it would succeed (and
        # closing fd would drop it); a process asking is alive.
        alive = pid == os.getpid() or _locked_by_another(fd)
        if not alive:  # read again: its last writes may have raced the first read
            data = os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)  # drops our lock too: a fold runs under the directory lock anyway
    keys = [(name, tuple(tuple(pair) for pair in labels)) for name, labels in header["keys"]]
    floats = struct.unpack_from(f"={len(keys)}d", data, _PREFIX.size + length)  # native
    return Reading(path, pid, dict(zip(keys, floats, strict=True)), alive)


def _locked_by_another(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EAGAIN/EACCES: its process holds the lock
        return True
    return False
