"""What every polycorn-ctl subcommand shares: its exit codes and its one error type.

Exit codes: 0 done; 1 nothing to show or do (no live node, no leader, no rollout);
2 usage error, bad URL or unknown node; 3 Redis unreachable or failing; 4
redis-up/redis-down failed; 5 a request did not complete (a rollout failed or was
aborted, a drain not seen in time); 6 refused: a rollout is already running; 7
HAProxy's runtime API unreachable or not answering as expected (polycorn-ctl haproxy).
"""

from __future__ import annotations

import os
import socket

EXIT_OK, EXIT_EMPTY, EXIT_USAGE, EXIT_REDIS, EXIT_REDIS_UP = 0, 1, 2, 3, 4
EXIT_UNFINISHED, EXIT_BUSY, EXIT_HAPROXY = 5, 6, 7


class CtlError(Exception):
    """One line for stderr, and the exit status that goes with it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def requester() -> str:
    """Who asked, for the events a request logs."""
    return f"polycorn-ctl on {socket.gethostname()} (pid {os.getpid()})"
