"""Recommender configurations A/B tested: the recommendations API consults running recommender
experiments by itself, serves each unit its variant's configuration, and records the variant with
the list, so CTR per variant comes from the impression and click events that carry the token back."""

from __future__ import annotations

import pytest

from experiments.models import Assignment, Exposure
from experiments.services.experiments import VariantIn
from recommenders.models import RecommendationServed, RecommenderConfig
from recommenders.registry import registry_forget
from recommenders.services.training import model_train
from recommenders.serving.placements import placements_forget
from recommenders.serving.served import served_flush
from tests.experiments_support import experiment
from tests.test_recommenders_serving import _fresh, catalogue, journeys, send  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.django_db


def _train(key: str, algorithm: str, *, default: bool) -> int:
    config = RecommenderConfig.objects.create(key=key, name=key, algorithm=algorithm, is_default=default)
    result = model_train(config_id=config.pk)
    assert result.status == "live", result.reason
    return result.version


@pytest.fixture
def two_configs(client_public):
    catalogue()
    send(client_public, *journeys())
    _train("default", "ease", default=True)
    _train("popular", "popularity", default=False)
    registry_forget()
    placements_forget()


def test_each_unit_is_served_its_variants_configuration_and_the_list_records_the_variant(
    client_public, source, two_configs
):
    experiment(
        source,
        "rec-ab",
        variants=[
            VariantIn("control", is_control=True, payload={"recommender_config": "default"}),
            VariantIn("popular", payload={"recommender_config": "popular"}),
        ],
    )
    served_by: dict[str, set[str]] = {}
    for v in range(30):
        body = client_public.get("/api/v1/recommendations", {"anonymous_id": f"v{v}", "n": 4}).json()
        experiment_key, _, variant = body["variant"].partition(":")
        assert experiment_key == "rec-ab" and variant in {"control", "popular"}
        served_by.setdefault(variant, set()).update(item["algorithm"] for item in body["items"])
        # Sticky: the same visitor asks again and stays in their variant.
        again = client_public.get("/api/v1/recommendations", {"anonymous_id": f"v{v}", "n": 4}).json()
        assert again["variant"] == body["variant"]
    assert set(served_by) == {"control", "popular"}  # 30 visitors split 50/50 land in both
    assert "popularity" not in served_by["control"] and served_by["popular"] <= {"popularity", "trending"}
    assert Assignment.objects.count() == 30 and Exposure.objects.count() == 30  # logged once per unit
    served_flush()
    variants = set(RecommendationServed.objects.values_list("variant", flat=True))
    assert variants == {"rec-ab:control", "rec-ab:popular"}


def test_without_a_recommender_experiment_lists_carry_no_variant(client_public, source, two_configs):
    experiment(source, "button-colour")  # running, but its payloads name no recommender configuration
    body = client_public.get("/api/v1/recommendations", {"anonymous_id": "v1", "n": 4}).json()
    assert body["variant"] == "" and body["items"]
    assert not Assignment.objects.filter(experiment__key="button-colour").exists()
