"""A real `polycorn-ctl dashboard` process, a reader of its event stream, and a headless
Chromium driven over the DevTools protocol (websocket-client); all stopped by pid."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.procs import free_port, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Dashboard:
    def __init__(self, tmp: Path, redis_url: str, cluster: str, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = tmp / f"dashboard-{self.port}.log"
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "polycorn.ha.ctl", "dashboard", "--bind",
                 f"127.0.0.1:{self.port}", "--redis", redis_url, "--cluster", cluster, *extra],
                stdout=err, stderr=err, env={**os.environ, **(env or {})},
                start_new_session=True)
        wait_until(self._answers, 15, interval=0.05, what=f"the dashboard:\n{self.log()}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dashboard exited {self.proc.returncode}:\n{self.log()}")
        try:
            return self.get("/api/state")[0] == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, source: str | None = None
                ) -> tuple[int, dict, bytes]:
        """One request on a new connection; `source`: the loopback address to send from."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                          source_address=(source, 0) if source else None)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, body = self.request("GET", path)
        return status, body

    def state(self) -> dict:
        status, body = self.get("/api/state")
        assert status == 200, body
        return json.loads(body)

    def post(self, verb: str, body: dict, token: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
        h = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        status, _, data = self.request("POST", f"/api/actions/{verb}", json.dumps(body).encode(),
                                       h)
        return status, json.loads(data)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class EventStream:
    """GET /api/stream, parsed into (event, data, id) messages as they come."""

    def __init__(self, port: int, last_event_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.conn.request("GET", "/api/stream", headers=headers)
        self.reply = self.conn.getresponse()
        assert self.reply.status == 200
        assert self.reply.getheader("Content-Type").startswith("text/event-stream")

    def next(self) -> tuple[str, str, str | None]:
        """The next message (comments and retry lines skipped)."""
        kind, data, ident = "message", [], None
        while True:
            line = self.reply.fp.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if not line:
                if data:
                    return kind, "\n".join(data), ident
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                ident = value

    def close(self) -> None:
        self.conn.close()


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, tmp: Path, url: str, width: int = 1280, height: int = 800) -> None:
        import websocket  # websocket-client (the test extra)

        self.profile = tmp / "chromium-profile"
        self.log_path = tmp / "chromium.log"
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                 f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                 "--hide-scrollbars", url],
                stdout=err, stderr=err, start_new_session=True)
        port = wait_until(self._devtools_port, 60, interval=0.1, what="Chromium's DevTools port")
        page = wait_until(lambda: self._page(port), 30, interval=0.1, what="the page target")
        self.ws = websocket.create_connection(page, timeout=30, suppress_origin=True)
        self._ids = 0

    def _devtools_port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"chromium exited:\n{self.log_path.read_text()}")
        found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/",
                          self.log_path.read_text(errors="replace"))
        return int(found[1]) if found else None

    @staticmethod
    def _page(port: int) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/json/list")
            targets = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"),
                    None)

    def call(self, method: str, **params) -> dict:
        self._ids += 1
        self.ws.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._ids:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int = 1280, height: int = 800,
                   mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)
        time.sleep(0.3)  # one layout after the resize
        shot = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def stop(self) -> None:
        try:
            self.ws.close()
        except Exception:  # the browser may be gone already
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its renderer and GPU children too
        self.proc.wait(10)
