"""A worker waiting on a client whose reset was lost is freed by TCP keepalive.

chaos --random 4 (lossy-node behind HAProxy): HAProxy reset connections to a node while
20% of the node's packets were dropped; some resets were lost, and each sync worker sat in
recv() for a request head that would never come, until --timeout (30 s). Both workers of
the node were held so, its health checks failed, and HAProxy kept it down 28 s after the
loss had healed. The listeners now turn on TCP keepalive (accepted sockets inherit it):
after a few idle seconds the kernel probes the peer, whose host answers the probe with a
reset, and the worker's recv fails at once.

The test runs in its own network namespace, where an nftables rule may drop resets without
touching the rest of the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from support.procs import ROOT, descendants, kill_all, wait_until

APPS = ROOT / "tests" / "apps"

# In the server's namespace: a connection the worker takes and waits on, closed by a
# reset that is dropped; then the time until a new request is answered.
_CLIENT = r"""
import json, socket, struct, subprocess, time
def nft(script):
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", 8000), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
time.sleep(0.5)  # the probe connection above: the worker has seen it close
nft("table inet lostreset {\n chain out {\n type filter hook output priority 0;\n"
    " tcp flags & rst == rst drop\n }\n}\n")
held = socket.create_connection(("127.0.0.1", 8000))
time.sleep(0.5)  # the worker accepts it and waits for a request head
held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
held.close()  # the reset is dropped: the worker's socket stays established
time.sleep(0.2)
nft("delete table inet lostreset")
started = time.monotonic()
with socket.create_connection(("127.0.0.1", 8000), timeout=60) as c:
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = c.recv(100)
print(json.dumps({"waited": time.monotonic() - started, "status": answer[:12].decode()}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                    reason="needs root and nft for a namespace whose rule drops resets")
@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_a_worker_is_freed_from_a_peer_whose_reset_was_lost(worker, tmp_path):
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            ["unshare", "--net", "sh", "-c",
             f"ip link set lo up && exec {sys.executable} -m polycorn.server.main -k {worker} "
             f"-w 1 --threads 1 --timeout 30 -b 127.0.0.1:8000 testapp:application"],
            cwd=APPS, stdout=log, stderr=log, start_new_session=True)
    try:
        ours = os.readlink("/proc/self/ns/net")
        wait_until(lambda: os.readlink(f"/proc/{server.pid}/ns/net") != ours, 10,
                   what="the server's own network namespace")
        client = subprocess.run(
            ["nsenter", "-t", str(server.pid), "-n", sys.executable, "-c", _CLIENT],
            capture_output=True, text=True, timeout=90)
        assert client.returncode == 0, client.stderr[-2000:]
        result = json.loads(client.stdout)
        assert result["status"] == "HTTP/1.1 200", result
        # Keepalive: 5 s idle, then probes; the reset of the first probe frees the worker.
        # Without it the worker waits for the head until --timeout (30 s).
        print(f"\nworker {worker} freed after {result['waited']:.1f}s")
        assert result["waited"] < 15, result
    finally:
        kill_all([server.pid, *descendants(server.pid)], signal.SIGKILL)
        server.wait(5)
