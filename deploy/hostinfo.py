"""What one host has, read on the host in one round trip and printed as JSON.

Standard library only: the deploy sends this file's source to the host's own
Python (`python3 -c SOURCE BASE PIDFILE...`), before any polycorn is installed
there. A release is "in use" when a live process runs in it (its working
directory, read from /proc), so cleanup never removes code a master still runs;
a master is live when its pid file names a running polycorn process.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def master_pid(pidfile: str) -> int:
    """The pid a polycorn pid file names, when that process runs polycorn; else 0.

    Not just kill(pid, 0): an unreaped zombie answers it, and after a reboot the
    pid may belong to an unrelated process, which must never get our USR2.
    """
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return 0
    return pid if state != b"Z" and any(b"polycorn" in a for a in args) else 0


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
    print(json.dumps(inspect(sys.argv[1], sys.argv[2:])))
