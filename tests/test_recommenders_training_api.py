"""On-demand training through the API and a real Celery worker, the beat entries, the model list,
and the health check (staleness, drift, CTR) that raises alerts and retrains."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from personalization.celery import app as celery_app
from recommenders.models import ModelVersion, RecommendationServed, RecommenderConfig
from recommenders.registry import registry_forget
from recommenders.services.health import distribution_shift, health_check
from recommenders.services.training import model_train
from tests.recommenders_helpers import config, journeys, media_tmp, send, view  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh(media_tmp):  # noqa: F811
    registry_forget()
    yield
    registry_forget()


@pytest.mark.django_db(transaction=True)
def test_train_endpoint_queues_a_training_that_a_worker_runs(client_public, client_secret):
    from celery.contrib.testing.worker import start_worker

    send(client_public, *journeys(visitors=24))
    with start_worker(celery_app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
        response = client_secret.post("/api/v1/models/train", {}, format="json")
        assert response.status_code == 202 and response.json() == {"queued": True, "config": "default"}
        for _ in range(200):
            if ModelVersion.objects.filter(status="live").exists():
                break
            import time

            time.sleep(0.1)
    version = ModelVersion.objects.get()
    assert version.status == "live" and version.config.key == "default"
    listed = client_secret.get("/api/v1/models?config=default").json()["results"]
    assert [(v["version"], v["status"]) for v in listed] == [(1, "live")]
    assert "popularity" in listed[0]["metrics"]


@pytest.mark.django_db
def test_train_endpoint_refuses_unknown_configs_and_public_keys(client_public, client_secret):
    missing = client_secret.post("/api/v1/models/train", {"config": "nope"}, format="json")
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    assert client_secret.post("/api/v1/models/train", {"force": "maybe"}, format="json").status_code == 400
    assert client_public.post("/api/v1/models/train", {}, format="json").status_code in (401, 403)
    assert client_secret.get("/api/v1/models?config=nope").status_code == 404


def test_training_and_health_are_on_the_beat_schedule(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"recommenders.train_all", "recommenders.health_check"} <= tasks
    assert {"recommenders.train", "recommenders.train_all", "recommenders.health_check"} <= set(celery_app.tasks)


@pytest.mark.django_db
def test_train_all_queues_one_training_per_configuration(client_public, monkeypatch):
    from recommenders import tasks

    queued = []
    monkeypatch.setattr(tasks.train_task, "delay", lambda config_id, *a: queued.append(config_id))
    first, second = config(), config(key="other", is_default=False)
    assert tasks.train_all_task() == [first.pk, second.pk]
    assert queued == [first.pk, second.pk]


def test_drift_measures_are_zero_for_the_same_mix_and_grow_with_the_shift():
    same = distribution_shift({"view": 90, "cart": 10}, {"view": 9, "cart": 1})
    assert same == {"tv": 0.0, "psi": 0.0}
    shifted = distribution_shift({"view": 90, "cart": 10}, {"view": 50, "cart": 50})
    assert shifted["tv"] == pytest.approx(0.4) and shifted["psi"] > 0.2


@pytest.mark.django_db
def test_health_check_flags_a_stale_drifting_model_and_retrains(client_public, monkeypatch):
    send(client_public, *journeys(visitors=24))
    cfg = config(schedule_hours=1)
    result = model_train(config_id=cfg.pk)
    live = ModelVersion.objects.get(config=cfg, version=result.version)
    ModelVersion.objects.filter(pk=live.pk).update(trained_at=timezone.now() - timedelta(hours=5))
    # After training, visitors only add to cart: the event mix moved far from the training's.
    send(client_public, *[view(f"late{i}", "bag-1", n=i, days_ago=0, kind="add_to_cart") for i in range(120)])
    retrained = []
    monkeypatch.setattr(
        "recommenders.services.training.training_enqueue", lambda *, config, force=False: retrained.append(config.key)
    )
    report = health_check()
    live.refresh_from_db()
    alerts = live.health["alerts"]
    assert any("old" in a for a in alerts) and any("event mix shifted" in a for a in alerts)
    assert live.health["drift"]["tv"] > 0.5
    assert report == {"default": {"version": live.version, "alerts": alerts}}
    assert retrained == ["default"]


@pytest.mark.django_db
def test_health_check_measures_ctr_from_tokens_and_alerts_on_a_drop(client_public, settings):
    settings.RECOMMENDERS_CTR_MIN_IMPRESSIONS = 10
    send(client_public, *journeys(visitors=12))
    cfg = config()
    live = ModelVersion.objects.get(config=cfg, version=model_train(config_id=cfg.pk).version)
    previous = ModelVersion.objects.create(
        config=cfg,
        version=0,
        status="retired",
        trained_at=live.trained_at,
        published_at=live.trained_at,
        health={"ctr": {"recent": {"ctr": 0.5}}},
    )
    served = [RecommendationServed.objects.create(model_version=live, placement="home", items=["x"]) for _ in range(20)]
    events = [
        {
            "type": "recommendation_viewed",
            "anonymous_id": "s",
            "message_id": f"imp-{i}",
            "properties": {"rec_token": str(s.token)},
        }
        for i, s in enumerate(served)
    ]
    events.append(
        {
            "type": "recommendation_clicked",
            "anonymous_id": "s",
            "message_id": "clk",
            "properties": {"rec_token": str(served[0].token)},
        }
    )
    events.append(
        {
            "type": "recommendation_clicked",
            "anonymous_id": "s",
            "message_id": "junk",
            "properties": {"rec_token": "not-a-uuid"},
        }
    )
    send(client_public, *events)
    health_check()
    live.refresh_from_db()
    recent = live.health["ctr"]["recent"]
    assert (recent["impressions"], recent["clicks"], recent["basis"]) == (20, 1, "impression events")
    assert recent["ctr"] == pytest.approx(0.05)
    assert any("CTR 5.00%" in a and "down from 50.00%" in a for a in live.health["alerts"])
    assert previous.pk and RecommenderConfig.objects.count() == 1
