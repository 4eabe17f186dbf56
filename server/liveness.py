"""Worker liveness and readiness, shared between the master and its workers.

One anonymous shared mmap, made by the master before it forks: each worker owns
one slot where it writes its heartbeat (CLOCK_MONOTONIC is system-wide, so the
master can compare it with its own clock), its state and, when it fails to
boot, a one-line reason. A heartbeat costs no system call, unlike Gunicorn's
fchmod of a temporary file, so it can be written from the worker's main loop
on every turn.
"""

from __future__ import annotations

import enum
import mmap
import struct
import time

SLOT = struct.Struct("=dii240s")  # heartbeat, state, reason length, reason
SLOT_SIZE = SLOT.size  # 256 bytes
HEADER = struct.Struct("=i")  # node-wide flag the master sets for every worker: out of rotation
CHANGED = struct.Struct("=d")  # at offset 8: mtime of the newest source change seen (--reload)
CHANGED_OFFSET = 8
HEADER_SIZE = 64


MAX_REQUESTS_REASON = "max_requests"  # a READY slot's reason: the worker leaves on max-requests


class WorkerState(enum.IntEnum):
    FREE = 0
    BOOTING = 1
    READY = 2  # app loaded (and health-checked); serving
    BOOT_FAILED = 3  # reason holds why
    STOPPING = 4


class SlotTable:
    """A fixed table of worker slots in shared memory."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._mem = mmap.mmap(-1, HEADER_SIZE + size * SLOT_SIZE)  # MAP_SHARED | MAP_ANONYMOUS
        self._free = list(range(size - 1, -1, -1))

    def claim(self) -> int:
        """Take a free slot for a new worker (master side, before fork)."""
        if not self._free:
            raise RuntimeError(f"more than {self.size} workers at once")
        slot = self._free.pop()
        SLOT.pack_into(self._mem, HEADER_SIZE + slot * SLOT_SIZE, time.monotonic(), WorkerState.BOOTING, 0, b"")
        return slot

    def release(self, slot: int) -> None:
        """Give a reaped worker's slot back (master side)."""
        SLOT.pack_into(self._mem, HEADER_SIZE + slot * SLOT_SIZE, 0.0, WorkerState.FREE, 0, b"")
        self._free.append(slot)

    def heartbeat(self, slot: int) -> None:
        struct.pack_into("=d", self._mem, HEADER_SIZE + slot * SLOT_SIZE, time.monotonic())

    def set_state(self, slot: int, state: WorkerState, reason: str = "") -> None:
        data = reason.encode("utf-8", "replace")[:240]
        SLOT.pack_into(self._mem, HEADER_SIZE + slot * SLOT_SIZE, time.monotonic(), state, len(data), data)

    def read(self, slot: int) -> tuple[float, WorkerState, str]:
        """(last heartbeat, state, reason) of one slot."""
        beat, state, length, reason = SLOT.unpack_from(self._mem, HEADER_SIZE + slot * SLOT_SIZE)
        return beat, WorkerState(state), reason[:length].decode("utf-8", "replace")

    def set_draining(self, draining: bool) -> None:
        """Master side: the node is out of rotation (polycorn-ctl drain, or a TERM's
        deregistration window); health checks answer 503."""
        HEADER.pack_into(self._mem, 0, 1 if draining else 0)

    def draining(self) -> bool:
        return HEADER.unpack_from(self._mem, 0)[0] == 1

    def mark_code_changed(self, mtime: float) -> None:
        """Worker side (--reload): a source file changed; the master reloads, health-gated.

        The file's modification time, not when a worker noticed: every worker sees the
        same edit, and the master reloads once for all of them (it compares this with
        the wall-clock time its last reload began). Kept at the newest.
        """
        if mtime > self.code_changed_at():
            CHANGED.pack_into(self._mem, CHANGED_OFFSET, mtime)

    def code_changed_at(self) -> float:
        return CHANGED.unpack_from(self._mem, CHANGED_OFFSET)[0]

    def close(self) -> None:
        self._mem.close()
