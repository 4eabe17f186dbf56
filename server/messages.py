"""Every message that crosses a process boundary of the master, as typed values.

Two channels carry them, both newline-delimited JSON objects (sidecar.Channel):
- master <-> sidecar (the cluster agent): Hello, State, MasterEvent, Result out;
  Command in;
- old master <-> new master during USR2: Ready and Failed from the new master,
  Promote from the old one.
Each kind is a frozen dataclass with `to_wire(version)`; `from_wire(raw, accept)`
is the one parser. Anything else (the hand-off header of handoff.py, the upgrade
status file) is not built here: see docs/internals.md for why.

Wire versions. Version 1 is the dicts of the releases before this module: a
JSON object whose "type" names the kind and which has no "version" key (none of
the version 1 kinds ever had one, so its absence is what recognises version 1;
an explicit "version": 1 is read the same way). Version 2 is version 1 plus
"version": 2: every version 1 field is kept, under the same name, with the same
meaning, so a version 1 reader (which ignores keys it does not know) understands
a version 2 message. A "version" this release cannot read, a missing field, a
field of the wrong type or a kind this side does not expect raises a
MessageError; the receiver logs one line (refusal_line) and drops the message.

Which version a sender writes: the newest one its peer is known to read,
`speak(peer_version)` = min(peer's, ours). The peer's version is learnt from
what it said: the old master announces its own in the hand-off header
(`"wire": N`; a version 1 master writes no such key, hence 1), the new master
answers in it, and the old master answers "promote" in the version of the
"ready" it got; the agent commands its master in the version of the master's
last hello or state, and the master answers each command in its version. A
side that has heard nothing yet (the master's first hello) writes WIRE_VERSION.
So a USR2 from a version 1 release into this one, or back (a rollback), speaks
version 1 on the upgrade channel, and a later version that stops being a
superset of version 2 still interoperates with this release.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, ClassVar

WIRE_VERSION = 2
READABLE = frozenset({1, 2})
VERSION_KEY = "version"
ANNOUNCE_KEY = "wire"  # the old master's wire version, in the USR2 hand-off header


class MessageError(ValueError):
    """A message this release refuses; `version` is the wire version it claimed (1 when
    it named none, None when that could not be read), `kind` its "type" when it had one."""

    def __init__(self, reason: str, *, version: Any = None, kind: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.version = version
        self.kind = kind


class UnknownVersion(MessageError):
    """The message names a wire version this release does not read."""


class MalformedMessage(MessageError):
    """A readable version, but not a message this side accepts (shape, field, kind)."""


def speak(peer_version: int | None) -> int:
    """The version to write to a peer that spoke (or announced) `peer_version`."""
    if peer_version is None:
        return WIRE_VERSION
    return max(1, min(int(peer_version), WIRE_VERSION))


def announced_version(header: dict[str, Any]) -> int:
    """The wire version an old master announced in its hand-off header (1: none)."""
    value = header.get(ANNOUNCE_KEY, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


# -- field readers: a missing or mistyped field is the sender's fault ----------------------

_MISSING = object()


def _field(raw: dict[str, Any], kind: str, name: str, types: tuple[type, ...],
           default: Any = _MISSING) -> Any:
    if name not in raw or (raw[name] is None and default is not _MISSING and None not in types):
        if default is _MISSING:
            raise MalformedMessage(f"{kind}: missing field {name!r}")
        return default
    value = raw[name]
    # bool is an int subclass: a JSON true is never a count or a pid.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise MalformedMessage(f"{kind}: field {name!r} is {type(value).__name__}, "
                               f"expected {want}")
    return value


_INT = (int,)
_STR = (str,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))


class Message:
    """Base of every kind: `KIND` is its "type" on the wire."""

    KIND: ClassVar[str] = ""

    def to_wire(self, version: int = WIRE_VERSION) -> dict[str, Any]:
        if version not in READABLE:
            raise ValueError(f"cannot write wire version {version!r}")
        body = {"type": self.KIND, **self._fields()}
        return body if version == 1 else {**body, VERSION_KEY: version}

    def _fields(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Message:
        raise NotImplementedError


# -- master -> sidecar ----------------------------------------------------------------------

@dataclass(frozen=True)
class Hello(Message):
    """Who the master is: sent when a sidecar starts (and again to a restarted one)."""

    KIND: ClassVar[str] = "hello"
    pid: int
    bind: tuple[str, ...] = ()
    workers: int = 0
    max_workers: int = 0
    proc_name: str | None = None
    release: str | None = None

    def _fields(self) -> dict[str, Any]:
        return {"pid": self.pid, "node": {
            "bind": list(self.bind), "workers": self.workers, "max_workers": self.max_workers,
            "proc_name": self.proc_name, "release": self.release}}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Hello:
        node = _field(raw, "hello", "node", (dict,), {})
        bind = _field(node, "hello", "bind", (list,), [])
        if not all(isinstance(b, str) for b in bind):
            raise MalformedMessage("hello: field 'bind' must be a list of strings")
        return cls(_field(raw, "hello", "pid", _INT), tuple(bind),
                   _field(node, "hello", "workers", _INT, 0),
                   _field(node, "hello", "max_workers", _INT, 0),
                   _field(node, "hello", "proc_name", _OPT_STR, None),
                   _field(node, "hello", "release", _OPT_STR, None))


@dataclass(frozen=True)
class State(Message):
    """The master's public state and worker counts; None: the sender did not say
    (version 1 senders such as test doubles may leave the counts out)."""

    KIND: ClassVar[str] = "state"
    state: str
    workers: int | None = None
    workers_target: int | None = None
    workers_configured: int | None = None
    max_workers: int | None = None
    pid: int | None = None
    reason: str = ""

    def _fields(self) -> dict[str, Any]:
        counts = {"workers": self.workers, "workers_target": self.workers_target,
                  "workers_configured": self.workers_configured,
                  "max_workers": self.max_workers, "pid": self.pid}
        # Unsaid counts are left out, never null: a version 1 reader int()s what is there.
        return {"state": self.state, **{k: v for k, v in counts.items() if v is not None},
                "reason": self.reason}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> State:
        def count(name: str) -> int | None:
            return _field(raw, "state", name, _OPT_INT, None)
        return cls(_field(raw, "state", "state", _STR), count("workers"),
                   count("workers_target"), count("workers_configured"), count("max_workers"),
                   count("pid"), _field(raw, "state", "reason", _STR, ""))


@dataclass(frozen=True)
class MasterEvent(Message):
    """Something that happened to the master (upgrade_started, upgrade_promoted, ...)."""

    KIND: ClassVar[str] = "event"
    event: str
    reason: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"event": self.event, "reason": self.reason}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> MasterEvent:
        return cls(_field(raw, "event", "event", _STR), _field(raw, "event", "reason", _STR, ""))


@dataclass(frozen=True)
class Result(Message):
    """The master's answer to a Command (same id)."""

    KIND: ClassVar[str] = "result"
    id: str
    ok: bool
    reason: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"id": self.id, "ok": self.ok, "reason": self.reason}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Result:
        return cls(_field(raw, "result", "id", _STR), _field(raw, "result", "ok", (bool,)),
                   _field(raw, "result", "reason", _STR, ""))


# -- sidecar -> master ----------------------------------------------------------------------

@dataclass(frozen=True)
class Command(Message):
    """A verb for the master (ttin, ttou, set_workers, upgrade, drain, undrain, reload);
    n: the count for ttin/ttou/set_workers (None: the master's default)."""

    KIND: ClassVar[str] = "command"
    id: str
    cmd: str
    n: int | None = None

    def _fields(self) -> dict[str, Any]:
        # Version 1 leaves "n" out rather than writing null: keep that shape.
        return {"id": self.id, "cmd": self.cmd, **({} if self.n is None else {"n": self.n})}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Command:
        return cls(_field(raw, "command", "id", _STR), _field(raw, "command", "cmd", _STR),
                   _field(raw, "command", "n", _OPT_INT, None))


# -- USR2: new master <-> old master --------------------------------------------------------

@dataclass(frozen=True)
class Ready(Message):
    """New -> old master: every new worker is ready; promote me."""

    KIND: ClassVar[str] = "ready"
    pid: int

    def _fields(self) -> dict[str, Any]:
        return {"pid": self.pid}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Ready:
        return cls(_field(raw, "ready", "pid", _INT))


@dataclass(frozen=True)
class Failed(Message):
    """New -> old master: the new master halts (the reason is the rollback's)."""

    KIND: ClassVar[str] = "failed"
    reason: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Failed:
        return cls(_field(raw, "failed", "reason", _STR, ""))


@dataclass(frozen=True)
class Promote(Message):
    """Old -> new master: you serve now; the old master drains."""

    KIND: ClassVar[str] = "promote"

    def _fields(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _decode(cls, raw: dict[str, Any], version: int) -> Promote:
        return cls()


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls for cls in (Hello, State, MasterEvent, Result, Command, Ready, Failed, Promote)}
# What each receiver accepts: a kind meant for another side is refused, not guessed at.
FOR_MASTER_FROM_SIDECAR = (Command,)
FOR_SIDECAR = (Hello, State, MasterEvent, Result)
FOR_OLD_MASTER = (Ready, Failed)
FOR_NEW_MASTER = (Promote,)


@dataclass(frozen=True)
class Received:
    """A decoded message and the wire version it came in (answer in that version)."""

    message: Message
    version: int


def wire_version(raw: Any) -> int:
    """The version a raw message claims: 1 without a "version" key; UnknownVersion
    for any value this release does not read."""
    if not isinstance(raw, dict):
        raise MalformedMessage(f"a message is a JSON object, not {type(raw).__name__}")
    if VERSION_KEY not in raw:
        return 1
    seen = raw[VERSION_KEY]
    if not isinstance(seen, int) or isinstance(seen, bool) or seen not in READABLE:
        raise UnknownVersion(f"wire version {seen!r} is not one this release reads "
                             f"({', '.join(map(str, sorted(READABLE)))})",
                             version=seen, kind=raw.get("type"))
    return int(seen)


def from_wire(raw: Any, accept: tuple[type[Message], ...] = tuple(KINDS.values())) -> Received:
    """Decode one message of a kind in `accept`; MessageError otherwise."""
    version = wire_version(raw)
    kind = raw.get("type")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    try:
        if cls is None:
            raise MalformedMessage(f"unknown message type {kind!r}")
        if cls not in accept:
            raise MalformedMessage(f"a {kind!r} message is not meant for this side")
        return Received(cls._decode(raw, version), version)
    except MessageError as exc:
        exc.version, exc.kind = version, kind
        raise


def refusal_line(receiver: str, exc: MessageError, action: str) -> str:
    """The one log line of a refused message: who (node/role and pid), what version it
    claimed, why, and what the receiver does about it."""
    version = "1 (no version field)" if exc.version == 1 else repr(exc.version)
    kind = f"{exc.kind!r} " if isinstance(exc.kind, str) else ""
    return (f"{receiver} (pid {os.getpid()}): refused a {kind}message of wire version "
            f"{version}: {exc.reason}; {action}")


def receive(raws: list[dict[str, Any]], accept: tuple[type[Message], ...], receiver: str,
            log: logging.Logger, action: str = "dropped it and carries on") -> list[Received]:
    """Decode what a channel delivered; refuse (log, drop) what cannot be read."""
    out = []
    for raw in raws:
        try:
            out.append(from_wire(raw, accept))
        except MessageError as exc:
            log.warning(refusal_line(receiver, exc, action))
    return out
