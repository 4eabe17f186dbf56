"""Build a redis-py client from a RedisTarget with bounded timeouts and retry.

redis-py's defaults can block one call for about a minute against a paused server,
so every client gets explicit connect and read timeouts and one bounded retry
(Timing). Sentinel targets get a master_for() client that re-discovers the master
after a failover. Import this only in the agent or polycorn-ctl, never in the
master before it forks.
"""

from __future__ import annotations

import redis
from polycorn.ha.redis_url import RedisKind, RedisTarget
from polycorn.ha.timing import Timing
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

# What is worth retrying: the connection, not an answer (a script error is final).
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def bounded_retry(timing: Timing) -> Retry:
    return Retry(ExponentialBackoff(cap=0.1, base=0.02), timing.retries, RETRYABLE)


def make_client(target: RedisTarget, timing: Timing, *, client_name: str = "polycorn",
                read_timeout: float | None = None) -> redis.Redis:
    """A client for the data server (the Sentinel master for sentinel:// targets)."""
    common = dict(
        socket_timeout=read_timeout or timing.read_timeout,
        socket_connect_timeout=timing.connect_timeout,
        retry=bounded_retry(timing),
        decode_responses=True,
        client_name=client_name,
        health_check_interval=0,
    )
    auth = dict(username=target.username, password=target.password)
    if target.kind is RedisKind.SENTINEL:
        sentinel = Sentinel(
            list(target.sentinels),
            sentinel_kwargs=dict(socket_timeout=timing.read_timeout,
                                 socket_connect_timeout=timing.connect_timeout,
                                 retry=bounded_retry(timing)),
            **common, db=target.db, **auth)
        return sentinel.master_for(target.service)
    if target.kind is RedisKind.UNIX:
        return redis.Redis(unix_socket_path=target.path, db=target.db, **common, **auth)
    return redis.Redis(host=target.host, port=target.port, db=target.db,
                       ssl=target.kind is RedisKind.TLS, **common, **auth)
