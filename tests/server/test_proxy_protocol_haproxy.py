"""Behind a real HAProxy: `send-proxy` (v1) and `send-proxy-v2` to one polycorn running
`--proxy-protocol` (auto), on every worker class. The client connects to HAProxy from
127.0.0.3, HAProxy to polycorn from 127.0.0.1: the app must see the client. HAProxy's own
health checks (`check-send-proxy`; v2 sends the LOCAL command) must find the server up,
and a HUP under load through it fails no request.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.load import Load
from support.procs import ROOT, Polycorn, free_port, kill_all, port_open, wait_until

APPS = ROOT / "tests" / "apps"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CLIENT = "127.0.0.3"

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy is not installed")

CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend v1
frontend v2
    bind 127.0.0.1:{v2}
    default_backend v2
frontend v2crc
    bind 127.0.0.1:{v2crc}
    default_backend v2crc
backend v1
    option httpchk GET /health-v1
    server s1 127.0.0.1:{server} send-proxy check check-send-proxy inter 200ms
backend v2
    option httpchk GET /health-v2
    server s1 127.0.0.1:{server} send-proxy-v2 check check-send-proxy inter 200ms
backend v2crc
    server s1 127.0.0.1:{server} send-proxy-v2 proxy-v2-options crc32c,unique-id
"""


def show_stat(sock_path: str) -> list[dict[str, str]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(sock_path)
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    text = data.decode().lstrip("# ")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module", params=("sync", "thread", "event"))
def front(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"haproxy-{request.param}")
    server_port, v1, v2, v2crc = free_port(), free_port(), free_port(), free_port()
    threads = ("--threads", "4") if request.param == "thread" else ()
    poly = Polycorn(["-k", request.param, *threads, "-w", "1", "-b", f"127.0.0.1:{server_port}",
                     "--access-logfile", str(tmp / "access.log"),
                     "--access-logformat", "%(h)s %({PROXY_PROTOCOL}e)s %(r)s %(s)s",
                     "proxyapp:application", "--proxy-protocol"],
                    cwd=APPS, log_path=tmp / "server.log")
    short = Path(tempfile.mkdtemp(prefix="pph-"))  # a Unix socket path must be short
    stats = str(short / "admin.sock")
    config = tmp / "haproxy.cfg"
    config.write_text(CONFIG.format(socket=stats, v1=v1, v2=v2, v2crc=v2crc, server=server_port))
    log = open(tmp / "haproxy.log", "wb")  # noqa: SIM115 - the child holds it
    proc = None
    try:
        poly.wait_port(server_port)
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log,
                                start_new_session=True)
        wait_until(lambda: port_open(v1) and port_open(v2) and port_open(v2crc)
                   and Path(stats).exists(), 10,
                   what="haproxy")
        yield {"v1": v1, "v2": v2, "v2crc": v2crc, "stats": stats, "access": tmp / "access.log", "poly": poly,
               "haproxy_log": tmp / "haproxy.log"}
    finally:
        if proc is not None:
            kill_all([proc.pid])
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        log.close()
        poly.stop()
        shutil.rmtree(short, ignore_errors=True)


def through(port: int, path: str) -> tuple[dict, tuple[str, int]]:
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((CLIENT, 0))
        sock.connect(("127.0.0.1", port))
        local = sock.getsockname()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply
    return json.loads(body), local


@pytest.mark.parametrize("version", ["v1", "v2", "v2crc"])  # v2crc: HAProxy's CRC32c TLV
def test_the_app_sees_the_client_behind_haproxy(front, version) -> None:
    env, local = through(front[version], f"/through-{version}")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (CLIENT, str(local[1]))
    assert env["PROXY_PROTOCOL"] == "TCP4"
    assert env["PROXY_ADDR"] == "127.0.0.1"  # the address the client connected to (HAProxy's)
    wait_until(lambda: f"/through-{version} " in front["access"].read_text(), 10,
               what="the access log line")
    line = next(ln for ln in front["access"].read_text().splitlines()
                if f"/through-{version} " in ln)
    assert line.startswith(f"{CLIENT} TCP4 GET /through-{version} "), line


def test_haproxy_health_checks_are_healthy_and_v2_checks_are_local(front) -> None:
    def both_up() -> bool:
        rows = {row["pxname"]: row for row in show_stat(front["stats"]) if row["svname"] == "s1"}
        return all(rows.get(b, {}).get("status") == "UP"
                   and rows[b].get("check_status") == "L7OK" for b in ("v1", "v2"))
    wait_until(both_up, 15, what="both HAProxy backends up with L7OK checks")
    wait_until(lambda: "/health-v2 " in front["access"].read_text(), 10, what="a v2 check")
    lines = front["access"].read_text().splitlines()
    v2_checks = [ln for ln in lines if "/health-v2 " in ln]
    # LOCAL: the real endpoints (HAProxy's own address), and the check was answered 200.
    assert all(ln.startswith("127.0.0.1 LOCAL GET /health-v2 ") and ln.endswith(" 200")
               for ln in v2_checks), v2_checks
    v1_checks = [ln for ln in lines if "/health-v1 " in ln]
    assert v1_checks and all(ln.endswith(" 200") for ln in v1_checks), v1_checks
    assert "PROXY protocol refused" not in front["poly"].log()


def test_hup_under_load_through_haproxy_fails_no_request(front) -> None:
    # Polycorn's reload keeps its promise with the PROXY protocol on: the load goes through
    # send-proxy-v2 (fresh and keep-alive connections), and HUP replaces every worker.
    poly = front["poly"]
    before = set(wait_until(lambda: poly.workers(), 10, what="the worker"))
    with Load(front["v2"], "/hup", threads=4) as load:
        load.wait_requests(50)
        poly.signal(signal.SIGHUP)
        wait_until(lambda: (w := set(poly.workers())) and not (w & before), 20,
                   what="new workers after HUP")
        load.wait_requests(50)
    result = load.result
    assert result.ok >= 100 and result.failed == 0, (result.ok, result.failed, dict(result.errors))
    assert "reload complete" in poly.log()
