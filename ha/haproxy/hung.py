"""Which slots' sessions the sync shuts: those of a ready server that HAProxy's own
checks have held down for SHUT_AFTER seconds (a hung host holds its requests until it
wakes).

Why not HAProxy's `on-marked-down shutdown-sessions`: at the instant the checks mark
a server down it terminates every stream attached to it, streams still *connecting*
included (configuration.txt 5.2, "on-marked-down"; logged with a 'D' termination
code). A killed node refuses that connection and HAProxy would have sent the request
elsewhere (retry-on conn-failure, redispatch); terminated, it is closed unanswered
instead (log "D---", status -1, 0 bytes): a reset for a client on a fresh
connection. Waiting first, several times the generated `timeout connect`, leaves
only streams whose request reached the server: shut (management.txt, "shutdown
sessions server"; a 'K' in the log), a GET is resent (retry-on empty-response) and
a POST answered 502, as at the instant of the check before. A drained node (its
health path answers 503, so its checks fail too) was also cut by shutdown-sessions;
its requests now finish, as a drain promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from polycorn.ha.haproxy.config import PLACEHOLDER_ADDR, PLACEHOLDER_PORT
from polycorn.ha.haproxy.servers import Admin, ServerState

# A stream still connecting to the server when its checks failed has left it within
# the generated `timeout connect` (250 ms) plus the turn-around HAProxy waits before a
# retry (min(timeout connect, 1 s), configuration.txt 4.2 "retries"), after which the
# retry goes elsewhere (`option redispatch 1`). No longer: every request a hung host
# held waits this long plus the checks' detection, and clients time out at about 2 s
# (1.0 s here made all 7 requests sent to the demo's paused node time out).
SHUT_AFTER = 0.5


@dataclass
class HungSlots:
    """Remembers since when each slot in service is down by its checks."""

    shut_after: float = SHUT_AFTER
    down_since: dict[str, float] = field(default_factory=dict)
    shut: set[str] = field(default_factory=set)  # shut in this down spell already

    def due(self, servers: Sequence[ServerState], now: float) -> list[str]:
        """The slots whose sessions to shut now: ready (with a node's address), down by
        their checks for `shut_after` seconds, once per down spell (a slot seen up
        again starts afresh). Never a slot in drain: a drained node's health path
        answers 503 by design and what it holds must finish; nor in maint: its checks
        stop there and it reads as down, while a stopping node finishes its requests."""
        down = {s.name for s in servers
                if s.checked and s.op == "down" and s.admin is Admin.READY
                and s.endpoint != (PLACEHOLDER_ADDR, PLACEHOLDER_PORT)}
        self.down_since = {n: self.down_since.get(n, now) for n in down}
        self.shut &= down
        due = sorted(n for n, since in self.down_since.items()
                     if now - since >= self.shut_after and n not in self.shut)
        self.shut.update(due)
        return due
