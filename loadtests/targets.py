"""Which URLs the load goes to: a list given by the user, or the live nodes of a cluster.

A given list is used as is, dead nodes included, so a stopped node costs real
failures. From the registry (`polycorn-ctl status --json`, run as a subprocess so
the Locust process never holds a Redis client) only live nodes are taken, as a
health-checked load balancer would, and the list is re-read every few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

STATUS_TIMEOUT = 5.0  # seconds for one `polycorn-ctl status` (its Redis calls are bounded)


class TargetError(ValueError):
    """No usable URL could be found (one line, shown to the user)."""


def normalize_url(text: str) -> str:
    """`host:port` or a URL -> `http://host:port` (no path: each task adds its own)."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"{text!r} is not an http(s) URL or HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}"


def split_urls(text: str | None) -> list[str]:
    """Comma- or space-separated URLs -> normalized, de-duplicated, in order."""
    seen: list[str] = []
    for item in (text or "").replace(",", " ").split():
        url = normalize_url(item)
        if url not in seen:
            seen.append(url)
    return seen


def urls_from_status(status: dict[str, Any]) -> list[str]:
    """Live nodes of a `polycorn-ctl status --json` answer, sorted by node id."""
    nodes = sorted(status.get("nodes") or [], key=lambda n: str(n.get("node_id")))
    return [normalize_url(n["address"]) for n in nodes if n.get("alive") and n.get("address")]


def read_status(cluster: str, redis_url: str, python: str = sys.executable) -> dict[str, Any]:
    """The registry as `polycorn-ctl status --json` prints it."""
    argv = [python, "-m", "polycorn.ha.ctl", "status", "--json", "--cluster", cluster,
            "--redis", redis_url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=STATUS_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise TargetError(f"polycorn-ctl status did not answer in {STATUS_TIMEOUT:g}s") from None
    # Exit 1 means "no live node" and still prints the JSON.
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise TargetError(f"polycorn-ctl status failed ({done.returncode}): "
                          f"{done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def registry_urls(cluster: str, redis_url: str) -> list[str]:
    return urls_from_status(read_status(cluster, redis_url))
