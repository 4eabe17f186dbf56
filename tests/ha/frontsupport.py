"""A real HAProxy front for the ha/ tests: haproxy in the foreground (`-db`) with the
config `polycorn-ctl haproxy config` prints, the real `polycorn-ctl haproxy sync`
beside it, and real polycorn nodes that answer /version with their node id. Every
process is started on free loopback ports and killed by pid afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polycorn.ha.haproxy.runtime import RuntimeApi, RuntimeApiError
from polycorn.ha.haproxy.servers import Admin, ServerState, parse_servers_state
from support.procs import ROOT, descendants, free_port, kill_all, port_open, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
APPS = ROOT / "tests" / "apps"
BACKEND = "polycorn"


def ctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "polycorn.ha.ctl", *args]


class HAProxyProc:
    """haproxy -db -f CONFIG; the config comes from `polycorn-ctl haproxy config`."""

    def __init__(self, workdir: Path, redis_url: str, cluster: str, slots: int = 8,
                 master_worker: bool = False) -> None:
        self.master_worker = master_worker  # -W: USR2 to the master reloads (systemd's way)
        # A short private directory: a Unix socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="pcf-"))
        self.workdir = workdir
        self.port = free_port()
        self.socket = str(self.dir / "admin.sock")
        self.state_file = str(self.dir / "admin.state")
        self.config = workdir / "haproxy.cfg"
        text = subprocess.run(
            ctl_argv("haproxy", "config", "--cluster", cluster, "--redis", redis_url,
                     "--bind", f"127.0.0.1:{self.port}", "--slots", str(slots),
                     "--runtime-api", f"unix:{self.socket}", "--backend", BACKEND),
            capture_output=True, text=True, check=True).stdout
        self.config.write_text(text)
        self.api = RuntimeApi(self.socket, timeout=1.0)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.start()

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        argv = [HAPROXY, *(["-W"] if self.master_worker else []), "-db", "-f", str(self.config)]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.starts += 1
        wait_until(lambda: self._answers() and port_open(self.port), 10,
                   what="haproxy's socket and port")
        if self.master_worker:
            # The master handles USR2 only once its own loop runs, after it reports
            # the worker loaded: a USR2 sent before that is lost.
            wait_until(lambda: self.log().count("Loading success.") >= self.starts, 10,
                       what="haproxy's master ready")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited {self.proc.returncode}:\n{self.log()}")
        try:
            return "Pid" in self.api.show_info()
        except RuntimeApiError:
            return False

    def worker_pid(self) -> int:
        return int(self.api.show_info().split("Pid:")[1].split()[0])

    def reload(self) -> None:
        """USR2 to the master (-W): a new worker with the config and the state file."""
        assert self.master_worker and self.proc is not None
        before = self.worker_pid()
        loaded = self.log().count("Loading success.")
        deadline = time.monotonic() + 10
        while self.log().count("Loading success.") == loaded:
            # A master still setting up its signal handlers drops a USR2: ask again.
            assert time.monotonic() < deadline, "haproxy's master never reloaded"
            os.kill(self.proc.pid, signal.SIGUSR2)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: self.log().count("Loading success.") > loaded, 1.0,
                           what="haproxy's master reloading")
        wait_until(lambda: self._answers() and self.worker_pid() != before, 10,
                   what="a new haproxy worker")

    def kill(self) -> None:
        if self.proc is None:
            return
        pids = [self.proc.pid, *descendants(self.proc.pid)]  # -W: the workers too
        kill_all(pids, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def servers(self) -> dict[str, ServerState]:
        return {s.name: s for s in parse_servers_state(self.api.show_servers_state(BACKEND),
                                                        BACKEND)}

    def in_rotation(self) -> dict[int, ServerState]:
        """port -> slot, for every slot that takes new requests (ready and up)."""
        return {s.port: s for s in self.servers().values()
                if s.admin is Admin.READY and s.op == "up"}


class SyncProc:
    """`polycorn-ctl haproxy sync` as a real process, its log in a file."""

    def __init__(self, workdir: Path, redis_url: str, cluster: str, haproxy: HAProxyProc
                 ) -> None:
        n = sum(1 for _ in workdir.glob("sync-*.log"))
        self.log_path = workdir / f"sync-{n}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            ctl_argv("haproxy", "sync", "--cluster", cluster, "--redis", redis_url,
                     "--runtime-api", f"unix:{haproxy.socket}", "--backend", BACKEND,
                     "--state-file", haproxy.state_file),
            stdout=log, stderr=log, start_new_session=True)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """TERM (it stops cleanly), then KILL if it did not; its exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            kill_all([self.proc.pid])
            self.proc.wait(5)
            return None


# The app each kind of node serves: WSGI on the default worker, or a real FastAPI app
# (lifespan on, /health 2xx only after startup) on -k asgi. Both answer /version with
# APP_VERSION and /health on the path HAProxy checks.
NODE_APPS = {
    "wsgi": ("testapp:application",),
    "asgi": ("-k", "asgi", "fastapi_app:app"),
}


def start_node(polycorn, redis_url: str, cluster: str, node_id: str, port: int,
               wait: bool = True, kind: str = "wsgi"):
    """A real polycorn node (2 workers) whose /version answers its node id."""
    return polycorn(
        "-b", f"127.0.0.1:{port}", "-w", "2", "--redis", redis_url, "--cluster", cluster,
        "--node-id", node_id, "--health-check", "/health", "--graceful-timeout", "10",
        *NODE_APPS[kind], wait_port=port if wait else None, cwd=APPS,
        env={"APP_VERSION": node_id})


def first_after(spans: list, body: str, after: float) -> float | None:
    """When the first request answered by `body` that started after `after` started."""
    starts = [s for s, _, ok, what in spans if ok and what == body and s >= after]
    return min(starts) if starts else None


def wall_to_monotonic(wall: float) -> float:
    return wall - (time.time() - time.monotonic())


def figure(what: str, value: float, unit: str = "s") -> None:
    print(f"\nFIGURE {what}: {value:.3f}{unit}")


class AdminWatch:
    """Polls one slot every few ms in a thread; when it first showed `admin`."""

    def __init__(self, haproxy: HAProxyProc, slot: str, admin: Admin) -> None:
        import threading

        self.haproxy, self.slot, self.admin = haproxy, slot, admin
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.seen_at is None:
            with contextlib.suppress(RuntimeApiError):
                if self.haproxy.servers()[self.slot].admin is self.admin:
                    self.seen_at = time.monotonic()
            time.sleep(0.005)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join(5)
        return self.seen_at


def explain_failures(log: str, failures: list, around: float = 1.0, limit: int = 40) -> str:
    """HAProxy's account of the load's failed requests, so a failure explains itself:
    for each, its times and client port, then HAProxy's line for that client port
    (status, termination state, retries) and its event lines (server DOWN...) within
    `around` seconds. A request HAProxy closed without a word has no line (http_ana.c's
    abort_keep_alive clears the log level: a keep-alive request failed on a reused
    server connection), and the text says so."""
    offset = time.time() - time.monotonic()
    lines = log.splitlines()
    out = []
    for started, ended, what, port in failures[:5]:
        start_w, end_w = started + offset, ended + offset
        out.append(f"failed request: {what}, client port {port}, "
                   f"{_iso(start_w)} -> {_iso(end_w)}")
        mine = [line for line in lines if port and f" 127.0.0.1:{port} [" in line
                and (t := _line_time(line)) is not None
                and start_w - around <= t <= end_w + around]
        out += [f"  haproxy: {line}" for line in mine] or [
            "  haproxy: no line for this client port (closed without a log line?)"]
        events = [line for line in lines if "polycorn_front" not in line
                  and (t := _line_time(line)) is not None
                  and start_w - around <= t <= end_w + around]
        out += [f"  haproxy event: {line}" for line in events[:limit]]
    return "\n".join(out)


def _iso(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1e6):06d}"


def _line_time(line: str) -> float | None:
    """The wall time of a `log stdout format iso` line, or None for HAProxy's own
    stderr lines ([WARNING] ...), which carry none."""
    import datetime

    head = line.split(" ", 1)[0]
    try:
        return datetime.datetime.fromisoformat(head).timestamp()
    except ValueError:
        return None


def killed_by_down(log: str) -> list[str]:
    """HAProxy's lines for requests it killed itself because their server went down
    (termination state "D...", `on-marked-down shutdown-sessions`): the client got no
    answer at all. A keep-alive client retries such a request unseen, a fresh one
    sees a reset, so a test counts these lines and not only its failures."""
    return [line for line in log.splitlines() if "polycorn_front" in line
            and len(parts := line.split()) > 12 and parts[-6].startswith("D")]
