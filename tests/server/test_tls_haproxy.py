"""Behind a real HAProxy that re-encrypts: `send-proxy` / `send-proxy-v2` then TLS to a
polycorn running --proxy-protocol with --certfile, on every worker class. HAProxy verifies
the server's certificate against the test CA; its health checks go the same way
(PROXY header, then TLS). The app must see the client (from 127.0.0.3) and https.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from support.procs import ROOT, free_port, kill_all, port_open, wait_until
from test_proxy_protocol_haproxy import CLIENT, show_stat, through

APPS = ROOT / "tests" / "apps"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy is not installed")

CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    # Without it a check's timeout is `inter` (200 ms): under load the worker's boot
    # outlasted three of them, HAProxy marked s1 down and answered 503 (seen once).
    timeout check 2s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend v1
frontend v2
    bind 127.0.0.1:{v2}
    default_backend v2
backend v1
    option httpchk GET /health-v1
    server s1 127.0.0.1:{server} send-proxy ssl verify required ca-file {ca} sni str(localhost) check check-send-proxy inter 200ms
backend v2
    option httpchk GET /health-v2
    server s1 127.0.0.1:{server} send-proxy-v2 ssl verify required ca-file {ca} sni str(localhost) check check-send-proxy inter 200ms
"""  # noqa: E501 - HAProxy's server lines


@pytest.mark.parametrize("worker", ["sync", "thread", "event"])
def test_haproxy_sends_the_header_then_tls(polycorn, pki, tmp_path, worker):
    server_port, v1, v2 = free_port(), free_port(), free_port()
    threads = ("--threads", "4") if worker == "thread" else ()
    polycorn("-k", worker, *threads, "-w", "1", "-b", f"127.0.0.1:{server_port}",
             "--certfile", str(pki.cert), "--keyfile", str(pki.key),
             "--proxy-protocol", "auto", "proxyapp:application", wait_port=server_port,
             cwd=APPS)
    stats = tmp_path / "admin.sock"
    if len(str(stats)) > 100:
        pytest.skip("the temporary folder's path is too long for a Unix socket")
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(socket=stats, v1=v1, v2=v2, server=server_port,
                                    ca=pki.ca))
    with open(tmp_path / "haproxy.log", "wb") as log:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log,
                                start_new_session=True)
    try:
        wait_until(lambda: port_open(v1) and port_open(v2) and stats.exists(), 10,
                   what="haproxy")

        def both_up() -> bool:
            rows = {row["pxname"]: row for row in show_stat(str(stats))
                    if row["svname"] == "s1"}
            return all(rows.get(b, {}).get("status") == "UP"
                       and rows[b].get("check_status") == "L7OK" for b in ("v1", "v2"))
        # The checks first: a request sent before them may find s1 not yet judged.
        wait_until(both_up, 15, what="both backends up with L7OK checks over PROXY+TLS")
        for version, port in (("v1", v1), ("v2", v2)):
            env, local = through(port, f"/tls-{version}")
            assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (CLIENT, str(local[1]))
            assert env["wsgi.url_scheme"] == "https"
    finally:
        kill_all([proc.pid])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
