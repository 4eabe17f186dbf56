"""The health gate of one host: what the host sees, and the verdict on it.

`python -m polycorn.deploy.gate` runs *on the host*, with the release's own
interpreter, and prints one JSON object: this host's nodes as the cluster
registry shows them (Redis is reached from where the service runs, not from the
operator's machine), the status of an HTTP GET of the health path on the
service's own address, and whether its masters' pid files name live processes. `judge()` runs on the operator's side and says why a host
is not ready yet, or None when it is.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

from polycorn.deploy.hostinfo import master_pid

PROBE_TIMEOUT = 3.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _connection(bind: str) -> http.client.HTTPConnection | None:
    """A client connection to the service's first listener (None for fd:// binds)."""
    if bind.startswith("unix:"):
        return _UnixHTTPConnection(bind[len("unix:"):], PROBE_TIMEOUT)
    if bind.startswith("fd://"):
        return None
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    host = WILDCARDS.get(host, host)
    return http.client.HTTPConnection(host, int(port), timeout=PROBE_TIMEOUT)


def probe_http(bind: str, path: str) -> dict[str, Any]:
    conn = _connection(bind)
    if conn is None:
        return {"status": None, "error": f"cannot probe {bind} (inherited socket)"}
    try:
        conn.request("GET", path, headers={"User-Agent": "polycorn-deploy-gate"})
        resp = conn.getresponse()
        resp.read()
        return {"status": resp.status, "error": None}
    except (OSError, http.client.HTTPException) as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def registry_view(redis_url: str, cluster: str, node_ttl: float) -> dict[str, Any]:
    """This host's nodes in the registry (redis-py is imported only here)."""
    from polycorn.ha.redis_client import make_client
    from polycorn.ha.redis_store import RedisStore
    from polycorn.ha.redis_url import RedisUrlError, parse_redis_url
    from polycorn.ha.store import StoreUnavailable
    from polycorn.ha.timing import Timing

    try:
        store = RedisStore(make_client(parse_redis_url(redis_url), Timing(),
                                       client_name="polycorn-deploy-gate"), cluster)
    except RedisUrlError as exc:
        return {"error": str(exc), "nodes": [], "leader": None}
    try:
        snap, records = store.nodes(int(node_ttl * 1000))
    except StoreUnavailable as exc:
        return {"error": f"Redis unavailable: {exc}", "nodes": [], "leader": None}
    finally:
        store.close()
    me = socket.gethostname()
    return {"error": None, "leader": snap.lease.holder if snap.lease else None,
            "nodes": [r.as_json(snap.now_ms) for r in records if r.info.host == me]}


def _log_tail(path: str | None, lines: int = 3) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def observe(bind: str, health_path: str, redis_url: str | None, cluster: str | None,
            node_ttl: float, pidfiles: Sequence[str] = (), log: str | None = None
            ) -> dict[str, Any]:
    masters = {path: master_pid(path) for path in pidfiles}
    seen: dict[str, Any] = {"hostname": socket.gethostname(), "masters": masters,
                            "http": probe_http(bind, health_path)}
    if not all(masters.values()):
        seen["log_tail"] = _log_tail(log)  # why it is not running, as the master said it
    if redis_url:
        seen["registry"] = registry_view(redis_url, cluster or "default", node_ttl)
    return seen


def service_down(seen: dict[str, Any]) -> str | None:
    """Why the service is not running at all (a master's pid file names no live
    process), with the end of its log; None while every master runs."""
    masters = seen.get("masters") or {}
    down = [path for path, pid in masters.items() if not pid]
    if not down:
        return None
    last = " | ".join(seen.get("log_tail") or []) or "no log lines"
    return f"no running master for {', '.join(down)} (log: {last})"


def judge(seen: dict[str, Any], release: str) -> str | None:
    """None when the host is ready on `release`; otherwise why not, in a few words.

    Every master's pid file must name a live process. The registry holds one node per
    host however many masters it runs (the cluster agent runs beside the master that
    owns the hand-off path), so each live node of the host must be ready on `release`.
    """
    http_seen = seen.get("http") or {}
    status = http_seen.get("status")
    if status is None or not 200 <= status < 300:
        return f"health probe: {http_seen.get('error') or f'status {status}'}"
    down = sorted(path for path, pid in (seen.get("masters") or {}).items() if not pid)
    if down:
        return f"no running master for {', '.join(down)}"
    registry = seen.get("registry")
    if registry is None:
        return None  # a stand-alone service: the upgrade's own health gate and the probe
    if registry.get("error"):
        return f"registry: {registry['error']}"
    live = [n for n in registry.get("nodes", []) if n.get("alive")]
    if not live:
        return f"registry: no live node of host {seen.get('hostname')!r}"
    for node in live:
        if node.get("release") != release or node.get("state") != "ready":
            return (f"registry: node {node.get('node_id')} is {node.get('state')} on release "
                    f"{node.get('release')!r}, want ready on {release!r}")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polycorn.deploy.gate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--bind", required=True, help="the service's first bind address")
    parser.add_argument("--health-path", default="/", help="path to GET (default: /)")
    parser.add_argument("--redis", default=None, help="the cluster's Redis URL")
    parser.add_argument("--cluster", default=None, help="the cluster name")
    parser.add_argument("--node-ttl", type=float, default=3.0, help="seconds (default: 3)")
    parser.add_argument("--pidfile", action="append", default=[],
                        help="a master's pid file (repeatable)")
    parser.add_argument("--log", default=None, help="the service's error log")
    args = parser.parse_args(argv)
    print(json.dumps(observe(args.bind, args.health_path, args.redis, args.cluster,
                             args.node_ttl, args.pidfile, args.log)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
