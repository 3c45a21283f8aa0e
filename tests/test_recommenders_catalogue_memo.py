"""The web process's catalogue memo and the change log in Redis: a row nobody changed is read from
Postgres once, a change another process announces drops just that row at the next read of the log,
and the memo falls back to a plain TTL without the log."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from personalization.hot_redis import hot_script, redis_client
from recommenders import cache_keys
from recommenders.models import Item
from recommenders.services.catalogue import item_delete, items_upsert
from recommenders.serving import items as memo
from recommenders.serving.items import items_changed, items_fetch, items_forget

IDS = [f"sku-{i}" for i in range(6)]


@pytest.fixture(autouse=True)
def _memo(settings, monkeypatch):
    settings.RECOMMENDERS_SERVE_ITEM_CACHE_SECONDS = 1.0
    clock = [1000.0]
    monkeypatch.setattr(memo.time, "monotonic", lambda: clock[0])
    items_forget()
    yield clock
    items_forget()


@pytest.fixture
def shop(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        items_upsert(items=[{"external_id": i, "title": i.upper(), "price": 10} for i in IDS])


def announce_elsewhere(ids) -> None:
    """What another process's write does to this one: the change log only (its own memo is its own)."""
    hot_script(redis_client(), memo._ANNOUNCE, keys=memo._log_keys(), args=[memo.LOG_KEEP, *ids])


def queries(fn):
    with CaptureQueriesContext(connection) as captured:
        result = fn()
    return result, [q["sql"] for q in captured.captured_queries]


def item_queries(statements) -> int:
    return sum(1 for sql in statements if Item._meta.db_table in sql)


@pytest.mark.django_db
def test_a_row_nobody_changed_is_read_once_and_kept_past_the_period(shop, _memo):
    first, statements = queries(lambda: items_fetch(IDS[:3]))
    assert sorted(first) == IDS[:3] and item_queries(statements) == 1
    _memo[0] += 60  # sixty periods: the log is read again, nothing changed
    again, statements = queries(lambda: items_fetch(IDS[:3]))
    assert [again[i].title for i in IDS[:3]] == ["SKU-0", "SKU-1", "SKU-2"] and item_queries(statements) == 0
    _memo[0] += memo.MEMO_MAX_AGE  # unless its bound passed
    _, statements = queries(lambda: items_fetch(IDS[:3]))
    assert item_queries(statements) == 1


@pytest.mark.django_db
def test_a_change_announced_elsewhere_drops_that_row_at_the_next_read_of_the_log(shop, _memo):
    items_fetch(IDS)
    Item.objects.filter(external_id="sku-1").update(in_stock=False, title="Gone")  # another process's write ...
    announce_elsewhere(["sku-1"])  # ... and its announcement
    within_period, statements = queries(lambda: items_fetch(IDS))
    assert within_period["sku-1"].in_stock and item_queries(statements) == 0  # the log is read once a period
    _memo[0] += 1.0
    after, statements = queries(lambda: items_fetch(IDS))
    assert not after["sku-1"].in_stock and after["sku-1"].title == "Gone"
    read = [sql for sql in statements if Item._meta.db_table in sql]
    assert len(read) == 1 and "sku-1" in read[0] and "sku-0" not in read[0]  # only that row was read again
    assert after["sku-0"].in_stock


@pytest.mark.django_db
def test_upsert_admin_save_and_delete_announce_once_committed(shop, _memo, django_capture_on_commit_callbacks):
    items_fetch(IDS)
    seq = int(cache.get(cache_keys.catalogue_counter()))
    with django_capture_on_commit_callbacks(execute=False) as pending:
        items_upsert(items=[{"external_id": "sku-0", "in_stock": False}])
    assert int(cache.get(cache_keys.catalogue_counter())) == seq  # not before the commit
    for callback in pending:
        callback()
    assert int(cache.get(cache_keys.catalogue_counter())) == seq + 1
    with django_capture_on_commit_callbacks(execute=True):
        item = Item.objects.get(external_id="sku-2")
        item.price = 99
        item.save()  # the admin's path
        item_delete(external_id="sku-3")
    redis = cache.client.get_client(write=False)
    log = {
        m.decode(): int(s)
        for m, s in redis.zrange(cache.make_key(cache_keys.catalogue_changes()), 0, -1, withscores=True)
    }
    assert log["sku-0"] == seq + 1 and log["sku-2"] == seq + 2 and log["sku-3"] == seq + 3
    assert log["sku-1"] < log["sku-0"]
    _memo[0] += 1.0
    after = items_fetch(IDS)
    assert not after["sku-0"].in_stock and after["sku-2"].price == 99 and "sku-3" not in after


@pytest.mark.django_db
def test_a_process_behind_what_the_log_keeps_or_after_a_flush_drops_every_row(shop, _memo, monkeypatch):
    items_fetch(IDS)
    monkeypatch.setattr(memo, "LOG_KEEP", 3)
    announce_elsewhere([f"other-{i}" for i in range(5)])  # trimmed: the log no longer reaches back to us
    _memo[0] += 1.0
    _, statements = queries(lambda: items_fetch(IDS))
    assert item_queries(statements) == 1 and len(memo._memo.rows) == len(IDS)
    _, statements = queries(lambda: items_fetch(IDS))
    assert item_queries(statements) == 0
    cache.delete_pattern("rec:*")  # Redis flushed: the counter starts again below where we were
    announce_elsewhere(["unrelated"])
    _memo[0] += 1.0
    _, statements = queries(lambda: items_fetch(IDS))
    assert item_queries(statements) == 1


@pytest.mark.django_db
def test_without_redis_rows_are_kept_one_period(shop, _memo):
    down = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 0.5},
        }
    }
    with override_settings(CACHES=down):
        _, statements = queries(lambda: items_fetch(IDS))
        assert item_queries(statements) == 1
        _memo[0] += 0.5
        _, statements = queries(lambda: items_fetch(IDS))
        assert item_queries(statements) == 0
        _memo[0] += 1.0
        _, statements = queries(lambda: items_fetch(IDS))
        assert item_queries(statements) == 1
        items_changed(["sku-0"])  # a write here while Redis is down still drops the process's own row
        assert "sku-0" not in memo._memo.rows


@pytest.mark.django_db
def test_rows_read_across_an_announcement_are_not_kept(shop, _memo):
    generation = memo._memo.generation
    stale = {i.external_id: i for i in Item.objects.filter(external_id__in=IDS)}
    items_changed(["sku-4"])  # lands while those rows were on their way
    memo._memo.keep(stale, IDS, _memo[0], generation)
    assert memo._memo.rows == {}
    memo._memo.keep(stale, IDS, _memo[0], memo._memo.generation)
    assert set(memo._memo.rows) == set(IDS)


@pytest.mark.django_db
def test_an_unknown_id_is_remembered_as_missing_until_announced(shop, _memo, django_capture_on_commit_callbacks):
    assert items_fetch(["new-1"]) == {}
    _, statements = queries(lambda: items_fetch(["new-1"]))
    assert item_queries(statements) == 0
    with django_capture_on_commit_callbacks(execute=True):
        items_upsert(items=[{"external_id": "new-1", "title": "New"}])
    _memo[0] += 1.0
    assert items_fetch(["new-1"])["new-1"].title == "New"


@pytest.mark.django_db
def test_period_zero_reads_the_catalogue_every_time(shop, settings):
    settings.RECOMMENDERS_SERVE_ITEM_CACHE_SECONDS = 0
    for _ in range(2):
        _, statements = queries(lambda: items_fetch(IDS[:2]))
        assert item_queries(statements) == 1
