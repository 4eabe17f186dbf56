"""What one host has, read on the host in one round trip and printed as JSON.

Standard library only: the deploy sends this file's source to the host's own
Python (`python3 -c SOURCE BASE PIDFILE...`), before any polycorn is installed
there. A release is "in use" when a live process runs in it (its working
directory, read from /proc), so cleanup never removes code a master still runs;
a master is live when the stamp beside its pid file matches a running process.
`--signal SIG PIDFILE...` signals such masters, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def master_pid(pidfile: str) -> int:
    """The pid of the live master a polycorn pid file belongs to; else 0.

    Trusted only through the stamp the master writes beside its pid file
    (`PIDFILE.identity`: pid, start time, boot id): a stale pid file names whatever
    process got that pid since (after a reboot, anything), which must never get our
    USR2 or TERM. This repeats polycorn.server.identity.verified_pid in a few lines
    because this file runs alone on hosts where no polycorn may be installed yet.
    A pid file without a stamp (a master of a release before stamps) names its pid
    only if that process started before the file was written (verified_legacy_pid).
    """
    try:
        try:
            with open(pidfile + ".identity") as f:
                record = json.load(f)
        except FileNotFoundError:
            with open(pidfile) as f:
                record = {"pid": int(f.read().strip()), "start": None}
        pid = int(record["pid"])
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the name may hold ')'
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        if record["start"] is None:
            with open("/proc/stat") as f:
                btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
            started = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            legacy = fields[0] != b"Z" and started <= os.stat(pidfile).st_mtime
            return pid if legacy else 0
        start = int(record["start"])
    except (OSError, ValueError, IndexError, KeyError, TypeError, StopIteration):
        return 0
    if fields[0] == b"Z" or int(fields[19]) != start:  # a zombie, or another process
        return 0
    return pid if record.get("boot") in (None, "", boot) else 0


def signal_masters(pidfiles: list[str], signame: str) -> dict[str, int]:
    """Send SIG<signame> to each live master; pid file -> the pid signalled (0: none)."""
    sent = {}
    for path in pidfiles:
        pid = master_pid(path)
        if pid:
            try:
                os.kill(pid, getattr(signal, "SIG" + signame))
            except ProcessLookupError:
                pid = 0
        sent[path] = pid
    return sent


def _release(releases: str, name: str) -> dict:
    path = os.path.join(releases, name)
    info: dict = {}
    try:
        with open(os.path.join(path, "release.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        pass
    created = info.get("created")
    if not isinstance(created, int | float):
        created = os.stat(path).st_mtime
    complete = os.path.exists(os.path.join(path, "venv", "bin", "python")) and \
        os.path.exists(os.path.join(path, "polycorn.conf.py"))
    return {"id": name, "created": created, "complete": complete, "info": info}


def _in_use(releases: str) -> list[str]:
    prefix = releases.rstrip("/") + "/"
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix):
            found.add(cwd[len(prefix):].split("/", 1)[0])
    return sorted(found)


def inspect(base: str, pidfiles: list[str]) -> dict:
    releases = os.path.join(base, "releases")
    current = None
    if os.path.islink(os.path.join(base, "current")):
        current = os.path.basename(os.readlink(os.path.join(base, "current")).rstrip("/"))
    names = sorted(os.listdir(releases)) if os.path.isdir(releases) else []
    return {
        "hostname": socket.gethostname(),
        "python": ".".join(str(n) for n in sys.version_info[:3]),
        "base_exists": os.path.isdir(base),
        "layout_ok": os.path.isdir(releases) and os.path.isdir(os.path.join(base, "shared")),
        "current": current,
        "releases": [_release(releases, n) for n in names
                     if os.path.isdir(os.path.join(releases, n))],
        "in_use": _in_use(releases) if names else [],
        "masters": {path: master_pid(path) for path in pidfiles},
        "systemd": os.path.isdir("/run/systemd/system"),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--signal"]:  # --signal TERM PIDFILE...: stop the daemon masters
        print(json.dumps(signal_masters(sys.argv[3:], sys.argv[2])))
    else:
        print(json.dumps(inspect(sys.argv[1], sys.argv[2:])))
