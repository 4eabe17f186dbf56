"""The node's totals: every process's slot file added up, dead processes folded in.

A counter of a dead process must not vanish with it (Prometheus's rate() would
see a reset): `Aggregator.collect()` folds each dead process's counters into
`retired.json` (written whole, then renamed) before deleting its file, and adds
the live files to the retired totals. Gauges count live processes only. The
whole collect runs under an exclusive flock of the directory's lock file, so two
aggregators (an old and a new metrics sidecar during a hand-over) never fold a
file twice nor see it half folded. `retired.json` lists the files it already
holds, so a fold cut short between the rename and the deletion is not counted
twice by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from polycorn.metrics import slots
from polycorn.metrics.schema import BY_NAME, COUNTER, GAUGE_MAX, SlotKey

log = logging.getLogger("polycorn.error")

RETIRED = "retired.json"
LOCK = ".lock"
STALE_TMP = 60.0  # seconds after which a half-made slot file (its creator died) is removed


@dataclass
class Totals:
    """One collect: every series' node-wide value, and what it was made of."""

    values: dict[SlotKey, float] = field(default_factory=dict)
    live: int = 0  # processes with a slot file
    folded: int = 0  # dead processes folded by this collect
    in_flight: float = 0.0


class Aggregator:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def collect(self) -> Totals:
        """Fold the dead, add up the living: the node's totals now."""
        with self._locked():
            retired, folded_names = self._load_retired()
            readings = [r for path in self._slot_paths()
                        if os.path.basename(path) not in folded_names
                        and (r := slots.read(path)) is not None]
            dead = [r for r in readings if not r.alive]
            if dead:
                for reading in dead:
                    for key, value in reading.values.items():
                        if _kind(key) == COUNTER and value:
                            retired[key] = retired.get(key, 0.0) + value
                self._store_retired(retired, folded_names | {os.path.basename(r.path)
                                                             for r in dead})
            for name in folded_names | {os.path.basename(r.path) for r in dead}:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
            if folded_names:  # every one is gone now: the list can start afresh
                self._store_retired(retired, set())
            return _add_up(retired, [r for r in readings if r.alive], len(dead))

    def _slot_paths(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith(slots.SUFFIX + ".tmp"):  # a process died while making its file
                path = os.path.join(self.directory, name)
                with contextlib.suppress(OSError):
                    if time.time() - os.stat(path).st_mtime > STALE_TMP:
                        os.unlink(path)
        return [os.path.join(self.directory, n) for n in names if n.endswith(slots.SUFFIX)]

    def _load_retired(self) -> tuple[dict[SlotKey, float], set[str]]:
        try:
            with open(os.path.join(self.directory, RETIRED)) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}, set()
        except ValueError:
            # Never a torn file (written by rename); a foreign one: start again, loudly.
            log.error("metrics: %s/%s is not ours; the node's counters restart from 0",
                      self.directory, RETIRED)
            return {}, set()
        values = {(name, tuple(tuple(p) for p in labels)): float(value)
                  for name, labels, value in data.get("values", [])}
        return values, set(data.get("folded", []))

    def _store_retired(self, values: dict[SlotKey, float], folded: set[str]) -> None:
        path = os.path.join(self.directory, RETIRED)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"values": [[name, labels, value] for (name, labels), value
                                  in values.items()], "folded": sorted(folded)}, f)
        os.replace(tmp, path)


def _kind(key: SlotKey) -> str | None:
    family = BY_NAME.get(key[0])
    return family.kind if family is not None else None


def _add_up(retired: dict[SlotKey, float], live: list[slots.Reading], folded: int) -> Totals:
    totals = Totals(values=dict(retired), live=len(live), folded=folded)
    values = totals.values
    for reading in live:
        for key, value in reading.values.items():
            kind = _kind(key)
            if kind is None:
                continue  # a series a newer or older release has and this one does not show
            if kind == GAUGE_MAX:
                values[key] = max(values.get(key, value), value)
            else:
                values[key] = values.get(key, 0.0) + value
        started = reading.values.get(("polycorn_http_requests_started", ()), 0.0)
        answered = sum(v for (name, _), v in reading.values.items()
                       if name == "polycorn_http_requests")
        totals.in_flight += max(0.0, started - answered)
    return totals
