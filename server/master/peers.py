"""Several masters for one service on one host: hand-off ownership and peer repair.

Each master of a `--masters N` group holds an flock on `HANDOFF.m<i>.lock` for
its index i. On every tick a master try-locks its peers' files: a lock it can
take belongs to a dead peer, and it starts the replacement holding that very lock
(an inherited fd), so the lock is never free while the peer boots: neither this
master's next tick nor a surviving third master starts a second copy. The same tick takes over the hand-off path when its owner died. A stop asked of any
master is written to `HANDOFF.stopping` so that the peers stop too instead of
restarting each other. A drain (polycorn-ctl drain reaches the master that runs the
cluster agent) is written to `HANDOFF.drained`, which every master follows on its
tick, so that all the node's workers answer the health path with 503.

Every master serving the path holds a shared flock on `HANDOFF.masters` (a new
generation only once promoted). A master that stops releases it and probes with
an exclusive try-lock: if it cannot take it, another master still serves the same
listening sockets, so the node is not leaving and this master's stop needs no
deregistration window (its drain loses nothing, as after an upgrade).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
from typing import Any

from polycorn.server import instrument, pidfile
from polycorn.server.handoff import HandoffOwner, try_lock
from polycorn.server.master.system import System
from polycorn.server.process import successor_environ
from polycorn.server.sockets import Listener

log = logging.getLogger("polycorn.error")

ENV_INDEX = "POLYCORN_MASTER_INDEX"
ENV_INDEX_LOCK = "POLYCORN_MASTER_LOCK_FD"  # the index lock a peer was started holding
TICK = 0.1  # seconds between peer checks: a dead peer is restarted within this
# A failed probe of HANDOFF.masters is retried: another master that stops at the same
# moment holds the exclusive lock for microseconds while it probes, a serving one forever.
MEMBER_PROBES = 3
MEMBER_PROBE_GAP = 0.01


class GroupStop(enum.Enum):
    """What a master that stops asks of its peers (written to HANDOFF.stopping)."""

    DEREGISTER = "deregister"  # TERM: leave the balancers' rotation first, then drain
    DRAIN = "drain"  # INT/QUIT of a peer: drain at once


class AlreadyRunning(Exception):
    pass


def worker_share(total: int, masters: int, index: int) -> int:
    """This master's part of the total worker count (the first ones take the remainder)."""
    return total // masters + (1 if index < total % masters else 0)


class MasterGroup:
    """Hand-off ownership and, with --masters N, the supervision of the other masters."""

    def __init__(self, cfg: Any, listeners: list[Listener], owner: HandoffOwner | None,
                 index: int, index_lock: int | None, argv: list[str], cwd: str,
                 system: System | None = None) -> None:
        self.system = system or System()
        self.cfg = cfg
        self.path: str | None = cfg.handoff
        self.count = int(getattr(cfg, "masters", 1) or 1)
        self.index = index
        self.index_lock = index_lock
        self.listeners = listeners
        self.owner = owner
        self.argv = argv
        self.cwd = cwd
        self.next_tick = 0.0
        self.peer_pids: set[int] = set()
        self.peers_seen: set[int] = set()  # indexes seen alive: starting one again is a restart
        self.member_fd: int | None = None  # shared flock on HANDOFF.masters while serving
        self.node_drained = self._read_drain_marker()  # as of the last tick

    # -- identity ---------------------------------------------------------------

    @staticmethod
    def claim_index(path: str, index: int, inherited_fd: int | None = None) -> int:
        """The fd holding this master's index lock: the one the starting peer handed us
        (it took the lock for us), else a fresh try-lock."""
        lock_path = f"{path}.m{index}.lock"
        fd = _adopt_lock(inherited_fd, lock_path) if inherited_fd is not None else None
        if fd is None:
            fd = try_lock(lock_path)
        if fd is None:
            raise AlreadyRunning(f"master {index} of hand-off path {path} is already running")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def successor_fds(self) -> dict[str, int]:
        """Descriptors a successor (USR2) must inherit to be this master without a gap."""
        fds: dict[str, int] = {}
        if self.owner is not None:
            fds["handoff_lock"], fds["handoff_sock"] = self.owner.fds()
        if self.index_lock is not None:
            fds["index_lock"] = self.index_lock
        return fds

    def fds(self) -> list[int]:
        """Descriptors a worker or sidecar must close after fork."""
        out = [] if self.owner is None else self.owner.fds()
        if self.index_lock is not None:
            out.append(self.index_lock)
        if self.member_fd is not None:  # a child holding it would keep us counted
            out.append(self.member_fd)
        return out

    def select_fds(self) -> list[int]:
        return [] if self.owner is None else [self.owner.fileno()]

    def serve_handoff_request(self, fd: int) -> bool:
        """If fd is the hand-off socket: serve the peer asking for the listeners (True)."""
        if self.owner is not None and fd == self.owner.fileno():
            self.owner.serve_ready()
            return True
        return False

    # -- the periodic checks ------------------------------------------------------

    def seconds_to_tick(self) -> float:
        return max(0.0, self.next_tick - self.system.monotonic()) if self.path else 1.0

    def tick(self, stopping: bool) -> None:
        now = self.system.monotonic()
        if not self.path or now < self.next_tick:
            return
        self.next_tick = now + TICK
        self.node_drained = self._read_drain_marker()
        if self.owner is None:
            self._try_take_over()
        if self.count > 1 and not stopping:
            self._repair_peers()

    def _try_take_over(self) -> None:
        assert self.path is not None
        fd = try_lock(self.path + ".lock")
        if fd is None:
            return
        self.owner = HandoffOwner(self.path, fd, self.listeners)
        log.info("took over hand-off path %s (pid %s)", self.path, os.getpid())
        instrument.current().event(instrument.HANDOFF_OWNER_CHANGED, "owner died")
        if self.cfg.pidfile:
            pidfile.write(self.cfg.pidfile, os.getpid())

    def _repair_peers(self) -> None:
        assert self.path is not None
        if self.stop_requested():
            return
        for i in range(self.count):
            if i == self.index:
                continue
            fd = try_lock(f"{self.path}.m{i}.lock")
            if fd is None:
                self.peers_seen.add(i)
                continue  # alive, or being started holding its lock
            try:
                self.spawn_peer(i, fd)
            finally:
                os.close(fd)  # the peer's copy keeps the lock held
            if i in self.peers_seen:
                instrument.current().event(instrument.MASTER_RESTARTED, f"master {i} died")

    def spawn_peer(self, i: int, lock_fd: int) -> None:
        """Start master i, handing it lock_fd (its index lock, held) to keep.

        Releasing the lock before the exec left it free for the second or more a new
        interpreter takes to claim it, and every tick in that window started another copy.
        """
        env = successor_environ()
        env[ENV_INDEX] = str(i)
        env[ENV_INDEX_LOCK] = str(lock_fd)
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "POLYCORN_UPGRADE_FD"):
            env.pop(key, None)
        pid = self.system.fork()
        if pid == 0:
            try:
                os.set_inheritable(lock_fd, True)
                os.setsid()  # its own session and group: independent of ours
                with contextlib.suppress(OSError):
                    os.chdir(self.cwd)
                os.execvpe(self.argv[0], self.argv, env)
            finally:
                os._exit(127)
        self.peer_pids.add(pid)
        log.info("started master %s (pid %s)", i, pid)

    # -- stopping the whole group ------------------------------------------------

    def _stop_marker(self) -> str | None:
        return f"{self.path}.stopping" if self.path and self.count > 1 else None

    def stop_requested(self) -> bool:
        marker = self._stop_marker()
        return bool(marker and os.path.exists(marker))

    def requested_stop(self) -> GroupStop | None:
        """The stop a peer asked for, if any ("PID MODE" in the marker)."""
        marker = self._stop_marker()
        if not marker:
            return None
        try:
            with open(marker) as f:
                words = f.read().split()
        except FileNotFoundError:
            return None
        except OSError:
            return GroupStop.DRAIN
        try:
            return GroupStop(words[1])
        except (IndexError, ValueError):
            return GroupStop.DRAIN  # a marker without a mode: what every stop did before

    def announce_stop(self, mode: GroupStop) -> None:
        marker = self._stop_marker()
        if marker:
            # Written whole, then renamed: a peer never reads a marker without its mode.
            tmp = f"{marker}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w") as f:
                    f.write(f"{os.getpid()} {mode.value}\n")
                os.replace(tmp, marker)
            except OSError as exc:
                log.error("cannot write the stop marker %s: %s", marker, exc)

    @staticmethod
    def stop_marker_clear(path: str) -> None:
        """A fresh start of the group forgets an earlier stop."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.stopping")

    # -- the node-wide drain ------------------------------------------------------

    def _read_drain_marker(self) -> bool:
        return bool(self.path) and os.path.exists(f"{self.path}.drained")

    def mark_drained(self, drained: bool) -> None:
        """Drain or undrain every master of the node (each follows on its next tick)."""
        if not self.path:
            return
        marker = f"{self.path}.drained"
        try:
            if drained:
                with open(marker, "w") as f:
                    f.write(f"{os.getpid()}\n")
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker)
        except OSError as exc:
            log.error("cannot %s the drain marker %s: %s", "write" if drained else "remove",
                      marker, exc)
        self.node_drained = drained

    @staticmethod
    def drain_marker_clear(path: str) -> None:
        """A node started afresh (it binds the listeners) is not drained: a cluster leader
        drains it again if the drain still stands."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.drained")

    # -- who serves the path --------------------------------------------------------

    def join(self) -> None:
        """Count this master among those serving the path, for as long as it serves."""
        if not self.path or self.member_fd is not None:
            return
        try:
            fd = os.open(f"{self.path}.masters", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # Blocks only while a stopping master probes (an exclusive try-lock, released
            # at once).
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:
            log.error("cannot join %s.masters: %s", self.path, exc)
            return
        self.member_fd = fd

    def resign(self) -> None:
        """This master stops serving: it no longer counts (its drain does not)."""
        if self.member_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.member_fd)
            self.member_fd = None

    def others_serving(self) -> bool:
        """Whether another master still serves the path (call after resign())."""
        if not self.path:
            return False
        for attempt in range(MEMBER_PROBES):
            if attempt:
                self.system.sleep(MEMBER_PROBE_GAP)
            try:
                fd = try_lock(f"{self.path}.masters")
            except OSError:
                return False  # cannot tell: take the window, the safe side
            if fd is not None:
                os.close(fd)
                return False
        return True

    def close(self, successor: bool) -> None:
        self.resign()
        if self.owner is not None:
            # With a successor or live peers the path lives on; otherwise remove it.
            self.owner.close(unlink=not successor and self.count == 1)
        if self.index_lock is not None:
            with contextlib.suppress(OSError):
                os.close(self.index_lock)


def _adopt_lock(fd: int, lock_path: str) -> int | None:
    """fd if it is an open description of lock_path holding its flock, else None.

    The descriptor number comes from the environment: check that it is the lock file
    (not whatever a stray variable names) before trusting it, and make it close-on-exec
    again so that it goes no further than this master.
    """
    try:
        held, named = os.fstat(fd), os.stat(lock_path)
    except OSError:
        return None
    if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on the lock we already hold
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd
