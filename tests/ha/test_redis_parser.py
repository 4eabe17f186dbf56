"""The ha extra brings hiredis, and our clients parse replies with it: measured with
loadtests/scale.py, the leader's cycle and every follower's cost about a third less CPU
at 200 nodes than with redis-py's pure-Python parser (README, "The cluster at 10, 50 and
200 nodes")."""

from __future__ import annotations

from polycorn.ha.redis_client import make_client
from polycorn.ha.redis_url import parse_redis_url
from polycorn.ha.timing import Timing


def test_clients_parse_replies_with_hiredis(shared_redis):
    client = make_client(parse_redis_url(shared_redis.url), Timing())
    try:
        assert client.ping()
        conn = client.connection_pool.get_connection()
        try:
            parser = type(conn._parser).__name__  # redis-py names no public accessor
        finally:
            client.connection_pool.release(conn)
    finally:
        client.close()
    assert parser == "_HiredisParser", f"{parser}: is hiredis installed (pip install -e .[ha])?"
