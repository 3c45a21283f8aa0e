"""Admin of recommendations: pages render with metrics next to the baseline, the retrain button
trains, a candidate can be made live by hand, and alerts show on the version list."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from personalization.celery import app as celery_app
from recommenders.models import Collection, CollectionItem, Item, ModelVersion, Placement
from recommenders.registry import registry_forget
from recommenders.services.training import model_train
from tests.recommenders_helpers import config, journeys, media_tmp, send  # noqa: F401


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-admin-123")
    client.force_login(user)
    return client


@pytest.fixture
def eager():
    """Run queued tasks inline, as the embedded mode does."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


@pytest.fixture
def trained(client_public, media_tmp):  # noqa: F811
    registry_forget()
    send(client_public, *journeys(visitors=30))
    cfg = config()
    result = model_train(config_id=cfg.pk)
    yield cfg, ModelVersion.objects.get(config=cfg, version=result.version)
    registry_forget()


@pytest.mark.django_db
def test_every_recommenders_admin_page_renders(staff, trained):
    cfg, version = trained
    item = Item.objects.first()
    collection = Collection.objects.create(key="new-visitors", is_new_visitor_default=True)
    CollectionItem.objects.create(collection=collection, item=item, position=1)
    placement = Placement.objects.create(key="home", config=cfg, fallback_collection=collection)
    for url in [
        "/admin/recommenders/item/",
        f"/admin/recommenders/item/{item.pk}/change/",
        "/admin/recommenders/recommenderconfig/",
        f"/admin/recommenders/recommenderconfig/{cfg.pk}/change/",
        "/admin/recommenders/modelversion/",
        f"/admin/recommenders/modelversion/{version.pk}/change/",
        "/admin/recommenders/placement/",
        f"/admin/recommenders/placement/{placement.pk}/change/",
        "/admin/recommenders/collection/",
        f"/admin/recommenders/collection/{collection.pk}/change/",
        "/admin/recommenders/feedback/",
        "/admin/recommenders/recommendationserved/",
    ]:
        assert staff.get(url).status_code == 200, url


@pytest.mark.django_db
def test_version_page_shows_metrics_next_to_the_popularity_baseline(staff, trained):
    cfg, version = trained
    page = staff.get(f"/admin/recommenders/modelversion/{version.pk}/change/").content.decode()
    assert "Popularity" in page and "ndcg@10" in page
    assert f"{version.metrics['model']['ndcg@10']:.4f}" in page
    config_page = staff.get(f"/admin/recommenders/recommenderconfig/{cfg.pk}/change/").content.decode()
    assert "Metrics history" in config_page and "v1" in config_page


@pytest.mark.django_db
def test_retrain_button_trains_a_new_version(staff, trained, eager, django_capture_on_commit_callbacks):
    cfg, _ = trained
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.get(f"/admin/recommenders/recommenderconfig/{cfg.pk}/train/")
    assert response.status_code == 302
    assert ModelVersion.objects.filter(config=cfg).count() == 2


@pytest.mark.django_db
def test_make_live_button_publishes_a_candidate(staff, trained):
    cfg, live = trained
    candidate = ModelVersion.objects.create(
        config=cfg,
        version=live.version + 1,
        trained_at=live.trained_at,
        metrics={"model": {"ndcg@10": 0.0}},
        artifact=live.artifact,
        status="candidate",
        reason="below live",
    )
    response = staff.get(f"/admin/recommenders/modelversion/{candidate.pk}/make-live/")
    assert response.status_code == 302
    candidate.refresh_from_db()
    assert candidate.status == "live" and "by hand" in candidate.reason


@pytest.mark.django_db
def test_alerts_show_on_the_version_list(staff, trained):
    _cfg, version = trained
    ModelVersion.objects.filter(pk=version.pk).update(
        health={"alerts": ["CTR 1.00% over the last 24 h, down from 3.00%"]}
    )
    page = staff.get("/admin/recommenders/modelversion/").content.decode()
    assert "down from 3.00%" in page
    assert "alert" in staff.get("/admin/recommenders/recommenderconfig/").content.decode()


@pytest.mark.django_db
def test_only_one_collection_and_one_configuration_can_be_the_default():
    from django.core.exceptions import ValidationError

    from recommenders.models import RecommenderConfig

    Collection.objects.create(key="a", is_new_visitor_default=True)
    with pytest.raises(ValidationError, match="already the new-visitor default"):
        Collection(key="b", is_new_visitor_default=True).full_clean()
    config()
    with pytest.raises(ValidationError, match="already the default"):
        RecommenderConfig(key="other", is_default=True).full_clean()


@pytest.mark.django_db
def test_event_weights_must_be_numbers_per_event_type():
    from django.core.exceptions import ValidationError

    from recommenders.models import RecommenderConfig

    with pytest.raises(ValidationError, match="event_weights"):
        RecommenderConfig(key="bad", event_weights={"purchase": "eight"}).full_clean()
    with pytest.raises(ValidationError, match="half_life_days"):
        RecommenderConfig(key="bad2", half_life_days=0).full_clean()
