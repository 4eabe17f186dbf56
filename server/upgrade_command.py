"""`polycorn --upgrade PIDFILE`: upgrade every master of a host, one at a time, and wait.

Each master records its upgrade attempts in `PIDFILE.m<index>` (JSON, with its
stamp: pid, start time, boot id). For each master in index order this sends
USR2, only when the stamp matches the live process (a status file left by a
master that died names whatever process has its pid now), waits for the
attempt's outcome and stops at the first rollback. Exit status: 0 when every master was promoted
(prints the new pids), 1 with the reason when one rolled back or timed out,
2 when there is nothing to upgrade.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import sys
import time
from typing import Any

from polycorn.server import identity, pidfile

POLL = 0.05
# How long a record may still name an old master that has exited before its successor
# wrote its own: the new master records itself when it handles "promote", which a busy
# host can delay past the old master's (quick, when idle) drain.
SUCCESSOR_GRACE = 5.0


def status_files(pid_path: str) -> list[str]:
    pattern = re.compile(re.escape(pid_path) + r"\.m(\d+)$")
    found = [(int(m.group(1)), p) for p in glob.glob(glob.escape(pid_path) + ".m*")
             if (m := pattern.match(p))]
    return [p for _, p in sorted(found)]


def upgrade_one(path: str, timeout: float, out: Any) -> tuple[bool, str]:
    """USR2 to the master recorded in `path`; (promoted, message)."""
    before = identity.read_record(path)
    pid = identity.verified_pid(before, identity.written_at(path))
    if not pid or before is None:
        stale = f" (pid {before.get('pid')} is gone or is another process now)" if before else ""
        return False, f"{path}: no running master recorded there{stale}"
    attempt = int(before.get("attempt", 0))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    gone_since: float | None = None
    while time.monotonic() < deadline:
        now = identity.read_record(path) or {}
        now_pid, state = int(now.get("pid", 0)), now.get("state")
        if now_pid == pid and int(now.get("attempt", 0)) > attempt:
            if state == "promoted":
                return True, f"master {now.get('index')}: {pid} -> {now.get('new_pid')}"
            if state == "rolled_back":
                return False, (f"master {now.get('index')} (pid {pid}): upgrade rolled back: "
                               f"{now.get('reason')}")
        elif now_pid and now_pid != pid and state == "running":
            return True, f"master {now.get('index')}: {pid} -> {now_pid}"
        if now_pid == pid and not identity.verified_pid(before, identity.written_at(path)):
            # A promoted old master drains and exits on its own; under load it can be gone
            # before its successor has written this file. Only a file that still names it
            # after SUCCESSOR_GRACE means it died.
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > SUCCESSOR_GRACE:
                return False, f"master {pid} died during the upgrade"
        time.sleep(POLL)
    return False, f"master {pid}: no outcome within {timeout:g}s"


def upgrade_command(cfg: Any) -> int:
    pid_path = cfg.upgrade
    files = status_files(pid_path)
    if not files:
        try:
            pid = pidfile.read(pid_path)
        except pidfile.PidfileError as exc:
            print(f"polycorn: error: {exc}", file=sys.stderr)
            return 2
        print(f"polycorn: error: no upgrade status next to {pid_path} "
              f"(pid {pid}); was the server started with --pid {pid_path}?", file=sys.stderr)
        return 2
    timeout = float(getattr(cfg, "upgrade_timeout", 60) or 60) + 30
    for path in files:
        ok, message = upgrade_one(path, timeout, sys.stdout)
        if not ok:
            print(f"polycorn: error: {message}", file=sys.stderr)
            return 1
        print(f"upgraded {message}")
    return 0
