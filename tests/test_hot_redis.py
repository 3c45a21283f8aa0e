"""Each thread's own Redis connection for the request path (`personalization.hot_redis`): raw replies,
scripts by hash, and what it does when Redis restarts, forgets its scripts or is down."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.core.cache import cache
from django.test import override_settings

from personalization import hot_redis
from personalization.hot_redis import hot_command, hot_pipeline, hot_script, redis_client
from recommenders.serving.cache import CACHE_ERRORS
from tests.recommenders_helpers import near_seq, near_told

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


def test_the_threads_cache_backend_is_the_one_the_cache_stands_for_and_follows_a_settings_change():
    import threading

    from django.core.cache import caches

    assert hot_redis.cache_backend() is caches["default"] and hot_redis.cache_backend().make_key("k") == cache.make_key(
        "k"
    )
    others = []
    thread = threading.Thread(target=lambda: others.append((hot_redis.cache_backend(), caches["default"])))
    thread.start()
    thread.join()
    assert others[0][0] is others[0][1] is not hot_redis.cache_backend()  # each thread its own, as Django's
    local = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": "other"}}
    with override_settings(CACHES=local):
        assert hot_redis.cache_backend() is caches["default"] and hot_redis.cache_backend().key_prefix == "other"
        assert redis_client() is None
    assert hot_redis.cache_backend() is caches["default"] and redis_client() is not None


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


# ---- the near cache --------------------------------------------------------------------------------

PREFIXES = ("pz-near-a:", "pz-near-b:")


@pytest.fixture
def near(settings, monkeypatch):
    """The near cache with its own prefixes (keys no other test writes), the hot connection's
    MGETs counted: a read answered from memory sends none."""
    settings.RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS = 30.0
    hot_redis.near_forget()
    reads = []
    real = hot_redis.hot_command
    monkeypatch.setattr(hot_redis, "hot_command", lambda client, *args: (reads.append(args[0]), real(client, *args))[1])
    client = redis_client()
    other = client.get_client(write=True)  # another connection: another process, as far as Redis knows

    def get(*keys):
        return hot_redis.near_mget(client, list(keys), prefixes=PREFIXES)

    yield get, other, reads
    other.delete(*[f"{p}{k}" for p in PREFIXES for k in "xyz"])


def _state():
    return next(s for (_, pid, prefixes), s in hot_redis._near_state.items() if prefixes == PREFIXES)


def written(write, *args, **kwargs):
    """A write by another connection, once its invalidation has reached this process."""
    since = near_seq(PREFIXES)
    answer = write(*args, **kwargs)
    near_told(PREFIXES, since)
    return answer


def test_a_value_read_once_is_answered_from_memory_until_another_client_changes_it(near):
    get, other, reads = near
    other.set("pz-near-a:x", b"1")
    assert get("pz-near-a:x", "pz-near-b:x") == [b"1", None]
    assert get("pz-near-a:x", "pz-near-b:x") == [b"1", None]
    assert reads == ["MGET"]  # the second from memory
    written(other.set, "pz-near-a:x", b"2")  # Redis tells the process: the next read goes to Redis
    assert get("pz-near-a:x", "pz-near-b:x") == [b"2", None]
    written(other.set, "pz-near-b:x", b"3")  # a missing key that appears
    assert get("pz-near-a:x", "pz-near-b:x") == [b"2", b"3"]
    written(other.delete, "pz-near-a:x")
    assert get("pz-near-a:x", "pz-near-b:x") == [None, b"3"]
    written(other.set, "pz-near-b:x", b"4", px=50)
    assert get("pz-near-b:x") == [b"4"]
    time.sleep(0.2)
    written(other.get, "pz-near-b:x")  # an expired key is invalidated when Redis notices it has expired
    assert get("pz-near-b:x") == [None]
    assert reads == ["MGET"] * 6
    assert get("pz-near-a:x", "pz-near-b:x") == [None, None] and len(reads) == 6


def test_a_flush_empties_it_and_keys_outside_its_prefixes_are_never_kept(near):
    get, other, reads = near
    other.set("pz-near-a:y", b"1")
    get("pz-near-a:y")
    written(other.flushdb)
    assert get("pz-near-a:y") == [None] and reads == ["MGET", "MGET"]
    other.set("pz-near-c:y", b"5")
    assert hot_redis.near_mget(redis_client(), ["pz-near-c:y"], prefixes=PREFIXES) == [b"5"]
    assert hot_redis.near_mget(redis_client(), ["pz-near-c:y"], prefixes=PREFIXES) == [b"5"]
    assert reads[-2:] == ["MGET", "MGET"]
    other.delete("pz-near-c:y")


def test_a_value_changed_while_it_was_being_read_is_not_kept(near, monkeypatch):
    get, other, _ = near
    other.set("pz-near-a:z", b"old")
    real = hot_redis.hot_command

    def racing(client, *args):
        answer = real(client, *args)  # Redis answered "old" ...
        written(other.set, "pz-near-a:z", b"new")  # ... and another client wrote before it was kept
        return answer

    monkeypatch.setattr(hot_redis, "hot_command", racing)
    assert get("pz-near-a:z") == [b"old"]
    monkeypatch.setattr(hot_redis, "hot_command", real)
    assert get("pz-near-a:z") == [b"new"]


def test_a_process_forgets_what_it_writes_itself_at_once(near, monkeypatch):
    get, other, reads = near
    other.set("pz-near-a:x", b"1")
    get("pz-near-a:x")
    monkeypatch.setattr(hot_redis._Near, "drain", lambda self: True)  # no invalidation is read
    other.set("pz-near-a:x", b"2")
    assert get("pz-near-a:x") == [b"1"]  # what the cache would answer without being told
    hot_redis.near_forget(["pz-near-a:x"])
    assert get("pz-near-a:x") == [b"2"] and reads == ["MGET", "MGET"]


def test_when_its_connection_breaks_or_goes_silent_it_is_emptied_and_made_again(near):
    get, other, reads = near
    other.set("pz-near-a:x", b"1")
    get("pz-near-a:x")
    state = _state()
    other.client_kill_filter(_id=state.client_id)
    other.set("pz-near-a:x", b"2")  # nobody tells the process: its connection is gone
    assert get("pz-near-a:x") == [b"2"]  # it noticed, emptied the cache and read Redis
    time.sleep(hot_redis._NEAR_RETRY + 0.05)
    assert get("pz-near-a:x") == [b"2"] and get("pz-near-a:x") == [b"2"]  # connected again, kept again
    assert reads == ["MGET", "MGET", "MGET"]
    written(other.set, "pz-near-a:x", b"3")
    assert get("pz-near-a:x") == [b"3"]
    # A connection that stops answering: pinged when idle, broken when the answer does not come.
    state.ping_at = time.monotonic() - hot_redis._NEAR_PING_TIMEOUT - 1
    assert get("pz-near-a:x") == [b"3"] and state.conn is None and not state.values
    state.retry_at = 0.0
    get("pz-near-a:x")
    idle_since = state.heard_at = time.monotonic() - hot_redis._NEAR_IDLE_PING - 1
    get("pz-near-a:x")  # pings it
    deadline = time.monotonic() + 2
    while state.heard_at == idle_since and time.monotonic() < deadline:  # the answer arrives
        time.sleep(0.01)
        with state.lock:
            state.drain()
    assert state.heard_at > idle_since and state.ping_at is None and state.conn is not None


def test_without_the_setting_every_read_goes_to_redis(near, settings):
    get, other, reads = near
    settings.RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS = 0
    other.set("pz-near-a:y", b"1")
    assert get("pz-near-a:y") == get("pz-near-a:y") == [b"1"] and reads == ["MGET", "MGET"]


def test_entries_age_out(near, settings):
    get, other, reads = near
    other.set("pz-near-a:y", b"1")
    get("pz-near-a:y")
    settings.RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS = 0.05
    get("pz-near-a:y")  # still the old lifetime
    hot_redis.near_forget(["pz-near-a:y"])
    get("pz-near-a:y")
    time.sleep(0.1)
    assert get("pz-near-a:y") == [b"1"] and reads == ["MGET", "MGET", "MGET"]


def test_values_read_another_way_are_kept_unless_they_changed_after_the_mark(near):
    get, other, reads = near
    client = redis_client()
    other.set("pz-near-a:x", b"1")
    other.set("pz-near-a:y", b"1")
    mark = hot_redis.near_since(client, PREFIXES)
    values = other.mget("pz-near-a:x", "pz-near-a:y")  # e.g. inside a script
    hot_redis.near_keep(mark, ["pz-near-a:x", "pz-near-a:y"], values)
    assert get("pz-near-a:x", "pz-near-a:y") == [b"1", b"1"] and reads == []
    mark = hot_redis.near_since(client, PREFIXES)
    stale = other.get("pz-near-b:z")
    written(other.set, "pz-near-b:z", b"2")  # changed after it was read, before it is kept
    hot_redis.near_keep(mark, ["pz-near-b:z"], [stale])
    assert get("pz-near-b:z") == [b"2"] and reads == ["MGET"]


def test_every_thread_of_a_process_shares_one_near_cache(near):
    get, other, reads = near
    other.set("pz-near-a:y", b"1")
    get("pz-near-a:y")
    answers = []

    def elsewhere():  # another request thread: a cache client of its own
        answers.append((redis_client(), hot_redis.near_mget(redis_client(), ["pz-near-a:y"], prefixes=PREFIXES)))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert answers[0][0] is not redis_client() and answers[0][1] == [b"1"] and reads == ["MGET"]
    assert len([k for k in hot_redis._near_state if k[2] == PREFIXES and k[1] == os.getpid()]) == 1


def test_a_redis_that_refuses_tracking_is_asked_less_and_less_often_and_reads_go_to_it(near, monkeypatch):
    get, other, reads = near
    warned = []
    monkeypatch.setattr(hot_redis.logger, "warning", lambda message, *args, **kwargs: warned.append(message))
    other.set("pz-near-a:x", b"1")
    get("pz-near-a:x")
    state = _state()
    real = hot_redis._Near._connect

    def refused(self):
        raise CACHE_ERRORS[-1]("unknown command 'CLIENT TRACKING'")  # an old Redis, a proxy, an ACL

    monkeypatch.setattr(hot_redis._Near, "_connect", refused)
    other.client_kill_filter(_id=state.client_id)
    assert get("pz-near-a:x") == [b"1"] and state.conn is None  # noticed: read from Redis
    waits = []
    for _ in range(4):
        state.retry_at = 0.0
        assert get("pz-near-a:x") == [b"1"]
        waits.append(round(state.retry_at - time.monotonic()))
    assert waits == [1, 2, 4, 8] and state.failures == 4
    assert sum("near cache off" in message for message in warned) == 1  # said once, not every time
    monkeypatch.setattr(hot_redis._Near, "_connect", real)
    state.retry_at = 0.0
    get("pz-near-a:x")
    assert state.conn is not None and state.failures == 0
    reads.clear()
    assert get("pz-near-a:x") == [b"1"] and reads == []  # kept again


def test_entries_live_between_half_and_all_of_the_setting_and_what_was_read_together_expires_together(near, settings):
    """Entries kept in the same few seconds (a process's first minute under load) must not all age
    out at once: every one of them would be read again in the same second."""
    get, other, _reads = near
    keys = [f"pz-near-b:spread-{i}" for i in range(60)]
    other.mset({key: b"1" for key in keys})
    try:
        settings.RECOMMENDERS_SERVE_NEAR_CACHE_SECONDS = 100.0
        before = time.monotonic()
        for first, second in zip(keys[::2], keys[1::2], strict=True):
            get(first, second)
        after = time.monotonic()
        lives = {key: _state().values[key][1] for key in keys}
        assert all(before + 50 <= at <= after + 100 for at in lives.values())
        assert max(lives.values()) - min(lives.values()) > 20  # spread, not one moment
        assert all(lives[a] == lives[b] for a, b in zip(keys[::2], keys[1::2], strict=True))
    finally:
        other.delete(*keys)


def test_beyond_its_bound_the_near_cache_drops_its_oldest_entries_not_all(near, monkeypatch):
    get, other, reads = near
    monkeypatch.setattr(hot_redis, "_NEAR_BOUND", 20)
    keys = [f"pz-near-b:bound-{i:02d}" for i in range(25)]
    other.mset({key: b"1" for key in keys})
    try:
        for key in keys:
            get(key)
        kept = set(_state().values)
        assert set(keys[-15:]) <= kept and not kept & set(keys[:2])  # the oldest tenth went, twice
        reads.clear()
        get(keys[-1])
        assert reads == []
    finally:
        other.delete(*keys)
