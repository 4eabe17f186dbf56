"""The cluster agent's lines reach the node's error log (the agent is a sidecar of a
real polycorn master): Redis unreachable is said within about two seconds, once, and
a node that wins the election says so."""

from __future__ import annotations

import re
import socket
import time

from support.procs import free_port, wait_until


def test_a_node_pointed_at_a_dead_redis_says_so_within_two_seconds(polycorn, port, tmp_path):
    # A port bound and never listened on refuses every connection, and stays ours for
    # the test: a port merely released can be taken by another xdist worker's server,
    # and a Redis answering there means no outage to report (the line never came, once).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        says_dead_redis(polycorn, port, tmp_path, held.getsockname()[1])


def says_dead_redis(polycorn, port, tmp_path, dead: int) -> None:
    errors = tmp_path / "error.log"
    started = time.monotonic()
    node = polycorn("-b", f"127.0.0.1:{port}", "--redis", f"redis://127.0.0.1:{dead}",
                    "--node-id", "lonely", "--error-logfile", str(errors), "hello:application",
                    wait_port=port)
    try:
        line = wait_until(lambda: re.search(r"\[(\d+)\] \[WARNING\] cluster: node lonely: "
                                            r"Redis unreachable: .*" + str(dead),
                                            errors.read_text()),
                          5, interval=0.05, what="the Redis-unreachable line")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; error log:\n{errors.read_text()}") from None
    said_in = time.monotonic() - started
    print(f"\nFIGURE dead Redis said in the error log after {said_in:.2f}s")
    assert said_in < 2.5  # HELLO_WAIT (1 s) + one refused connection, with margin
    assert int(line.group(1)) != node.pid  # written by the agent process itself
    time.sleep(3)  # the retries go on at debug: one warning per outage, not one per retry
    assert errors.read_text().count("Redis unreachable") == 1


def test_a_node_that_becomes_leader_logs_it(redis_farm, polycorn, cluster_name, tmp_path):
    redis = redis_farm.server()
    port = free_port()
    errors = tmp_path / "error.log"
    polycorn("-b", f"127.0.0.1:{port}", "--redis", redis.url, "--cluster", cluster_name,
             "--node-id", "solo", "--error-logfile", str(errors), "hello:application",
             wait_port=port)
    wait_until(lambda: re.search(r"\[INFO\] cluster: elected leader at epoch \d+",
                                 errors.read_text()), 10, what="the elected-leader line")
    assert "cluster: registered as solo incarnation" in errors.read_text()
