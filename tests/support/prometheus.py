"""A real Prometheus server (Debian's `prometheus`) on a free loopback port, scraping the
targets a test gives every second; its HTTP API answers what it scraped."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from support.procs import free_port, kill_all, wait_until

SCRAPE_INTERVAL = 1  # seconds


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        """targets: node name -> its /metrics port; each series carries node="<name>"."""
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        static = [{"targets": [f"127.0.0.1:{port}"], "labels": {"node": node}}
                  for node, port in targets.items()]
        # JSON is YAML: no YAML library needed to write the config.
        config.write_text(json.dumps({
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL}s",
                       "scrape_timeout": f"{SCRAPE_INTERVAL}s",
                       "evaluation_interval": "15s"},
            "scrape_configs": [{"job_name": "polycorn", "static_configs": static}]}))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [prometheus_binary() or "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=self._log, start_new_session=True)
        wait_until(self._ready, 30, 0.1, what="prometheus ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                return True
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        """The instant query's result vector (each: {"metric": labels, "value": [t, v]})."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, promql: str, by: str = "node") -> dict[str, float]:
        """label `by` -> value of each series the query returns."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(promql)}

    def stop(self) -> None:
        kill_all([self.proc.pid])
        self.proc.wait(10)
        self._log.close()
