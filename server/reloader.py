"""--reload: restart a worker when a source file it loaded changes (development only).

A daemon thread in the worker (never in the master, which forks) polls the
modification times of every loaded module's file once a second; on a change it
asks the worker to drain, and the master starts a fresh worker that imports
the new code. Polling needs no dependency and sees edits made through any tool.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("polycorn.error")

INTERVAL = 1.0


def module_files() -> set[str]:
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith((".py", ".pyc")):
            files.add(path[:-1] if path.endswith(".pyc") else path)
    return files


def _mtimes(paths: set[str]) -> dict[str, float]:
    out = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return out


class Reloader(threading.Thread):
    def __init__(self, on_change: Callable[[str], None]) -> None:
        super().__init__(name="polycorn-reloader", daemon=True)
        self.on_change = on_change
        self._stop = threading.Event()

    def run(self) -> None:
        seen = _mtimes(module_files())
        while not self._stop.wait(INTERVAL):
            now = _mtimes(module_files())
            for path, mtime in now.items():
                if seen.get(path, mtime) != mtime:
                    log.info("worker %s: %s changed; restarting", os.getpid(), path)
                    self.on_change(path)
                    return
            seen.update(now)

    def stop(self) -> None:
        self._stop.set()
