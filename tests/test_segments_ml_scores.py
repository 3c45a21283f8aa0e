"""ML scores on the real tables: training from stored events, versions and artifacts, scores written in
bulk, consent respected, reruns idempotent, score segments recomputed, and the Celery task on a worker."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from personalization.celery import app as celery_app
from privacy.services.consent import consent_record
from segments.ml.churn import churn_features, churn_matrix
from segments.models import ProfileScore, ScoreModel, Segment, SegmentMembership
from segments.services.scores import CHURN, RFM, churn_columns, score_model_load, scores_train
from tests.factories import SourceFactory
from tracking.models import Event, Identity, Profile

SEND = 2000


def history(seed: int = 5, loyal: int = 40, churners: int = 40, new: int = 20) -> list[dict]:
    """Loyal visitors active all along (some buy), churners active from 150 to ~50 days ago then
    gone, new visitors seen only this week. Deterministic."""
    rng = random.Random(seed)
    now = timezone.now()
    events = []

    def visit(anon: str, days_ago: float, n: int) -> None:
        when = now - timedelta(days=days_ago)
        kind = rng.choices(["page_view", "product_view", "add_to_cart", "purchase"], [4, 4, 2, 1])[0]
        event = {
            "type": kind,
            "anonymous_id": anon,
            "message_id": f"{anon}-{n}",
            "timestamp": when.isoformat(),
        }
        if kind == "purchase":
            event["properties"] = {"revenue": round(rng.uniform(20, 300), 2)}
        events.append(event)

    for i in range(loyal):
        day, n = rng.uniform(120, 170), 0
        while day > 0.2:
            visit(f"loyal-{i}", day, n)
            day, n = day - rng.uniform(1, 6), n + 1
    for i in range(churners):
        day, stop, n = rng.uniform(120, 170), rng.uniform(35, 70), 0
        while day > stop:
            visit(f"churn-{i}", day, n)
            day, n = day - rng.uniform(1, 4), n + 1
    for i in range(new):
        for n in range(rng.randint(1, 4)):
            visit(f"new-{i}", rng.uniform(0.1, 6), n)
    return events


def send(client, source, events: list[dict]) -> None:
    for start in range(0, len(events), SEND):
        response = client.post(
            "/api/v1/events",
            {"events": events[start : start + SEND]},
            content_type="application/json",
            HTTP_X_WRITE_KEY=source.write_key,
        )
        assert response.status_code == 200, response.json()


def profile_of(anon: str) -> Profile:
    return Profile.objects.get(identities__kind=Identity.Kind.ANONYMOUS, identities__value=anon)


def scores(name: str) -> dict[int, tuple[float, str]]:
    return {s.profile_id: (s.value, s.label) for s in ProfileScore.objects.filter(name=name)}


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    """Artifacts go to a directory of this test, not the checkout's media/."""
    settings.MEDIA_ROOT = str(tmp_path)


@pytest.fixture
def shop(client, db):
    source = SourceFactory()
    send(client, source, history())
    return source


def test_training_stores_live_versions_with_metrics_artifacts_and_scores(shop):
    now = timezone.now()
    result = scores_train(now=now)

    assert result.skipped == {}
    churn, rfm = ScoreModel.objects.get(name=CHURN), ScoreModel.objects.get(name=RFM)
    assert churn.is_live and rfm.is_live and churn.version == rfm.version == 1
    assert churn.metrics["auc"] > 0.8  # churners stopped weeks before the cutoff: easy to tell
    assert churn.metrics["n_test"] > 0 and churn.params["horizon_days"] == 30
    assert churn.artifact == "segments/models/churn_risk/1.pkl"
    names = {c["name"] for c in rfm.metrics["clusters"]}
    assert sum(c["size"] for c in rfm.metrics["clusters"]) == Profile.objects.count() == 100

    risk = scores(CHURN)
    assert len(risk) == 100 and all(0 <= value <= 1 for value, _ in risk.values())
    loyal = np.mean([risk[profile_of(f"loyal-{i}").pk][0] for i in range(40)])
    gone = np.mean([risk[profile_of(f"churn-{i}").pk][0] for i in range(40)])
    assert gone > 0.7 > 0.3 > loyal
    clusters = scores(RFM)
    assert {label for _, label in clusters.values()} <= names
    new_label = clusters[profile_of("new-0").pk][1]
    assert new_label.startswith("new") and clusters[profile_of("churn-0").pk][1].startswith(("lapsed", "cooling"))

    # The stored artifact is the model that scored: it predicts the stored values again.
    model = score_model_load(name=CHURN)
    ids, columns, _ = churn_columns(cutoff=now)
    again = model.predict(churn_matrix(columns))
    assert np.allclose(again, [risk[pk][0] for pk in ids], atol=1e-6)


def test_retraining_makes_a_new_live_version_with_the_same_scores(shop):
    scores_train()
    first = scores(RFM)
    result = scores_train()

    assert result.versions == {RFM: 2, CHURN: 2}
    assert list(ScoreModel.objects.filter(is_live=True).values_list("name", "version")) == [(CHURN, 2), (RFM, 2)]
    assert scores(RFM) == first
    assert ProfileScore.objects.count() == 200
    assert set(ProfileScore.objects.values_list("model_version", flat=True)) == {2}


def test_only_the_newest_artifacts_are_kept(shop, settings, monkeypatch):
    from django.core.files.storage import default_storage

    from segments.services import scores as service

    monkeypatch.setattr(service, "ARTIFACTS_KEPT", 2)
    for _ in range(3):
        scores_train()
    kept = dict(ScoreModel.objects.filter(name=RFM).values_list("version", "artifact"))
    assert kept == {1: "", 2: "segments/models/rfm_segment/2.pkl", 3: "segments/models/rfm_segment/3.pkl"}
    assert not default_storage.exists("segments/models/rfm_segment/1.pkl")
    assert default_storage.exists(kept[3])


def test_profiles_refusing_personalization_lose_their_scores(shop):
    scores_train()
    refusing = profile_of("loyal-3")
    assert ProfileScore.objects.filter(profile=refusing).count() == 2
    consent_record(
        profile_id=refusing.pk, decisions={"personalization": False}, origin="api", source=shop, policy_version=1
    )
    scores_train()

    assert not ProfileScore.objects.filter(profile=refusing).exists()
    assert ProfileScore.objects.filter(name=CHURN).count() == 99


def test_a_skipped_retrain_still_drops_the_scores_of_those_who_withdrew(shop, settings):
    scores_train()
    refusing = profile_of("churn-5")
    consent_record(
        profile_id=refusing.pk, decisions={"personalization": False}, origin="api", source=shop, policy_version=1
    )
    settings.SEGMENTS_CHURN_LOOKBACK_DAYS = 1  # nobody active just before the cutoff: churn is skipped
    result = scores_train()

    assert CHURN in result.skipped
    assert ScoreModel.objects.get(name=CHURN, is_live=True).version == 1
    assert not ProfileScore.objects.filter(profile=refusing).exists()
    assert ProfileScore.objects.filter(name=CHURN).count() == 99


def test_database_features_match_the_reference_definition(shop):
    """The set-based SQL features and the numpy definition over the same stored events agree."""
    cutoff = timezone.now() - timedelta(days=30)
    ids, columns, labels = churn_columns(cutoff=cutoff, horizon_days=30)
    rows = list(Event.objects.values_list("profile_id", "timestamp", "type", "value"))
    profiles = np.array([r[0] for r in rows])
    stamps = np.array([r[1].timestamp() for r in rows])
    types = np.array([r[2] for r in rows])
    values = np.array([np.nan if r[3] is None else float(r[3]) for r in rows])
    expected_ids, expected = churn_features(profiles, stamps, types, values, cutoff=cutoff.timestamp())

    assert list(ids) == list(expected_ids)
    assert np.allclose(churn_matrix(columns), expected)
    later = {pk for pk, t in zip(profiles, stamps, strict=True) if cutoff.timestamp() <= t}
    assert [int(pk not in later) for pk in ids] == labels.tolist()


def test_an_empty_platform_trains_nothing_and_says_why(db):
    result = scores_train()
    assert set(result.skipped) == {CHURN, RFM} and result.versions == {}
    assert "at least 2 different profiles" in result.skipped[RFM]
    assert not ScoreModel.objects.exists() and not ProfileScore.objects.exists()


def test_too_little_history_skips_the_churn_model_and_says_why(client, db):
    source = SourceFactory()
    send(client, source, history(loyal=3, churners=0, new=2))
    result = scores_train()

    assert CHURN in result.skipped and "of each outcome" in result.skipped[CHURN]
    assert not ScoreModel.objects.filter(name=CHURN).exists()
    assert ScoreModel.objects.get(name=RFM).is_live


@pytest.mark.django_db(transaction=True)
def test_nightly_task_trains_on_a_worker_and_recomputes_segments_reading_scores(client):
    from celery.contrib.testing.worker import start_worker

    from segments import tasks_ml  # noqa: F401 - registers segments.train_scores
    from segments.services.definitions import segment_create

    send(client, SourceFactory(), history())
    risky = segment_create(
        key="risky", name="Risky", rule={"kind": "score", "name": "churn_risk", "op": "gte", "value": 0.5}
    )
    plain = segment_create(
        key="buyers", name="Buyers", rule={"kind": "profile", "field": "purchase_count", "op": "gte", "value": 1}
    )

    with start_worker(celery_app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
        outcome = celery_app.send_task("segments.train_scores").get(timeout=120)
        assert outcome["versions"] == {RFM: 1, CHURN: 1}
        assert outcome["recompute"] == [risky.pk]  # the segment reading no score is left alone
        at_risk = set(ProfileScore.objects.filter(name=CHURN, value__gte=0.5).values_list("profile_id", flat=True))
        assert len(at_risk) >= 30
        deadline = time.monotonic() + 30
        while set(SegmentMembership.objects.filter(segment=risky).values_list("profile_id", flat=True)) != at_risk:
            assert time.monotonic() < deadline, "the segment reading churn_risk was not recomputed"
            time.sleep(0.2)
    assert Segment.objects.get(pk=plain.pk).member_count > 0


def test_training_is_on_the_beat_schedule_daily(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["segments-train-scores"]
    assert entry["task"] == "segments.train_scores"


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the training lock is a Postgres advisory lock")
def test_a_second_concurrent_run_skips_instead_of_interleaving(shop):
    import psycopg2

    from segments.services.scores import TRAIN_LOCK

    params = connection.get_connection_params()
    other = psycopg2.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")})
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [TRAIN_LOCK])
            result = scores_train()
            cursor.execute("SELECT pg_advisory_unlock(%s)", [TRAIN_LOCK])
    finally:
        other.close()
    assert result.skipped == {CHURN: "another training run is in progress", RFM: "another training run is in progress"}
    assert not ScoreModel.objects.exists()
    assert scores_train().versions == {RFM: 1, CHURN: 1}  # released by the other run


def test_scores_of_profiles_erased_during_training_are_skipped(shop):
    from segments.services.scores import _scores_write

    kept = profile_of("loyal-1").pk
    gone = Profile.objects.order_by("-pk").first().pk + 1000
    now = timezone.now()
    _scores_write(name=CHURN, version=1, now=now, ids=np.array([kept, gone]), values=np.array([0.2, 0.9]), labels=None)
    assert scores(CHURN) == {kept: (0.2, "")}


def test_opt_in_profiles_are_scored_only_with_a_current_grant(db):
    from segments.services.scores import scorable_profiles

    now = timezone.now()
    opt_in = SourceFactory(consent_regime="opt_in", consent_policy_version=2)
    _silent, granted, outdated = (
        Profile.objects.create(first_seen_at=now, last_seen_at=now, event_count=1, last_source=opt_in) for _ in range(3)
    )
    consent_record(profile_id=granted.pk, decisions={"personalization": True}, origin="api", source=opt_in,
                   policy_version=2)  # fmt: skip
    consent_record(profile_id=outdated.pk, decisions={"personalization": True}, origin="api", source=opt_in,
                   policy_version=1)  # fmt: skip
    assert set(scorable_profiles().values_list("pk", flat=True)) == {granted.pk}
