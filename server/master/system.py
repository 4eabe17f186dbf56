"""The OS calls the master makes, behind one small seam.

Every part of the master forks, signals, reaps and reads clocks through a
`System`; the real one (the default) calls the OS, a fake one in the unit tests
(tests/server/master_fakes.py) records the calls and plays back child exits, so
the loop and each part are tested without forking, as MemoryStore lets ha/ be
tested without Redis.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import sys
import time


class System:
    """The real OS: fork, kill, waitpid, clocks, sleep and select."""

    def fork(self) -> int:
        return os.fork()

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def killpg(self, pgid: int, sig: int) -> None:
        os.killpg(pgid, sig)

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        return os.waitpid(pid, options)

    def getppid(self) -> int:
        return os.getppid()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def select(self, fds: list[int], timeout: float) -> list[int]:
        """The fds readable within timeout (InterruptedError propagates)."""
        return select.select(fds, [], [], timeout)[0]

    def spawn_successor(self, argv: list[str], env: dict[str, str], cwd: str,
                        keep_fd: int) -> int:
        """Fork and exec the next master (USR2) in its own process group, keeping keep_fd.

        Its own group: a rollback kills it and its workers at once. The working
        directory by name: a switched `current` symlink resolves anew.
        """
        pid = os.fork()
        if pid == 0:  # the new master, before exec
            try:
                os.setpgid(0, 0)
                signal.set_wakeup_fd(-1)
                for sig in range(1, signal.NSIG):
                    with contextlib.suppress(OSError, ValueError, RuntimeError):
                        if signal.getsignal(sig) not in (None, signal.SIG_IGN, signal.SIG_DFL):
                            signal.signal(sig, signal.SIG_DFL)
                os.set_inheritable(keep_fd, True)
                with contextlib.suppress(OSError):
                    os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    sys.stderr.write(f"polycorn: error: cannot start the new master: {exc}\n")
            os._exit(127)
        return pid

    def set_title(self, role: str, name: str) -> None:
        """The process title (`polycorn: master [NAME]`), as ps shows it."""
        from polycorn.server import proctitle
        proctitle.set_title(role, name)

    def freeze_for_fork(self) -> None:
        """Keep what the master holds shared with its workers (copy-on-write).

        A full collection in a worker writes the GC header of every object it
        tracks, and so copies every page holding one: after one second of load,
        each sync worker (and the master, whose pages were then no longer shared)
        held 9.6 MiB private instead of 4.6. Frozen objects are never scanned
        again; garbage is collected first so that none is kept (the first time is
        a full pass, later ones only see what the master made since).
        """
        gc.collect()
        gc.freeze()
