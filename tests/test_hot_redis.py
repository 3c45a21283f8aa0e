"""Each thread's own Redis connection for the request path (`personalization.hot_redis`): raw replies,
scripts by hash, and what it does when Redis restarts, forgets its scripts or is down."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache
from django.test import override_settings

from personalization import hot_redis
from personalization.hot_redis import hot_command, hot_pipeline, hot_script, redis_client
from recommenders.serving.cache import CACHE_ERRORS

ECHO = "return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1])}"


@pytest.fixture(autouse=True)
def _own_line():
    hot_redis._line.conn = None
    yield
    if hot_redis._line.conn is not None:
        hot_redis._line.conn.disconnect()
    hot_redis._line.conn = None


def test_a_command_answers_raw_values_the_client_decodes():
    cache.set("hot:a", {"n": 1})
    client = redis_client()
    raw, missing = hot_command(client, "MGET", cache.make_key("hot:a"), cache.make_key("hot:none"))
    assert client.decode(raw) == {"n": 1} and missing is None


def test_each_thread_has_its_own_connection_and_a_new_client_gets_a_new_one():
    client = redis_client()
    hot_command(client, "PING")
    mine = hot_redis._line.conn
    theirs = []
    thread = threading.Thread(target=lambda: (hot_command(client, "PING"), theirs.append(hot_redis._line.conn)))
    thread.start()
    thread.join()
    assert theirs and theirs[0] is not mine
    hot_command(client, "PING")
    assert hot_redis._line.conn is mine


def test_a_connection_redis_dropped_is_made_again_and_the_command_answered():
    client = redis_client()
    cache.set("hot:b", 7)
    hot_command(client, "PING")
    my_id = hot_command(client, "CLIENT", "ID")
    client.get_client(write=True).execute_command("CLIENT", "KILL", "ID", my_id)  # what a Redis restart does
    assert client.decode(hot_command(client, "GET", cache.make_key("hot:b"))) == 7
    assert hot_command(client, "CLIENT", "ID") != my_id


def test_a_script_redis_forgot_is_sent_whole_once_more():
    client = redis_client()
    cache.set("hot:c", "v")
    key = cache.make_key("hot:c")
    assert hot_script(client, ECHO, keys=[key], args=["x"])[:2] == [key.encode(), b"x"]
    client.get_client(write=True).script_flush()
    assert hot_script(client, ECHO, keys=[key], args=["y"])[:2] == [key.encode(), b"y"]
    assert hot_script(client, ECHO, keys=[key], args=["z"])[1] == b"z"  # loaded again by the EVAL


def test_an_error_reply_keeps_the_connection_and_redis_down_raises_a_cache_error():
    client = redis_client()
    with pytest.raises(CACHE_ERRORS):
        hot_command(client, "INCR", "not", "a", "command")
    conn = hot_redis._line.conn
    assert hot_command(client, "PING") in (b"PONG", True, "PONG") and hot_redis._line.conn is conn
    down = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 0.5},
        }
    }
    with override_settings(CACHES=down), pytest.raises(CACHE_ERRORS):
        hot_command(redis_client(), "PING")


def test_a_pipeline_answers_each_command_and_an_error_in_it_leaves_a_clean_connection():
    client = redis_client()
    keys = [cache.make_key(f"hot:p{i}") for i in range(3)]
    replies = hot_pipeline(client, [("SET", key, client.encode(i), "EX", 60) for i, key in enumerate(keys)])
    assert len(replies) == 3 and [cache.get(f"hot:p{i}") for i in range(3)] == [0, 1, 2]
    assert hot_pipeline(client, []) == []
    with pytest.raises(CACHE_ERRORS):
        hot_pipeline(client, [("INCR", keys[0], "x"), ("GET", keys[1])])  # an error, then a reply unread
    assert client.decode(hot_command(client, "GET", keys[2])) == 2  # not the GET's stale reply


@pytest.mark.django_db
def test_a_visitor_stamp_is_written_with_the_caches_encoding():
    from recommenders.serving.visitors import visitor_stamp, visitor_stamp_key, visitors_changed

    before = time.time()
    visitors_changed([41, 42, 42])
    assert before <= visitor_stamp(41) <= time.time() and visitor_stamp(42) == visitor_stamp(41)
    redis = cache.client.get_client()
    assert 0 < redis.ttl(cache.make_key(visitor_stamp_key(41))) <= 24 * 3600 + 60
