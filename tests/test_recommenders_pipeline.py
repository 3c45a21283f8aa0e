"""Training pipeline: extract -> matrix -> fit -> evaluate -> register -> promote -> publish, its
idempotency, the promotion gate, and what a reader of the registry and the cache sees."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from recommenders import cache_keys
from recommenders.models import ModelVersion
from recommenders.registry import live_model, live_version, registry_forget
from recommenders.services.promotion import version_promote
from recommenders.services.training import model_train, training_lock
from recommenders.store import toplist_get
from tests.recommenders_helpers import GROUPS, config, journeys, media_tmp, send, view  # noqa: F401
from tracking.models import Profile
from tracking.selectors import profile_by_anonymous_id


@pytest.fixture(autouse=True)
def _fresh_registry(media_tmp):  # noqa: F811
    registry_forget()
    yield
    registry_forget()


@pytest.fixture
def trained(client_public):
    send(client_public, *journeys())
    cfg = config()
    result = model_train(config_id=cfg.pk)
    return cfg, result


def profile_id(anonymous_id: str) -> int:
    return profile_by_anonymous_id(anonymous_id).pk


@pytest.mark.django_db
def test_first_training_goes_live_with_metrics_next_to_popularity(trained):
    cfg, result = trained
    assert result.status == "live", result.reason
    version = ModelVersion.objects.get(config=cfg, version=result.version)
    assert version.status == "live" and version.published_at is not None
    assert set(version.metrics) >= {"model", "popularity", "k"}
    for side in ("model", "popularity"):
        assert {"precision@10", "recall@10", "map@10", "ndcg@10", "coverage"} <= set(version.metrics[side])
    # Visitors stick to a category: item-to-item beats "most popular" on their next item.
    assert version.metrics["model"]["ndcg@10"] > version.metrics["popularity"]["ndcg@10"]
    assert version.matrix_stats["users"] == 60 and version.matrix_stats["event_types"]["product_view"] > 0
    assert {"extract", "fit", "evaluate", "publish", "total"} <= set(version.timings)
    assert "first live version" in version.reason


@pytest.mark.django_db
def test_published_lists_are_in_the_cache_under_the_live_version(trained):
    cfg, result = trained
    assert live_version(cfg.key) == result.version
    assert cache.get(cache_keys.live_pointer(cfg.key)) == result.version
    pid = profile_id("v0")  # a shoes visitor
    top = toplist_get(config_key=cfg.key, version=result.version, profile_id=pid)
    assert top is not None and len(top.item_ids) > 0
    seen = set(Profile.objects.get(pk=pid).events.values_list("properties__item_id", flat=True))
    assert not seen & set(top.item_ids), "precomputed lists leave out what the visitor already interacted with"
    assert top.item_ids[0] in GROUPS["shoes"]
    assert list(top.scores) == sorted(top.scores, reverse=True)


@pytest.mark.django_db
def test_live_model_loads_from_storage_with_index_maps(trained):
    cfg, result = trained
    loaded = live_model(cfg.key)
    assert loaded is not None and loaded.version == result.version
    pid = profile_id("v1")
    row = loaded.user_index[pid]
    assert loaded.profile_ids[row] == pid
    ids, _ = loaded.recommender.recommend(row, loaded.user_items[row], N=2)  # 2 bags are unseen
    assert all(loaded.item_ids[i] in GROUPS["bags"] for i in ids)
    assert live_model(cfg.key) is loaded, "memoized per process and version"


@pytest.mark.django_db
def test_training_again_without_new_events_is_a_no_op(trained):
    cfg, _result = trained
    again = model_train(config_id=cfg.pk)
    assert again.skipped and "nothing to train" in again.reason
    assert ModelVersion.objects.filter(config=cfg).count() == 1


@pytest.mark.django_db
def test_new_events_make_a_new_version_that_switches_the_live_pointer(trained, client_public):
    cfg, first = trained
    send(client_public, view("v0", "shoe-1", n=900, days_ago=0.01))
    second = model_train(config_id=cfg.pk)
    assert second.version == first.version + 1
    versions = dict(ModelVersion.objects.filter(config=cfg).values_list("version", "status"))
    if second.status == "live":
        assert versions == {first.version: "retired", second.version: "live"}
        assert live_version(cfg.key) == second.version
    else:  # gated: the live version is untouched
        assert versions[first.version] == "live" and live_version(cfg.key) == first.version
    # The candidate was compared with the live version on the same holdout.
    assert ModelVersion.objects.get(config=cfg, version=second.version).metrics["live_version"] == first.version


@pytest.mark.django_db
def test_a_worse_candidate_stays_candidate_with_the_reason(trained):
    cfg, first = trained
    live = ModelVersion.objects.get(config=cfg, version=first.version)
    worse = ModelVersion.objects.create(
        config=cfg,
        version=first.version + 1,
        trained_at=live.trained_at,
        metrics={"model": {"ndcg@10": live.metrics["model"]["ndcg@10"] * 0.5}, "popularity": {"ndcg@10": 0.01}},
        artifact=live.artifact,
    )
    outcome = version_promote(version=worse)
    worse.refresh_from_db()
    assert outcome.status == "candidate" and worse.status == "candidate"
    assert "below live" in worse.reason and "ndcg@10" in worse.reason
    assert live_version(cfg.key) == first.version
    # A marketer can still make it live by hand; the reason says it went over the gate.
    forced = version_promote(version=worse, force=True)
    worse.refresh_from_db()
    assert forced.status == "live" and worse.status == "live" and "by hand" in worse.reason
    assert ModelVersion.objects.get(config=cfg, version=first.version).status == "retired"


@pytest.mark.django_db
def test_a_second_training_while_one_runs_returns_at_once(client_public):
    send(client_public, *journeys(visitors=12))
    cfg = config()
    with training_lock(cfg.key):
        result = model_train(config_id=cfg.pk)
    assert result.skipped and "already running" in result.reason
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_no_events_means_no_version(source):
    cfg = config()
    result = model_train(config_id=cfg.pk)
    assert result.skipped and "no interactions" in result.reason
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_tuning_within_its_budget_records_every_trial_and_keeps_the_best(client_public):
    send(client_public, *journeys())
    cfg = config(algorithm="itemknn", params={"K": 100}, tuning_budget_seconds=2)
    result = model_train(config_id=cfg.pk)
    version = ModelVersion.objects.get(config=cfg, version=result.version)
    trials = version.tuning
    assert len(trials) >= 2 and trials[0]["params"] == {"K": 100}, "the configured parameters are tried first"
    best = max((t for t in trials if t["metric"] is not None), key=lambda t: t["metric"])
    assert {k: version.params[k] for k in best["params"]} == best["params"]
    assert version.timings["tune"] < 2 + 1.5


@pytest.mark.django_db
def test_the_default_algorithm_trains_on_the_demo_shaped_data(client_public):
    send(client_public, *journeys())
    cfg = config(algorithm="default")
    result = model_train(config_id=cfg.pk)
    assert result.status == "live", result.reason
    version = ModelVersion.objects.get(config=cfg)
    assert version.metrics["model"]["ndcg@10"] > version.metrics["popularity"]["ndcg@10"]


@pytest.mark.django_db
def test_factor_models_publish_the_same_lists_their_recommend_gives(client_public):
    """Publishing takes implicit's fused top-k for factor models; it must agree with recommend()."""
    import numpy as np

    send(client_public, *journeys())
    cfg = config(key="als", algorithm="als", params={"factors": 8, "iterations": 5}, is_default=False)
    result = model_train(config_id=cfg.pk)
    assert result.status == "live", result.reason
    loaded = live_model(cfg.key)
    rows = np.arange(len(loaded.profile_ids))
    ids, _ = loaded.recommender.recommend(rows, loaded.user_items[rows], N=cfg.top_n)
    for row in rows:
        published = toplist_get(config_key=cfg.key, version=result.version, profile_id=int(loaded.profile_ids[row]))
        expected = [loaded.item_ids[i] for i in ids[row] if i >= 0]
        assert list(published.item_ids[:5]) == expected[:5]


@pytest.mark.django_db
def test_demo_seed_gives_a_catalogue_and_a_live_default_model():
    from io import StringIO

    from django.core.management import call_command

    from recommenders.models import Item

    out = StringIO()
    call_command("seed_demo", visitors=40, days=20, stdout=out)  # loads the catalogue and trains too
    assert "v1 live" in out.getvalue()
    assert Item.objects.filter(is_stub=False).count() >= 52
    assert Item.objects.get(external_id="sku-001").categories == ["shoes"]
    again = StringIO()
    call_command("recommenders_seed", stdout=again)
    assert "skipped" in again.getvalue() and ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_a_configuration_that_cannot_train_leaves_a_rejected_version_saying_why(client_public):
    send(client_public, *journeys(visitors=12))
    cfg = config(algorithm="als", params={"factorz": 8})
    result = model_train(config_id=cfg.pk)
    version = ModelVersion.objects.get(config=cfg)
    assert result.status == version.status == "rejected"
    assert "factorz" in version.reason and not version.artifact
    assert live_version(cfg.key) is None
    assert model_train(config_id=cfg.pk).skipped, "the same inputs do not fail again every night"


@pytest.mark.django_db
def test_an_erased_or_withdrawn_visitor_is_dropped_by_the_next_training(trained, source):
    from privacy.services.consent import consent_decide

    cfg, first = trained
    erased, withdrawn = profile_id("v0"), profile_id("v1")
    Profile.objects.filter(pk=erased).delete()
    consent_decide(source=source, anonymous_id="v1", decisions={"personalization": False}, origin="banner")
    second = model_train(config_id=cfg.pk)
    assert second.version == first.version + 1, "no new event, but who may be learned from changed"
    version = ModelVersion.objects.get(config=cfg, version=second.version)
    from recommenders.registry import model_load

    rows = set(model_load(version).profile_ids.tolist())
    assert erased not in rows and withdrawn not in rows and profile_id("v2") in rows


def _build_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "toplists-build"]


@pytest.mark.django_db
def test_lists_computed_before_the_gate_are_never_written_for_a_version_that_fails_it(
    trained, client_public, monkeypatch
):
    from recommenders.services import promotion

    cfg, first = trained
    send(client_public, view("v0", "shoe-1", n=900, days_ago=0.01))
    monkeypatch.setattr(promotion, "gate", lambda version: (False, "ndcg@10 below the live version (test)"))
    second = model_train(config_id=cfg.pk)
    assert second.status == "candidate" and second.version == first.version + 1
    profiles = list(Profile.objects.values_list("pk", flat=True))
    assert all(toplist_get(config_key=cfg.key, version=second.version, profile_id=pid) is None for pid in profiles)
    assert any(toplist_get(config_key=cfg.key, version=first.version, profile_id=pid) for pid in profiles)
    assert live_version(cfg.key) == first.version
    assert not _build_threads(), "the background computation of the lists stopped with the training"


@pytest.mark.django_db
def test_a_failure_computing_the_lists_rejects_the_version_and_keeps_the_live_one(trained, client_public, monkeypatch):
    from recommenders.services import promotion

    cfg, first = trained
    send(client_public, view("v0", "shoe-1", n=900, days_ago=0.01))

    def broken(*args, **kwargs):
        raise MemoryError("no room for the scores")

    monkeypatch.setattr(promotion, "gate", lambda version: (True, "passes (test)"))
    monkeypatch.setattr(promotion, "recommend_many", broken)
    second = model_train(config_id=cfg.pk)
    assert second.status == "rejected" and "publishing failed" in second.reason and "MemoryError" in second.reason
    assert live_version(cfg.key) == first.version
    assert not _build_threads()
