"""The one Redis launcher (polycorn.ha.redis_launcher) with real redis-server processes:
start and ready, a private directory, restart with and without the append-only file,
a Sentinel failover, and stops by pid that leave nothing behind in /proc."""

from __future__ import annotations

import os
import signal
import time

import pytest
from polycorn.ha.process_tracker import ProcessTracker, alive
from polycorn.ha.redis_launcher import RedisLaunchError, RedisServer, SentinelGroup
from support.procs import port_open


def gone(pid: int) -> bool:
    """Not in /proc at all: dead and reaped (a zombie would still be listed)."""
    return not os.path.exists(f"/proc/{pid}")


@pytest.fixture
def tracker():
    t = ProcessTracker()
    yield t
    t.kill_all()


def test_a_server_answers_once_started_and_stops_cleanly_by_pid(tracker, tmp_path):
    started = time.monotonic()
    server = RedisServer(tracker, tmp_path).start()
    took = time.monotonic() - started
    assert server.ping() and took < 5.0
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.dir == tmp_path / f"redis-{server.port}" and (server.dir / "server.log").exists()
    with server.client() as c:
        assert c.config_get("bind")["bind"] == "127.0.0.1"
        assert c.config_get("appendonly")["appendonly"] == "no"
    pid = server.pid
    assert pid in tracker.live()
    server.stop()
    assert gone(pid) and not port_open(server.port)
    # SIGTERM, not SIGKILL: redis-server shut down on its own and said so.
    assert "ready to exit" in (server.dir / "server.log").read_text()


def test_a_server_that_cannot_start_is_reported_with_its_log_at_once(tracker, tmp_path):
    first = RedisServer(tracker, tmp_path).start()
    second = RedisServer(tracker, tmp_path / "other", port=first.port)
    started = time.monotonic()
    with pytest.raises(RedisLaunchError, match=f"port {first.port} did not start; see .*server.log"):
        second.start()
    assert time.monotonic() - started < 5.0  # its exit is seen, not waited out
    assert first.ping()


def test_stop_ends_a_paused_server_cleanly(tracker, tmp_path):
    server = RedisServer(tracker, tmp_path).start()
    server.signal(signal.SIGSTOP)  # a stopped process does not act on SIGTERM until SIGCONT
    pid = server.pid
    # stop() sends SIGCONT first: a paused server still shuts down cleanly and fast.
    started = time.monotonic()
    server.stop(timeout=3)
    assert gone(pid) and time.monotonic() - started < 3.0


def test_crash_and_restart_keeps_data_only_with_the_append_only_file(tracker, tmp_path):
    kept = RedisServer(tracker, tmp_path, append_only=True).start()
    lost = RedisServer(tracker, tmp_path).start()
    for server in (kept, lost):
        with server.client() as c:
            c.set("epoch", "7")
            if server is kept:
                c.execute_command("BGREWRITEAOF")
    time.sleep(1.5)  # appendfsync everysec
    for server in (kept, lost):
        pid = server.pid
        server.crash()
        assert gone(pid) and not port_open(server.port)
        server.start()  # the same port again
        assert server.pid != pid
    with kept.client() as c:
        assert c.get("epoch") == "7"
    with lost.client() as c:
        assert c.get("epoch") is None


def test_sentinel_group_fails_over_and_leaves_nothing_behind(tmp_path):
    tracker = ProcessTracker()
    try:
        group = SentinelGroup(tracker, tmp_path, "launcher")
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
        assert group.url == f"sentinel://{hosts}/launcher/0"
        assert group.master_port() == group.master.port
        assert group.current_master() is group.master
        took = group.failover()
        assert took < 15.0
        assert group.current_master() is group.replica
        with group.replica.client() as c:  # the promoted replica takes writes
            assert c.set("after-failover", "1")
        pids = [s.pid for s in (*group.servers, *group.sentinels)]
        assert len(set(pids)) == 5 and all(alive(p) for p in pids)
    finally:
        tracker.kill_all()
    assert [p for p in pids if not gone(p)] == []
    assert not tracker.live()


def test_a_promoted_replica_started_again_is_still_the_primary(tracker, tmp_path):
    # chaos --random 8: the primary Sentinel had promoted was killed and started again from
    # its first command line, a replica of the server that was now its own replica. Two
    # replicas and no primary: every agent was without Redis to the end of the run.
    group = SentinelGroup(tracker, tmp_path, "restart")
    group.failover()
    promoted = group.current_master()
    assert promoted is group.replica
    # Sentinel promotes with SLAVEOF NO ONE and CONFIG REWRITE in one transaction: once the
    # server says it is a primary, its file says so too.
    with promoted.client() as c:
        assert c.info("replication")["role"] == "master"
    promoted.crash()
    promoted.start()
    with promoted.client() as c:
        assert c.info("replication")["role"] == "master"
        assert c.set("after-restart", "1")  # it takes writes again
