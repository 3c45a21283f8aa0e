"""Assignment: deterministic and sticky variants, layers, targeting, consent, exposure once, merges."""

import subprocess
import sys
from collections import Counter

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from experiments.bucketing import SLOTS, layer_slot, slot_range_allocate, variant_index
from experiments.models import Assignment, Experiment, Exposure
from experiments.selectors import running_forget, running_payloads
from experiments.services.assignment import experiment_variant_for
from experiments.services.experiments import VariantIn
from tests.experiments_support import assignments, ev, experiment, send
from tests.factories import SourceFactory
from tracking.models import Profile


def test_variant_is_a_pure_function_of_salt_and_unit_in_any_process():
    units = [f"unit-{i}" for i in range(300)]
    here = [variant_index(salt="s1", unit=u, weights=[1, 1, 2]) for u in units]
    code = (
        "from experiments.bucketing import variant_index;"
        f"print([variant_index(salt='s1', unit=u, weights=[1, 1, 2]) for u in {units!r}])"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    assert there.stdout.strip() == str(here)
    assert set(here) == {0, 1, 2}


def test_variants_split_units_by_weight_and_salts_are_independent():
    counts = Counter(variant_index(salt="a", unit=str(i), weights=[1, 3]) for i in range(20_000))
    assert abs(counts[1] / 20_000 - 0.75) < 0.015
    same = sum(
        variant_index(salt="a", unit=str(i), weights=[1, 1]) == variant_index(salt="b", unit=str(i), weights=[1, 1])
        for i in range(20_000)
    )
    assert abs(same / 20_000 - 0.5) < 0.02  # another experiment's split is not correlated with this one
    assert variant_index(salt="a", unit="x", weights=[0, 0]) is None


def test_slot_ranges_of_a_layer_never_overlap():
    assert slot_range_allocate(size=5000, taken=[]) == 0
    assert slot_range_allocate(size=3000, taken=[(0, 5000)]) == 5000
    assert slot_range_allocate(size=3000, taken=[(0, 5000), (5000, 8000)]) is None
    assert slot_range_allocate(size=2000, taken=[(0, 5000), (5000, 8000)]) == 8000
    assert slot_range_allocate(size=6000, taken=[(0, 5000)], prefer=0) is None
    assert 0 <= layer_slot(layer="home", salt="x", unit="u") < SLOTS


@pytest.mark.django_db
def test_api_gives_a_visitor_the_same_variant_every_time_and_after_a_restart(client, source):
    experiment(source, "button")
    first = {f"v{i}": assignments(client, source, f"v{i}")["button"] for i in range(40)}
    assert set(first.values()) == {"control", "treatment"}
    for i in range(40):
        assert assignments(client, source, f"v{i}")["button"] == first[f"v{i}"]
    # A fresh process with no stored assignment draws the same variants from the hash alone.
    Assignment.objects.all().delete()
    Exposure.objects.all().delete()
    running_forget()
    assert {f"v{i}": assignments(client, source, f"v{i}")["button"] for i in range(40)} == first


@pytest.mark.django_db
def test_assignment_is_sticky_when_weights_change_and_only_new_units_follow(client_secret, client, source):
    experiment(source, "button")
    before = {f"v{i}": assignments(client, source, f"v{i}")["button"] for i in range(60)}
    response = client_secret.patch(
        "/api/v1/experiments/button",
        {"variants": [{"key": "control", "is_control": True, "weight": 1}, {"key": "treatment", "weight": 0}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert {v["key"]: v["weight"] for v in response.json()["variants"]} == {"control": 1.0, "treatment": 0.0}
    assert response.json()["variants"][1]["payload"] == {"color": "green"}  # left out of the change: kept
    assert {f"v{i}": assignments(client, source, f"v{i}")["button"] for i in range(60)} == before
    assert {assignments(client, source, f"new{i}")["button"] for i in range(30)} == {"control"}


@pytest.mark.django_db
def test_experiments_in_one_layer_never_share_a_unit(client, client_secret, source):
    experiment(source, "hero", layer="home", traffic=0.5)
    experiment(source, "banner", layer="home", traffic=0.5)
    seen = [assignments(client, source, f"v{i}") for i in range(300)]
    assert all(len(a) == 1 for a in seen)  # 50% + 50% of the layer: each unit in exactly one
    hero = sum("hero" in a for a in seen)
    assert 100 < hero < 200
    third = experiment(source, "promo", layer="home", traffic=0.2, start=False)
    response = client_secret.post(f"/api/v1/experiments/{third.key}/start")
    assert response.status_code == 409
    assert response.json()["error"] == "layer_full" and "home" in response.json()["message"]


@pytest.mark.django_db
def test_a_unit_keeps_its_layer_experiment_when_the_slot_ranges_move(client, client_secret, source):
    experiment(source, "hero", layer="home", traffic=1.0)
    assert set(assignments(client, source, "v1")) == {"hero"}
    assert client_secret.patch("/api/v1/experiments/hero", {"traffic": 0.01}, format="json").status_code == 200
    experiment(source, "banner", layer="home", traffic=0.99)
    # v1 is still in hero (sticky), so banner, of the same layer, never takes it.
    assert set(assignments(client, source, "v1")) == {"hero"}


@pytest.mark.django_db
def test_targeting_by_device_country_and_traffic_source(client, source):
    experiment(source, "mobile-fr", targeting={"device_type": ["mobile"], "country": ["FR"]})
    assert assignments(client, source, "v1", device_type="desktop", country="FR") == {}
    assert "mobile-fr" in assignments(client, source, "v2", device_type="mobile", country="fr")
    # Without context in the request, the profile's last known context counts.
    send(
        client,
        source,
        ev("page_view", "v3", 1, timezone.now(), context={"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"}),
    )
    profile = Profile.objects.get(identities__value="v3")
    assert profile.last_device_type == "mobile"
    assert assignments(client, source, "v3") == {}  # no country known
    experiment(source, "search-only", targeting={"traffic_source": ["search"]})
    assert "search-only" in assignments(client, source, "v4", traffic_source="search")
    assert "search-only" not in assignments(client, source, "v5", traffic_source="email")


@pytest.mark.django_db
def test_opt_in_visitor_without_consent_gets_no_variant_and_nothing_is_stored(db):
    source = SourceFactory(consent_regime="opt_in")
    experiment(source, "button")
    client = APIClient()
    client.credentials(HTTP_X_WRITE_KEY=source.write_key)
    assert assignments(client, source, "v1") == {}
    assert not Profile.objects.exists() and not Assignment.objects.exists()
    response = client.post("/api/v1/consent", {"anonymous_id": "v1", "purposes": {"analytics": True}}, format="json")
    assert response.status_code == 200
    assert set(assignments(client, source, "v1")) == {"button"}
    client.post("/api/v1/consent", {"anonymous_id": "v1", "purposes": {"analytics": False}}, format="json")
    assert assignments(client, source, "v1") == {}  # withdrawal takes the visitor out at once


@pytest.mark.django_db
def test_experiment_can_require_another_consent_purpose(client, source):
    experiment(source, "reco", consent_purpose="personalization")
    assert set(assignments(client, source, "v1")) == {"reco"}  # opt-out regime: allowed until refused
    response = client.post(
        "/api/v1/consent",
        {"anonymous_id": "v1", "purposes": {"personalization": False}},
        content_type="application/json",
        HTTP_X_WRITE_KEY=source.write_key,
    )
    assert response.status_code == 200
    assert assignments(client, source, "v1") == {}


@pytest.mark.django_db
def test_exposure_is_logged_once_at_first_use(client, source):
    exp = experiment(source, "button")
    assignments(client, source, "v1")
    first = Exposure.objects.get(experiment=exp)
    assignments(client, source, "v1")
    assignments(client, source, "v1")
    assert Exposure.objects.filter(experiment=exp).count() == 1
    assert Exposure.objects.get(experiment=exp).exposed_at == first.exposed_at
    assert first.variant_id == Assignment.objects.get(experiment=exp).variant_id


@pytest.mark.django_db
def test_client_side_exposure_is_logged_when_the_page_says_so(client, source):
    exp = experiment(source, "button")
    assigned = assignments(client, source, "v1", expose="false")
    assert Assignment.objects.filter(experiment=exp).count() == 1 and not Exposure.objects.exists()
    headers = {"HTTP_X_WRITE_KEY": source.write_key}
    body = {"anonymous_id": "v1", "experiment": "button"}
    first = client.post("/api/v1/exposures", body, content_type="application/json", **headers)
    assert first.status_code == 200 and first.json() == {
        "experiment": "button",
        "variant": assigned["button"],
        "logged": True,
    }
    again = client.post("/api/v1/exposures", body, content_type="application/json", **headers)
    assert again.json()["logged"] is False
    assert Exposure.objects.filter(experiment=exp).count() == 1
    missing = client.post(
        "/api/v1/exposures", {"anonymous_id": "v1", "experiment": "nope"}, content_type="application/json", **headers
    )
    assert missing.status_code == 404 and "nope" in missing.json()["message"]


@pytest.mark.django_db
def test_identified_visitor_keeps_the_variant_they_had_anonymously(client, source):
    exp = experiment(source, "button")
    now = timezone.now()
    # A known user, seen before on another device that never took part in the experiment.
    send(client, source, ev("identify", "laptop", 1, now, user_id="u1"))
    # On the phone, still anonymous, the visitor is assigned; the user's profile has no assignment.
    phone = "phone"
    variant = assignments(client, source, phone)["button"]
    assert not Assignment.objects.filter(profile__identities__value="laptop").exists()
    send(client, source, ev("identify", phone, 2, now, user_id="u1"))
    assert Profile.objects.filter(identities__value__in=["laptop", phone]).distinct().count() == 1
    merged = Profile.objects.get(identities__value="laptop")
    assert Assignment.objects.get(experiment=exp, profile=merged).variant.key == variant
    assert assignments(client, source, "laptop")["button"] == variant
    assert Exposure.objects.filter(experiment=exp).count() == 1


@pytest.mark.django_db
def test_merged_profile_keeps_its_own_assignment_when_both_had_one(client, source):
    exp = experiment(source, "button")
    now = timezone.now()
    send(client, source, ev("identify", "laptop", 1, now, user_id="u1"))
    laptop = assignments(client, source, "laptop")["button"]
    assignments(client, source, "phone")
    send(client, source, ev("identify", "phone", 2, now, user_id="u1"))
    merged = Profile.objects.get(identities__value="laptop")
    assert Assignment.objects.filter(experiment=exp).count() == 1
    assert Exposure.objects.filter(experiment=exp).count() == 1
    assert Assignment.objects.get(profile=merged).variant.key == laptop
    assert assignments(client, source, "phone")["button"] == laptop


@pytest.mark.django_db
def test_other_apps_get_the_variant_and_its_recommender_payload(client, source):
    experiment(
        source,
        "reco",
        variants=[
            VariantIn("control", is_control=True, payload={"recommender_config": "popular"}),
            VariantIn("als", payload={"recommender_config": "als-v2"}),
        ],
    )
    experiment(source, "button")
    send(client, source, ev("page_view", "v1", 1, timezone.now()))
    profile = Profile.objects.get(identities__value="v1")
    found = experiment_variant_for(profile_id=profile.pk, kind="recommender_config", source_id=source.pk)
    assert found is not None
    spec, variant = found
    assert spec.key == "reco" and variant.payload["recommender_config"] in {"popular", "als-v2"}
    assert running_payloads(profile_id=profile.pk, payload_key="recommender_config") == [
        ("reco", variant.key, variant.payload["recommender_config"])
    ]
    assert assignments(client, source, "v1")["reco"] == variant.key
    assert experiment_variant_for(profile_id=profile.pk, experiment_key="nope", source_id=source.pk) is None


@pytest.mark.django_db
def test_paused_and_stopped_experiments_hand_out_nothing(client, client_secret, source):
    experiment(source, "button")
    assert "button" in assignments(client, source, "v1")
    assert client_secret.post("/api/v1/experiments/button/pause").json()["status"] == "paused"
    assert assignments(client, source, "v1") == {}
    assert client_secret.post("/api/v1/experiments/button/start").json()["status"] == "running"
    assert "button" in assignments(client, source, "v1")
    assert client_secret.post("/api/v1/experiments/button/stop").json()["status"] == "stopped"
    assert assignments(client, source, "v1") == {}
    assert Experiment.objects.get(key="button").stopped_at is not None


@pytest.mark.django_db
def test_assignments_need_an_anonymous_id_and_a_key(client, source):
    response = client.get("/api/v1/assignments", HTTP_X_WRITE_KEY=source.write_key)
    assert response.status_code == 400 and "anonymous_id" in response.json()["message"]
    assert client.get("/api/v1/assignments", {"anonymous_id": "v1"}).status_code in (401, 403)
    too_long = client.get("/api/v1/assignments", {"anonymous_id": "x" * 200}, HTTP_X_WRITE_KEY=source.write_key)
    assert too_long.status_code == 400


@pytest.mark.django_db
def test_returning_visitor_costs_a_few_queries_whatever_the_number_of_experiments(
    client, source, django_assert_max_num_queries
):
    for i in range(8):
        experiment(source, f"exp{i}")
    assignments(client, source, "v1")
    with django_assert_max_num_queries(1):  # the visitor with their assignments and consent, at once
        assert len(assignments(client, source, "v1")) == 8


@pytest.mark.django_db
def test_targeting_by_segment_admits_only_members(client, source):
    from segments.models import Segment, SegmentMembership

    experiment(source, "vip-offer", targeting={"segments": ["vip"]})
    now = timezone.now()
    send(client, source, ev("page_view", "member", 1, now), ev("page_view", "outsider", 2, now))
    vip = Segment.objects.create(key="vip", name="VIP", rule={"all": []}, status=Segment.Status.ACTIVE)
    SegmentMembership.objects.create(
        segment=vip, profile=Profile.objects.get(identities__value="member"), entered_at=now
    )
    assert set(assignments(client, source, "member")) == {"vip-offer"}
    assert assignments(client, source, "outsider") == {}
