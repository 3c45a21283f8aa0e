"""The served-list log on the hot path: buffered in Redis, written in bulk by a real Celery worker,
and nothing CTR attribution needs lost on the way (a failed write, a dead flusher, an erased visitor)."""

from __future__ import annotations

import time

import pytest

from personalization.celery import app as celery_app
from recommenders.models import RecommendationServed
from recommenders.serving import served
from recommenders.serving.served import served_flush, served_pending
from tests.test_recommenders_serving import _fresh, catalogue, ids, journeys, recommend, send, train  # noqa: F401
from tracking.selectors import profile_by_anonymous_id


@pytest.fixture
def shop(client_public):
    """The serving tests' shop: a catalogue, visitors' journeys and a trained EASE model, live."""
    catalogue()
    send(client_public, *journeys())
    return train()


@pytest.mark.django_db(transaction=True)
def test_served_tokens_buffered_then_flushed_by_the_worker_are_all_stored(client_public, settings):
    from celery.contrib.testing.worker import start_worker

    settings.RECOMMENDERS_SERVED_FLUSH_SIZE = 4
    catalogue()
    send(client_public, *journeys(visitors=12))
    trained = train()
    bodies = [recommend(client_public, anonymous_id=f"v{i % 12}", n=3, placement="home") for i in range(30)]
    assert served_pending() > 0  # the requests wrote nothing to the database themselves
    with start_worker(celery_app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
        # What the beat does every few seconds (and a request when the buffer is full).
        celery_app.send_task("recommenders.served_flush").get(timeout=30)
        deadline = time.monotonic() + 10
        while served_pending() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert served_pending() == 0
    stored = {str(s.token): s for s in RecommendationServed.objects.select_related("model_version", "profile")}
    assert set(stored) == {b["token"] for b in bodies}
    for body in bodies[:12]:
        row = stored[body["token"]]
        assert row.items == ids(body) and row.placement == "home"
        assert row.model_version.version == trained.version
    assert stored[bodies[5]["token"]].profile == profile_by_anonymous_id("v5")


@pytest.mark.django_db
def test_a_flush_whose_write_fails_puts_the_rows_back_and_the_next_one_stores_them(client_public, shop, monkeypatch):
    tokens = [recommend(client_public, anonymous_id=f"v{i}", n=3)["token"] for i in range(5)]
    real_store = served._store

    def broken(rows):
        raise RuntimeError("database went away")

    monkeypatch.setattr(served, "_store", broken)
    with pytest.raises(RuntimeError):
        served_flush()
    assert served_pending() == 5 and not RecommendationServed.objects.exists()
    monkeypatch.setattr(served, "_store", real_store)
    assert served_flush() == 5
    assert {str(t) for t in RecommendationServed.objects.values_list("token", flat=True)} == set(tokens)


@pytest.mark.django_db
def test_rows_left_in_flight_by_a_dead_flusher_are_stored_by_a_later_flush(client_public, shop, monkeypatch):
    tokens = [recommend(client_public, anonymous_id=f"v{i}", n=3)["token"] for i in range(3)]
    client = served._client()
    buffer, inflight = served._keys()
    # A flusher took the batch and died before writing it, long ago.
    client.register_script(served._TAKE)(
        keys=[buffer, f"{inflight}:dead", f"{inflight}:index"], args=[100, time.time() - 2 * served.STALE_SECONDS]
    )
    assert served_pending() == 0
    assert served_flush() == 3
    assert {str(t) for t in RecommendationServed.objects.values_list("token", flat=True)} == set(tokens)


@pytest.mark.django_db
def test_a_list_buffered_before_the_visitor_was_erased_is_stored_without_them(client_public, shop):
    from privacy.services.subjects import subject_erase

    body = recommend(client_public, anonymous_id="v2", n=3)
    subject_erase(profile=profile_by_anonymous_id("v2"))
    served_flush()
    row = RecommendationServed.objects.get(token=body["token"])
    assert row.profile_id is None and row.items == ids(body) and row.model_version is not None


@pytest.mark.django_db
def test_with_no_worker_flushing_the_requests_keep_the_buffer_bounded(client_public, shop, settings):
    settings.RECOMMENDERS_SERVED_FLUSH_SIZE = 2
    tokens = [recommend(client_public, anonymous_id=f"v{i % 9}", n=3)["token"] for i in range(60)]
    assert served_pending() < 2 * served.BACKLOG_FACTOR  # nobody ran the task: requests wrote batches
    assert RecommendationServed.objects.count() >= 60 - 2 * served.BACKLOG_FACTOR
    served_flush()
    assert {str(t) for t in RecommendationServed.objects.values_list("token", flat=True)} == set(tokens)


@pytest.mark.django_db
def test_the_one_statement_flush_stores_exactly_what_the_orm_would(client_public, shop):
    """Postgres flushes the buffered JSON in one statement; other databases through the ORM."""
    from datetime import timedelta

    from django.utils import timezone

    from recommenders.models import ModelVersion

    profile = profile_by_anonymous_id("v1")
    version = ModelVersion.objects.get()
    at = timezone.now().replace(microsecond=250_000) - timedelta(seconds=7)  # exact in binary: no float rounding

    def rows(tag: str) -> list[RecommendationServed]:
        return [
            RecommendationServed(profile_id=profile.pk, placement=f"{tag}-a", model_version_id=version.pk,
                                 algorithm="ease", items=["shoe-1", "bag-2"], variant="B", served_at=at),
            RecommendationServed(profile_id=10**9, placement=f"{tag}-b", model_version_id=10**9,
                                 algorithm="trending", items=[], served_at=at),
        ]  # fmt: skip

    raw, orm = rows("raw"), rows("orm")
    served._store([served._encode(r) for r in raw])
    served._store_orm([served._decode(served._encode(r)) for r in orm])
    fields = ("profile_id", "model_version_id", "algorithm", "items", "variant", "served_at")
    for a, b in zip(raw, orm, strict=True):
        stored_raw = RecommendationServed.objects.get(token=a.token)
        stored_orm = RecommendationServed.objects.get(token=b.token)
        assert [getattr(stored_raw, f) for f in fields] == [getattr(stored_orm, f) for f in fields]
        assert stored_raw.placement.startswith("raw") and stored_orm.placement.startswith("orm")
    assert RecommendationServed.objects.get(token=raw[0].token).served_at == at
    assert RecommendationServed.objects.get(token=raw[1].token).profile_id is None


@pytest.mark.django_db(transaction=True)
def test_the_pusher_thread_sends_the_process_rows_to_the_buffer_in_batches(client_public, settings, monkeypatch):
    """With a push interval the request only appends to the process's list; the pusher thread sends
    the rows to Redis by itself, several per RPUSH, and a flush stores every one of them."""
    import redis

    catalogue()
    send(client_public, *journeys(visitors=6))
    train()
    pushes: list[int] = []
    rpush = redis.Redis.rpush

    def counted(self, name, *values):
        pushes.append(len(values))
        return rpush(self, name, *values)

    monkeypatch.setattr(redis.Redis, "rpush", counted)
    settings.RECOMMENDERS_SERVED_PUSH_SECONDS = 0.5  # longer than the twelve requests take
    client = served._client()
    tokens = [recommend(client_public, anonymous_id=f"v{i % 6}", n=3)["token"] for i in range(12)]
    deadline = time.monotonic() + 10
    while client.llen(served._keys()[0]) < 12 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.llen(served._keys()[0]) == 12 and len(served._local) == 0  # nobody pushed by hand
    assert sum(pushes) == 12 and len(pushes) < 12  # batched: at least one RPUSH carried several rows
    assert served_flush() == 12
    assert {str(t) for t in RecommendationServed.objects.values_list("token", flat=True)} == set(tokens)


@pytest.mark.django_db
def test_rows_the_pusher_could_place_nowhere_wait_for_the_next_round(client_public, shop, monkeypatch, settings):
    settings.RECOMMENDERS_SERVED_PUSH_SECONDS = 3600  # the test pushes by hand
    tokens = [recommend(client_public, anonymous_id=f"v{i}", n=3)["token"] for i in range(3)]
    assert len(served._local) == 3 and served_pending() == 3

    def unreachable():
        raise ConnectionError("redis went away")

    class Down:
        def rpush(self, *args):
            unreachable()

    def broken(rows):
        raise RuntimeError("database went away too")

    monkeypatch.setattr(served, "_client", lambda: Down())
    monkeypatch.setattr(served, "_store", broken)
    with pytest.raises(RuntimeError):
        served.served_push()
    assert len(served._local) == 3  # kept, in order, for the next round
    monkeypatch.undo()
    assert served_flush() == 3
    assert {str(t) for t in RecommendationServed.objects.values_list("token", flat=True)} == set(tokens)


@pytest.mark.django_db
def test_a_gunicorn_worker_pushes_its_rows_when_it_exits(client_public, shop, settings):
    import runpy
    from pathlib import Path

    settings.RECOMMENDERS_SERVED_PUSH_SECONDS = 3600
    token = recommend(client_public, anonymous_id="v1", n=3)["token"]
    assert len(served._local) == 1
    conf = runpy.run_path(str(Path(__file__).resolve().parent.parent / "docker" / "gunicorn.conf.py"))
    conf["worker_exit"](server=None, worker=None)
    assert len(served._local) == 0 and served._client().llen(served._keys()[0]) == 1
    served_flush()
    assert RecommendationServed.objects.filter(token=token).exists()
