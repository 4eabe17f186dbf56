"""A fake of the master's OS seam (server/master/system.py) for fast unit tests.

Nothing forks: fork() hands out pids, kill() records signals (SIGKILL kills), waitpid() plays
back the exits a test scripted with exit()/die(), the clocks move only when a
test (or a wait) moves them. select() asks the real kernel, without waiting,
so real pipes and socketpairs (a sidecar's channel, the successor's) work.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import socket
import time

from polycorn.server.master.system import System


class FakeSystem(System):
    def __init__(self) -> None:
        # The workers' slots stamp heartbeats with the real clock: start from it.
        self.now = time.monotonic()
        self.wall = 1_700_000_000.0
        self.next_pid = 40000
        self.alive: set[int] = set()
        self.forks: list[int] = []
        self.signals: list[tuple[int, int]] = []  # (pid, signal) in order
        self.group_signals: list[tuple[int, int]] = []
        self.exits: collections.deque[tuple[int, int]] = collections.deque()
        self.successors: dict[int, socket.socket] = {}  # pid -> the new master's end
        self.successor_argv: list[list[str]] = []
        self.titles: list[tuple[str, str]] = []
        self.parent = 1  # what getppid() answers: set it to an old master's pid


    # ---- the seam ---------------------------------------------------------------

    def fork(self) -> int:
        self.next_pid += 1
        self.alive.add(self.next_pid)
        self.forks.append(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, sig: int) -> None:
        if pid not in self.alive:
            raise ProcessLookupError(pid)
        self.signals.append((pid, sig))
        if sig == signal.SIGKILL:  # the one signal nothing survives
            self.die(pid, sig)

    def killpg(self, pgid: int, sig: int) -> None:
        if pgid not in self.alive:
            raise ProcessLookupError(pgid)
        self.group_signals.append((pgid, sig))
        if sig == signal.SIGKILL:
            self.die(pgid, sig)

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        for i, (done, status) in enumerate(self.exits):
            if pid in (-1, done):
                del self.exits[i]
                return done, status
        if not self.alive:
            raise ChildProcessError("no child processes")
        return 0, 0

    def getppid(self) -> int:
        return self.parent

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def select(self, fds: list[int], timeout: float) -> list[int]:
        ready = select.select(fds, [], [], 0)[0]
        if not ready:
            self.now += timeout  # the wait ran its course
        return ready

    def freeze_for_fork(self) -> None:
        pass

    def set_title(self, role: str, name: str) -> None:
        self.titles.append((role, name))  # never the test runner's own title

    def spawn_successor(self, argv: list[str], env: dict[str, str], cwd: str,
                        keep_fd: int) -> int:
        pid = self.fork()
        # What exec would have given the new master: its own copy of the socketpair end.
        self.successors[pid] = socket.socket(fileno=os.dup(keep_fd))
        self.successor_argv.append(argv)
        return pid

    # ---- what a test scripts ----------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def exit(self, pid: int, code: int = 0) -> None:
        """pid exits with code; the next waitpid reports it."""
        self.alive.discard(pid)
        self.exits.append((pid, code << 8))

    def die(self, pid: int, sig: int) -> None:
        """pid is killed by sig."""
        self.alive.discard(pid)
        self.exits.append((pid, sig))

    def sent(self, sig: int) -> list[int]:
        """pids that got sig, in order."""
        return [pid for pid, s in self.signals if s == sig]

    def close(self) -> None:
        for sock in self.successors.values():
            sock.close()


# ---- a whole master on the fake (real parts, real config, real slot table) ----

def make_master(system: FakeSystem, *args: str, **kwargs):
    """A master of `testapp:application` with 2 workers by default, attached to no
    listener, its loop driven by the test (`master.loop.turn()`): its signal
    handlers are never installed in the test process."""
    from polycorn.server.config.loader import load_config
    from polycorn.server.master.arbiter import Arbiter

    cfg = load_config(["-w", "2", *args, "testapp:application"], {})
    master = Arbiter(cfg, system=system, argv=["polycorn-next"], cwd="/", **kwargs)
    master.attach([])
    return master


def mark_ready(master, generation: int | None = None) -> None:
    """Workers write READY in their slot once their app is loaded: play that."""
    from polycorn.server.liveness import WorkerState

    for rec in master.pool.workers.values():
        if generation is None or rec.generation == generation:
            master.slots.set_state(rec.slot, WorkerState.READY)


def turns(master, n: int = 1) -> None:
    for _ in range(n):
        master.loop.turn()


def run_for(master, system: FakeSystem, seconds: float) -> None:
    """Turn the loop until the fake clock has moved `seconds` (each wait runs its course)."""
    end = system.now + seconds
    while system.now < end:
        master.loop.turn()


def boot(master) -> list[int]:
    """Turn until READY; the serving workers' pids."""
    from polycorn.server.master.state import MasterState

    turns(master)
    mark_ready(master)
    turns(master)
    assert master.lifecycle.state is MasterState.READY
    return sorted(r.pid for r in master.pool.live())
