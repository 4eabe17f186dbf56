"""A real master and a sidecar from a later release: a command of wire version 99 is
refused with one log line and the master keeps serving; the version 1 command after it
runs and is answered in version 1.

The sidecar comes from a plug-in registered the real way (an entry point in a
dist-info folder on PYTHONPATH); it prints what the master sends it to the log.
"""

from __future__ import annotations

import json

from support.http import get
from support.procs import wait_until

PROBE = '''\
import json, sys
from polycorn.server.sidecar import Sidecar

def run(channel):
    channel.recv(10)  # the master's hello
    channel.send({"type": "command", "id": "future", "cmd": "ttin", "n": 1, "version": 99})
    channel.send({"type": "command", "id": "now", "cmd": "ttin", "n": 1})
    while True:
        msg = channel.recv(30)
        if msg is not None:
            sys.stderr.write("probe got " + json.dumps(msg, sort_keys=True) + "\\n")
            sys.stderr.flush()

class Probe:
    name = "probe"
    settings = ()
    def sidecars(self, cfg):
        return [Sidecar("probe", run)]

plugin = Probe()
'''


def test_a_sidecar_command_of_an_unknown_version_is_refused_and_the_master_serves(
        tmp_path, polycorn, port):
    plug = tmp_path / "plug"
    (plug / "probe-0.0.dist-info").mkdir(parents=True)
    (plug / "probe-0.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: probe\nVersion: 0.0\n")
    (plug / "probe-0.0.dist-info" / "entry_points.txt").write_text(
        "[polycorn.plugins]\nprobe = probe_plugin:plugin\n")
    (plug / "probe_plugin.py").write_text(PROBE)
    server = polycorn("-b", f"127.0.0.1:{port}", "-w", "2", "hello:application",
                      wait_port=port, env={"PYTHONPATH": str(plug)})
    answered = '"id": "now", "ok": true, "reason": "", "type": "result"}'
    wait_until(lambda: answered in server.log(), 10, what="the version 1 command's result")
    log = server.log()
    refused = [line for line in log.splitlines() if "refused" in line]
    assert len(refused) == 1, log
    assert (f"(pid {server.pid}): refused a 'command' message of wire version 99: wire "
            "version 99 is not one this release reads (1, 2); dropped it (sent by sidecar "
            "probe, pid ") in refused[0]
    assert refused[0].endswith("the master carries on")
    results = [json.loads(line.split("probe got ", 1)[1]) for line in log.splitlines()
               if "probe got " in line and '"result"' in line]
    # Only the readable command ran, answered in the version it came in (1: no "version").
    assert results == [{"type": "result", "id": "now", "ok": True, "reason": ""}]
    wait_until(lambda: len(server.workers()) == 4, 10, what="3 workers and the sidecar")
    assert get(port, "/")[0] == 200
