"""--reload: reload the workers when a source file changes (development only).

A daemon thread in each worker (never in the master, which forks) polls, once a
second, the modification times of every loaded module's file and of every .py
file beside the application's own modules (so a module that fails to import on
its first save is watched too). On a change it tells the master, which reloads
as a HUP does: new workers boot beside the serving ones and replace them only
once ready; a new version that fails (a syntax error) is logged and the old
workers keep serving. The thread keeps watching, so the fix reloads at once.
Polling needs no dependency and sees edits made through any tool.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import threading
import time
from collections.abc import Callable

log = logging.getLogger("polycorn.error")

INTERVAL = 1.0
MTIME_SLACK = 0.01  # file systems whose timestamps lag the clock by a tick


def _library_dirs() -> tuple[str, ...]:
    """Where installed code lives: its directories are not scanned for new files."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


def module_files() -> set[str]:
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith((".py", ".pyc")):
            files.add(path[:-1] if path.endswith(".pyc") else path)
    return files


def watched_files(library_dirs: tuple[str, ...]) -> set[str]:
    """Loaded modules, and the .py files in the directories of the app's own modules."""
    files = module_files()
    project_dirs = {os.path.dirname(f) for f in files
                    if not os.path.realpath(f).startswith(library_dirs)}
    for directory in project_dirs:
        try:
            with os.scandir(directory) as entries:
                files.update(e.path for e in entries if e.name.endswith(".py"))
        except OSError:
            continue
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
    def __init__(self, on_change: Callable[[str, float], None]) -> None:
        """on_change(path, when) for the newest file changed at each look."""
        super().__init__(name="polycorn-reloader", daemon=True)
        self.on_change = on_change
        self._stop = threading.Event()
        self._library_dirs = _library_dirs()

    def run(self) -> None:
        looked = time.time()
        seen = _mtimes(watched_files(self._library_dirs))
        while not self._stop.wait(INTERVAL):
            before, looked = looked, time.time()
            now = _mtimes(watched_files(self._library_dirs))
            # A path first seen now is a change only if written since the last look (a
            # new module); a module the app imported lazily is old, and no reason.
            changed = [path for path, mtime in now.items()
                       if seen.get(path, mtime) != mtime
                       or (path not in seen and mtime >= before - MTIME_SLACK)]
            seen = now
            if changed:
                newest = max(changed, key=lambda path: now[path])
                mtime = now[newest]
                # A time kept from elsewhere (rsync -t, cp -p) may predate the last
                # reload: then when we saw it stands in for when it changed.
                self.on_change(newest, mtime if mtime >= before - MTIME_SLACK else looked)

    def stop(self) -> None:
        self._stop.set()
