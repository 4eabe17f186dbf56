"""Progress lines while hosts are worked on, and the final table (one row per host).

Lines come from several threads at once (the hosts of a batch run in parallel),
so each is written whole under a lock and flushed: an operator watching a log
sees every host's step as it starts, with the batch and the time since the
command began.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO


class Progress:
    def __init__(self, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out or sys.stdout
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def line(self, text: str) -> None:
        with self._lock:
            self.out.write(f"[{self.elapsed():6.1f}s] {text}\n")
            self.out.flush()

    def step(self, host: str, step: str, batch: str = "", detail: str = "") -> None:
        where = f"{batch} " if batch else ""
        self.line(f"{where}{host}: {step}{f' ({detail})' if detail else ''}")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns; the last column is not padded (it holds free text)."""
    all_rows = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in all_rows)
