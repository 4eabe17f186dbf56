"""Polycorn's workers against the field: one worker on one core, wrk on the other, a markdown table.

Usage: python loadtests/bench.py [--duration 5] [--repeat 4] [--only a,b] [--tls] [--json OUT]

Every server runs the same apps (loadtests/bench_apps.py: hello, a 64 KiB body,
a 4 KiB POST echo) with one worker pinned to one CPU (taskset), while wrk runs
pinned to another, with keep-alive and with `Connection: close`. Repetitions
are interleaved (each one runs every server, in a rotated order) and each
figure is the median over repetitions; the ratio is taken to gunicorn sync of
the same repetition, so a noisy neighbour moves both. Servers that are not
installed are skipped. Every server started is killed by pid, also on Ctrl-C.

TLS: `--tls` runs the same workers serving HTTPS (--certfile/--keyfile, one self-signed
ECDSA P-256 pair made with openssl for the run), Gunicorn's sync and gthread too, and
wrk speaks https; their ratio is to gunicorn sync over TLS in the same repetition.

Before/after: `--against before=/path/to/other/checkout` runs every selected polycorn
server a second time from that checkout (named `polycorn-event@before`...), interleaved
with the current one in every repetition; the report then adds the CPU per request of
this tree against that one (median of the per-repetition ratios). Make the other
checkout with `git worktree add /tmp/before <commit>`.

CPU: the server's CPU time is utime + stime of every process of its tree (master,
workers, threads), read from /proc before and after each wrk run; the tables give
it per request and as requests per server CPU-second (req/CPU-s), and a line under
each table gives the per-CPU ratios the issue's targets name (event against granian
and bjoern, thread against gunicorn sync), each the median of per-repetition ratios,
with their lowest and highest.

The field's servers are optional: `make bench-deps` installs them (granian from its
wheel; bjoern builds against libev: `apt-get install libev-dev`, then
`.venv/bin/python -m pip install granian bjoern`). A server that is not installed is
skipped and named under the tables.

Memory: the worker's RSS when idle after its first request (it counts the pages
shared with the master), and its private dirty memory when idle again after the
runs (what each more worker costs; the kernel shares the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

if not __package__:  # run as a file (`python loadtests/bench.py`): make `loadtests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench_run import (  # noqa: E402 - after the sys.path fix above
    Run,
    Running,
    cpu_seconds,
    free_port,
    parse_wrk,
    private_dirty_kib,
    wrk,
)

HERE = Path(__file__).resolve().parent
PY = sys.executable
POST_BODY_SIZE = 4096
MODES = ("keep-alive", "close")
BASELINE = "gunicorn-sync"


# -- the servers -------------------------------------------------------------------------

@dataclass(frozen=True)
class Server:
    name: str
    command: Callable[[int, str, int], list[str]]  # (port, app, threads) -> argv
    available: Callable[[], bool]
    env: dict = field(default_factory=dict)
    asgi: bool = False  # runs the asgi_* twins of the apps
    pythonpath: tuple[str, ...] = ()  # before loadtests/: another checkout's packages
    tls: bool = False  # serves HTTPS (--certfile/--keyfile); its ratio is to gunicorn sync's TLS


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


_tls_folder: Path | None = None


def tls_arguments() -> list[str]:
    """--certfile/--keyfile of a self-signed pair made once per bench run (openssl), for the
    TLS rows: Polycorn and Gunicorn take the same flags."""
    global _tls_folder
    if _tls_folder is None:
        _tls_folder = Path(tempfile.mkdtemp(prefix="polycorn-bench-tls-"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem",
                        "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       cwd=_tls_folder, check=True, capture_output=True)
    return ["--certfile", str(_tls_folder / "cert.pem"), "--keyfile",
            str(_tls_folder / "key.pem")]


def _polycorn(worker: str, statsd: bool = False, tls: bool = False,
              metrics: bool = False) -> Callable[[int, str, int], list[str]]:
    def argv(port: int, app: str, threads: int) -> list[str]:
        extra = ["--threads", str(threads)] if worker == "thread" else []
        if statsd:
            extra += ["--statsd-host", f"127.0.0.1:{statsd_receiver_port()}"]
        if tls:
            extra += tls_arguments()
        if metrics:  # nobody scrapes: the cost is the workers' reporting alone
            extra += ["--metrics-bind", f"127.0.0.1:{free_port()}"]
        target = f"bench_apps:asgi_{app}" if worker == "asgi" else f"bench_apps:{app}"
        return [PY, "-m", "polycorn.server.main", "-k", worker, "-w", "1", *extra,
                "-b", f"127.0.0.1:{port}", target]
    return argv


_statsd_receiver: socket.socket | None = None


def statsd_receiver_port() -> int:
    """A UDP port of this process that a statsd row sends to (the cost of --statsd-host).

    Bound and never read: the kernel delivers each datagram (the sender pays for
    that) and drops what overflows the buffer. A reading agent would be woken for
    every datagram and take CPU from the server or wrk on this 2-CPU box, which is
    the agent's cost, not the server's."""
    global _statsd_receiver
    if _statsd_receiver is None:
        _statsd_receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _statsd_receiver.bind(("127.0.0.1", 0))
    return _statsd_receiver.getsockname()[1]


def _gunicorn(worker: str, tls: bool = False) -> Callable[[int, str, int], list[str]]:
    def argv(port: int, app: str, threads: int) -> list[str]:
        extra = ["--threads", str(threads)] if worker == "gthread" else []
        if tls:
            extra += tls_arguments()
        if int(metadata.version("gunicorn").split(".")[0]) >= 27:
            extra.append("--no-control-socket")  # else it opens one under ~/.gunicorn
        target = f"bench_apps:asgi_{app}" if worker == "asgi" else f"bench_apps:{app}"
        return [PY, "-m", "gunicorn", "-k", worker, "-w", "1", *extra,
                "-b", f"127.0.0.1:{port}", target]
    return argv


def _granian(port: int, app: str, threads: int) -> list[str]:
    return [PY, "-m", "granian", "--interface", "wsgi", "--workers", "1", "--no-ws",
            "--host", "127.0.0.1", "--port", str(port), f"bench_apps:{app}"]


def _uvicorn(port: int, app: str, threads: int) -> list[str]:
    return [PY, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
            f"bench_apps:asgi_{app}"]


def _bjoern(port: int, app: str, threads: int) -> list[str]:
    return [PY, "-c", f"import bjoern, bench_apps; bjoern.run(bench_apps.{app}, '127.0.0.1', {port})"]


SERVERS = {s.name: s for s in [
    Server("gunicorn-sync", _gunicorn("sync"), _module("gunicorn")),
    Server("gunicorn-gthread", _gunicorn("gthread"), _module("gunicorn")),
    Server("polycorn-sync", _polycorn("sync"), _module("polycorn")),
    Server("polycorn-thread", _polycorn("thread"), _module("polycorn")),
    Server("polycorn-event", _polycorn("event"), _module("polycorn")),
    # The same with --statsd-host to a local UDP port: what sending metrics costs.
    Server("polycorn-event-statsd", _polycorn("event", statsd=True), _module("polycorn")),
    # With --metrics-bind (the Prometheus sink): what counting into the slot files costs.
    Server("polycorn-event-metrics", _polycorn("event", metrics=True),
           lambda: _module("polycorn")() and _module("prometheus_client")()),
    # The event worker without the `fast` extra's parser: the cost of the pure parser.
    Server("polycorn-event-pure", _polycorn("event"), _module("polycorn"),
           env={"POLYCORN_PARSER": "python"}),
    Server("polycorn-asgi", _polycorn("asgi"), _module("polycorn"), asgi=True),
    Server("gunicorn-asgi", _gunicorn("asgi"),
           lambda: _module("gunicorn")() and int(metadata.version("gunicorn").split(".")[0]) >= 27,
           asgi=True),
    # The event worker without the compiled accelerator (llhttp and Python around it).
    Server("polycorn-event-noext", _polycorn("event"), _module("polycorn"),
           env={"POLYCORN_NO_EXTENSIONS": "1"}),
    Server("granian", _granian, _module("granian")),
    Server("uvicorn", _uvicorn, lambda: _module("uvicorn")() and _module("uvloop")()
           and _module("httptools")(), asgi=True),
    Server("bjoern", _bjoern, _module("bjoern")),
    # The TLS rows (--tls): the same workers serving HTTPS, against Gunicorn's over TLS.
    Server("gunicorn-sync-tls", _gunicorn("sync", tls=True), _module("gunicorn"), tls=True),
    Server("gunicorn-gthread-tls", _gunicorn("gthread", tls=True), _module("gunicorn"),
           tls=True),
    Server("polycorn-sync-tls", _polycorn("sync", tls=True), _module("polycorn"), tls=True),
    Server("polycorn-thread-tls", _polycorn("thread", tls=True), _module("polycorn"), tls=True),
    Server("polycorn-event-tls", _polycorn("event", tls=True), _module("polycorn"), tls=True),
]}
TLS_BASELINE = "gunicorn-sync-tls"
TLS_SERVERS = tuple(name for name, server in SERVERS.items() if server.tls)


# Rows run only when named with --only (or --tls): a variant of a row, not another server.
OPT_IN = ("polycorn-event-statsd", "polycorn-event-metrics", "polycorn-event-noext",
          *TLS_SERVERS)


def package_shim(tree: Path, workdir: Path, label: str) -> Path:
    """A folder whose `polycorn` package is the checkout `tree`, as its pyproject maps it.

    The editable install's finder comes after PYTHONPATH on sys.meta_path, so a
    server started with this folder first on PYTHONPATH imports the other tree.
    """
    with open(tree / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    root = Path(tempfile.mkdtemp(prefix=f"tree-{label}-", dir=workdir))
    for package, folder in sorted(mapping.items()):
        target = root.joinpath(*package.split("."))
        if package == "polycorn":
            target.mkdir(parents=True)
            for item in (tree / folder).iterdir():
                (target / item.name).symlink_to(item)
        else:
            target.symlink_to((tree / folder).resolve())
    return root


def against(servers: list[Server], spec: str, workdir: Path) -> list[Server]:
    """The polycorn servers of `servers` again, each running from the checkout of `spec`."""
    label, _, tree = spec.partition("=")
    tree_path = Path(tree).resolve()
    if not label or not (tree_path / "pyproject.toml").is_file():
        raise SystemExit(f"bench: --against wants LABEL=CHECKOUT, got {spec!r}")
    shim = str(package_shim(tree_path, workdir, label))
    return [Server(f"{s.name}@{label}", s.command, s.available, s.env, s.asgi, (shim,), s.tls)
            for s in servers if s.name.startswith("polycorn-")]


def cpu_against(runs: list[Run]) -> list[dict]:
    """CPU per request of each polycorn server over its `@label` twin, per repetition."""
    by_key = {(r.rep, r.app, r.mode, r.server): r for r in runs}
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for (rep, app, mode, name), run in by_key.items():
        if "@" not in name:
            continue
        ours = by_key.get((rep, app, mode, name.split("@")[0]))
        if ours and run.cpu_us_per_request:
            ratios.setdefault((app, mode, name), []).append(
                ours.cpu_us_per_request / run.cpu_us_per_request)
    return [{"app": app, "mode": mode, "against": name, "repetitions": len(values),
             "cpu_ratio": statistics.median(values)}
            for (app, mode, name), values in sorted(ratios.items())]


def measure(server: Server, app: str, rep: int, args: argparse.Namespace, post_script: Path,
            log: Path) -> list[Run]:
    running = Running(server, app, args.threads, args.server_cpu, log)
    try:
        running.wait_ready("/")
        time.sleep(0.5)
        worker_rss, master_rss = running.memory()  # idle: one request, no load
        runs = []
        for mode in args.modes:
            wrk(running.port, app, mode, args.warmup, args, post_script, server.tls)
            pids = running.pids()
            cpu_before = cpu_seconds(pids)
            stats = parse_wrk(wrk(running.port, app, mode, args.duration, args, post_script,
                                  server.tls))
            cpu = cpu_seconds(running.pids()) - cpu_before
            runs.append(Run(rep, server.name, app, mode, stats["rps"], stats["requests"],
                            stats["p50_ms"], stats["p99_ms"], stats["errors"],
                            1e6 * cpu / max(1, stats["requests"]), worker_rss, None,
                            master_rss))
        time.sleep(0.5)  # idle again: what the worker keeps, not what a request holds
        private = private_dirty_kib(running.worker_pid())
        for run in runs:
            run.worker_private_kib = private
        return runs
    finally:
        running.stop()


# -- the report ----------------------------------------------------------------------------

def summarize(runs: list[Run]) -> list[dict]:
    """Medians per server; the ratio is to gunicorn sync of the same repetition (the TLS
    rows' to gunicorn sync over TLS)."""
    baseline = {(r.rep, r.app, r.mode): r.rps for r in runs if r.server == BASELINE}
    tls_baseline = {(r.rep, r.app, r.mode): r.rps for r in runs if r.server == TLS_BASELINE}
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.app, r.mode, r.server), []).append(r)
    rows = []
    for (app, mode, name), group in groups.items():
        base = tls_baseline if name.split("@")[0] in TLS_SERVERS else baseline
        ratios = [r.rps / base[r.rep, app, mode] for r in group if base.get((r.rep, app, mode))]
        rss = [r.worker_rss_kib for r in group if r.worker_rss_kib]
        private = [r.worker_private_kib for r in group if r.worker_private_kib]
        masters = [r.master_rss_kib for r in group if r.master_rss_kib]
        rows.append({
            "app": app, "mode": mode, "server": name, "repetitions": len(group),
            "rps": statistics.median(r.rps for r in group),
            "ratio": statistics.median(ratios) if ratios else None,
            "p50_ms": statistics.median(r.p50_ms for r in group),
            "p99_ms": statistics.median(r.p99_ms for r in group),
            "errors": sum(r.errors for r in group),
            "cpu_us_per_request": statistics.median(r.cpu_us_per_request for r in group),
            "requests_per_cpu_second": statistics.median(
                1e6 / r.cpu_us_per_request for r in group if r.cpu_us_per_request),
            "worker_rss_mib": statistics.median(rss) / 1024 if rss else None,
            "worker_private_mib": statistics.median(private) / 1024 if private else None,
            "master_rss_mib": statistics.median(masters) / 1024 if masters else None,
        })
    return rows


# The per-CPU comparisons the targets name (issue 19).
CPU_PAIRS = (("polycorn-event", "granian"), ("polycorn-event", "bjoern"),
             ("polycorn-thread", "gunicorn-sync"), ("polycorn-event", "polycorn-event-noext"))


def per_cpu_ratios(runs: list[Run], app: str, mode: str,
                   ) -> list[tuple[str, str, float, float, float]]:
    """(a, b, median, lowest, highest) of requests per CPU-second of a over b, taken per
    repetition, for each pair with both in a repetition: the spread says how far one
    run's median can be trusted (on a shared 2-core host, ratios of 0.69-0.89 in one run)."""
    cpu = {(r.rep, r.server): r.cpu_us_per_request for r in runs
           if r.app == app and r.mode == mode and r.cpu_us_per_request}
    out = []
    for a, b in CPU_PAIRS:
        values = [cpu[rep, b] / cpu[rep, a] for rep, name in cpu
                  if name == a and (rep, b) in cpu]
        if values:
            out.append((a, b, statistics.median(values), min(values), max(values)))
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict], args: argparse.Namespace, skipped: dict[str, str],
             runs: list[Run] = ()) -> str:
    out = [f"Conditions: {_conditions(args)}", ""]
    for app in args.apps:
        for mode in args.modes:
            table = sorted((r for r in rows if r["app"] == app and r["mode"] == mode),
                           key=lambda r: -r["rps"])
            if not table:
                continue
            out += [f"### {app}, {mode}", "",
                    "| server | req/s | x gunicorn sync (TLS rows: its TLS) | req/CPU-s | p50 ms "
                    "| p99 ms | errors "
                    "| CPU us/req | worker RSS MiB | worker private MiB | master RSS MiB |",
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in table:
                out.append(
                    f"| {r['server']} | {r['rps']:,.0f} | {_fmt(r['ratio'], '.2f')} "
                    f"| {r['requests_per_cpu_second']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
                    f"| {r['cpu_us_per_request']:.1f} | {_fmt(r['worker_rss_mib'], '.1f')} "
                    f"| {_fmt(r['worker_private_mib'], '.1f')} "
                    f"| {_fmt(r['master_rss_mib'], '.1f')} |")
            out.append("")
            ratios = per_cpu_ratios(runs, app, mode)
            if ratios:
                out += ["Per server CPU-second, median (lowest-highest) of per-repetition "
                        "ratios: " + "; ".join(f"{a} / {b} = {v:.2f} ({lo:.2f}-{hi:.2f})"
                                               for a, b, v, lo, hi in ratios), ""]
    compared = cpu_against(runs)
    if compared:
        out += ["### CPU per request, this tree / the other checkout (below 1: this tree is "
                "cheaper)", "", "| app | mode | against | repetitions | CPU ratio |",
                "|---|---|---|---:|---:|"]
        out += [f"| {c['app']} | {c['mode']} | {c['against']} | {c['repetitions']} "
                f"| {c['cpu_ratio']:.3f} |" for c in compared]
        out.append("")
    for name, why in skipped.items():
        out.append(f"Skipped {name}: {why}.")
    return "\n".join(out)


def _conditions(args: argparse.Namespace) -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{cpu}, {os.cpu_count()} CPUs; server on CPU {args.server_cpu}, wrk on CPU "
            f"{args.client_cpu}; one worker; {args.connections} connections; "
            f"{args.duration:g} s runs after {args.warmup:g} s warm-up; median of {args.repeat} "
            f"interleaved repetitions; Python {platform.python_version()}; "
            f"load average at the end {os.getloadavg()[0]:.2f}")


# -- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk before each run")
    parser.add_argument("--repeat", type=int, default=4, help="interleaved repetitions")
    parser.add_argument("--only", default="", help="comma-separated server names "
                        f"(of {', '.join(SERVERS)}); {BASELINE} is the ratios' base")
    parser.add_argument("--tls", action="store_true",
                        help=f"the TLS rows ({', '.join(TLS_SERVERS)}) instead of the "
                        "default servers (with --only: added to them)")
    parser.add_argument("--apps", default=",".join(("hello", "big", "echo")))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4, help="for the thread/gthread workers")
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--client-cpu", default="0")
    parser.add_argument("--against", metavar="LABEL=CHECKOUT",
                        help="also run the polycorn servers from another checkout, "
                        "interleaved, and compare CPU per request")
    parser.add_argument("--json", metavar="OUT", help="write every run and the summary here")
    args = parser.parse_args(argv)
    args.apps = [a for a in args.apps.split(",") if a]
    args.modes = [m for m in args.modes.split(",") if m]
    args.servers = [s for s in args.only.split(",") if s]
    if args.tls:
        args.servers += [s for s in TLS_SERVERS if s not in args.servers]
    args.servers = args.servers or [s for s in SERVERS if s not in OPT_IN]
    unknown = [s for s in args.servers if s not in SERVERS] + [
        a for a in args.apps if a not in ("hello", "big", "echo")] + [
        m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("bench: needs wrk and taskset on PATH", file=sys.stderr)
        return 2
    skipped = {n: "not installed" for n in args.servers if not SERVERS[n].available()}
    servers = [SERVERS[n] for n in args.servers if n not in skipped]
    # SIGTERM cleans up like Ctrl-C: the finally blocks kill every server by pid.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    runs: list[Run] = []
    workdir = Path(tempfile.mkdtemp(prefix="polycorn-bench-"))
    if args.against:
        servers += against(servers, args.against, workdir)
    post_script = workdir / "post.lua"
    post_script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {POST_BODY_SIZE})\n'
                           'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    try:
        for rep in range(args.repeat):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for app in args.apps:
                for server in order:
                    log = workdir / f"{server.name}.log"
                    try:
                        new = measure(server, app, rep, args, post_script, log)
                    except (RuntimeError, subprocess.CalledProcessError) as exc:
                        skipped[server.name] = f"failed ({exc}); log in {log}"
                        continue
                    runs += new
                    for r in new:
                        print(f"rep {rep + 1}/{args.repeat} {app:5} {r.mode:10} {server.name:20} "
                              f"{r.rps:10,.0f} req/s  p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                              file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("bench: interrupted; reporting what was measured", file=sys.stderr)
    rows = summarize(runs)
    print(markdown(rows, args, skipped, runs))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"conditions": _conditions(args), "runs": [asdict(r) for r in runs],
             "summary": rows, "cpu_against": cpu_against(runs), "skipped": skipped},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
