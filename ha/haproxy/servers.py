"""HAProxy's answers read into values (pure): `show servers state`, `show stat`, `show info`.

`show servers state` (format 1, management guide 9.3) is what the reconciliation
compares against: address, port, weight and the administrative state, decoded from
its bit mask. `show stat` adds what an operator wants to see (UP/DOWN, last check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# srv_admin_state bits (management guide, "show servers state")
FMAINT, IMAINT, CMAINT, FDRAIN, IDRAIN, RMAINT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
# srv_op_state values
OP_STATES = {0: "down", 1: "starting", 2: "up", 3: "stopping"}
CHECK_ENABLED = 0x4  # srv_check_state: CHK_ST_ENABLED (HAProxy's include/haproxy/check-t.h)


class StateFormatError(ValueError):
    """An answer that is not the format expected (wrong backend name, HAProxy error)."""


class Admin(Enum):
    """A slot's administrative state, as `set server ... state` names it."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"

    @classmethod
    def from_mask(cls, mask: int) -> Admin:
        # CMAINT alone is the configuration's "disabled", which HAProxy keeps as a
        # reminder after `state ready` while the server serves: it is not maintenance.
        if mask & (FMAINT | IMAINT | RMAINT):
            return cls.MAINT
        if mask & (FDRAIN | IDRAIN):
            return cls.DRAIN
        return cls.READY


@dataclass(frozen=True)
class ServerState:
    """One slot of the backend, as HAProxy holds it now."""

    name: str
    addr: str
    port: int
    admin: Admin
    weight: int  # the user weight (srv_uweight): what `set server ... weight` sets
    op: str = "down"  # operational state from the checks: down/starting/up/stopping
    # A health check is enabled (without one, op is always "up"); not part of equality:
    # it says how far to trust `op`, not what the slot is.
    checked: bool = field(default=False, compare=False)

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.addr, self.port


def parse_servers_state(text: str, backend: str) -> list[ServerState]:
    """The slots of `backend` from `show servers state [backend]` (format version 1)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise StateFormatError(f"show servers state: not format 1: {text.strip()[:120]!r}")
    header: list[str] = []
    servers = []
    for line in lines[1:]:
        if line.startswith("#"):
            header = line[1:].split()
            continue
        if not header:
            raise StateFormatError("show servers state: data before the header line")
        row = dict(zip(header, line.split(), strict=False))
        if row.get("be_name") != backend:
            continue
        try:
            servers.append(ServerState(
                name=row["srv_name"], addr=row["srv_addr"], port=int(row["srv_port"]),
                admin=Admin.from_mask(int(row["srv_admin_state"])),
                weight=int(row["srv_uweight"]),
                op=OP_STATES.get(int(row["srv_op_state"]), "unknown"),
                checked=bool(int(row.get("srv_check_state", "0")) & CHECK_ENABLED)))
        except (KeyError, ValueError) as exc:
            raise StateFormatError(f"show servers state: bad line {line!r}: {exc}") from None
    return servers


def parse_stat(text: str) -> dict[str, dict[str, str]]:
    """`show stat` CSV: server name -> its fields (status, check_status, ...)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise StateFormatError(f"show stat: no header: {text.strip()[:120]!r}")
    header = lines[0][2:].split(",")
    rows = {}
    for line in lines[1:]:
        if line.strip():
            row = dict(zip(header, line.split(","), strict=False))
            rows[row.get("svname", "")] = row
    return rows


def parse_info(text: str) -> dict[str, str]:
    """`show info`: field -> value."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    if "Pid" not in info:
        raise StateFormatError(f"show info: no Pid: {text.strip()[:120]!r}")
    return info
