"""Fenced commands from the leader to one node, and their wire form.

A command names the node and the incarnation it is meant for and carries the
leader's epoch; the node's agent checks both (fencing.py) before relaying the
verb to its master over the sidecar channel (docs/internals.md).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from polycorn.server.messages import Command

# The verbs a master accepts on its sidecar channel (docs/internals.md).
VERBS = frozenset({"ttin", "ttou", "set_workers", "upgrade", "drain", "undrain", "reload"})
VERBS_WITH_COUNT = frozenset({"ttin", "ttou", "set_workers"})


class CommandError(ValueError):
    """A command that cannot be delivered: unknown verb, bad count, unparsable."""


@dataclass(frozen=True)
class NodeCommand:
    node_id: str
    incarnation: int
    epoch: int
    cmd: str
    n: int | None = None
    id: str = ""
    issued_by: str = ""  # node id of the leader that sent it

    def __post_init__(self) -> None:
        if self.cmd not in VERBS:
            raise CommandError(f"unknown command {self.cmd!r}")
        if self.cmd in VERBS_WITH_COUNT and (self.n is None or self.n < 0):
            raise CommandError(f"{self.cmd} needs a count n >= 0")
        if not self.id:
            object.__setattr__(self, "id", uuid.uuid4().hex[:16])

    def encode(self) -> str:
        return json.dumps({"id": self.id, "node": self.node_id, "incarnation": self.incarnation,
                           "epoch": self.epoch, "cmd": self.cmd, "n": self.n,
                           "by": self.issued_by}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> NodeCommand:
        try:
            d = json.loads(text)
            return cls(str(d["node"]), int(d["incarnation"]), int(d["epoch"]), str(d["cmd"]),
                       None if d.get("n") is None else int(d["n"]), str(d.get("id") or ""),
                       str(d.get("by") or ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"unparsable command {text[:80]!r}: {exc}") from None

    def to_master(self) -> Command:
        """The sidecar-protocol message relaying this command to the node's master."""
        return Command(self.id, self.cmd, self.n)
