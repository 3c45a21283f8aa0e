"""Secret-key API of experiments and metrics: create, validate, change, start, stop, results."""

import pytest

from experiments.models import Experiment

pytestmark = pytest.mark.django_db

AB = [
    {"key": "control", "is_control": True, "payload": {"color": "blue"}},
    {"key": "green", "weight": 1, "payload": {"color": "green"}},
]


def create_metric(client, **body):
    body = {"key": "purchase", "kind": "conversion", "event_types": ["purchase"], **body}
    return client.post("/api/v1/experiment-metrics", body, format="json")


def create(client, **body):
    body = {"key": "button", "name": "Button colour", "primary_metric": "purchase", "variants": AB, **body}
    return client.post("/api/v1/experiments", body, format="json")


def test_marketer_creates_starts_and_stops_an_experiment(client_secret):
    assert create_metric(client_secret).status_code == 201
    response = create(client_secret, hypothesis="Green sells more", baseline=0.1, mde=0.1)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "draft" and [v["key"] for v in body["variants"]] == ["control", "green"]
    assert body["planned_units_per_variant"] > 10_000  # 10% baseline, +10% relative: ~14,700 per variant
    started = client_secret.post("/api/v1/experiments/button/start").json()
    assert started["status"] == "running" and started["started_at"]
    listed = client_secret.get("/api/v1/experiments").json()
    assert [e["key"] for e in listed["results"]] == ["button"]
    results = client_secret.get("/api/v1/experiments/button/results", {"history": "true"}).json()
    assert results["units"] == {"control": 0, "green": 0} and results["history"] == []
    assert client_secret.post("/api/v1/experiments/button/stop").json()["status"] == "stopped"
    again = client_secret.post("/api/v1/experiments/button/start")
    assert again.status_code == 409 and "stopped" in again.json()["message"]


def test_bad_input_is_refused_saying_where(client_secret):
    create_metric(client_secret)
    cases = [
        ({"variants": AB[:1]}, "variants"),
        ({"variants": [{"key": "a"}, {"key": "b"}]}, "control"),
        ({"primary_metric": "nope"}, "primary_metric"),
        ({"traffic": 1.5}, "traffic"),
        ({"targeting": {"weather": ["sunny"]}}, "targeting.weather"),
        ({"targeting": {"country": "FR"}}, "targeting.country"),
        ({"variants": [{**AB[0], "payload": [1]}, AB[1]]}, "payload"),
        ({"key": "has space"}, "key"),
    ]
    for body, where in cases:
        response = create(client_secret, **body)
        assert response.status_code == 400, (body, response.json())
        assert where in response.json()["message"], (body, response.json())
    assert not Experiment.objects.exists()


def test_duplicate_keys_conflict(client_secret):
    create_metric(client_secret)
    assert create_metric(client_secret).status_code == 409
    assert create(client_secret).status_code == 201
    duplicate = create(client_secret)
    assert duplicate.status_code == 409 and "button" in duplicate.json()["message"]


def test_ratio_metric_needs_a_denominator(client_secret):
    response = create_metric(client_secret, key="ctr", kind="ratio", event_types=["rec_click"])
    assert response.status_code == 400 and "denominator_event_types" in response.json()["message"]
    ok = create_metric(
        client_secret, key="ctr", kind="ratio", event_types=["rec_click"], denominator_event_types=["rec_impression"]
    )
    assert ok.status_code == 201


def test_started_experiment_keeps_what_units_were_assigned_under(client_secret):
    create_metric(client_secret)
    create(client_secret, layer="home")
    client_secret.post("/api/v1/experiments/button/start")
    response = client_secret.patch("/api/v1/experiments/button", {"layer": "other"}, format="json")
    assert response.status_code == 409 and "layer" in response.json()["message"]
    more = [*AB, {"key": "red"}]
    assert client_secret.patch("/api/v1/experiments/button", {"variants": more}, format="json").status_code == 409
    reweighted = [{**AB[0], "weight": 3}, AB[1]]
    response = client_secret.patch("/api/v1/experiments/button", {"variants": reweighted}, format="json")
    assert response.status_code == 200
    assert response.json()["variants"][0]["weight"] == 3.0


def test_only_drafts_can_be_deleted(client_secret):
    create_metric(client_secret)
    create(client_secret)
    create(client_secret, key="other")
    client_secret.post("/api/v1/experiments/button/start")
    assert client_secret.delete("/api/v1/experiments/button").status_code == 409
    assert client_secret.delete("/api/v1/experiments/other").status_code == 204
    assert client_secret.get("/api/v1/experiments/other").status_code == 404


def test_a_public_key_cannot_manage_experiments(client_public, client_secret):
    create_metric(client_secret)
    assert create(client_public).status_code in (401, 403)
    assert client_public.get("/api/v1/experiments").status_code in (401, 403)


def test_factorial_experiment_needs_every_variant_to_name_the_same_factors(client_secret):
    create_metric(client_secret)
    cells = [
        {"key": "c", "is_control": True, "factors": {"order": "old", "fresh": "no"}},
        {"key": "o", "factors": {"order": "new", "fresh": "no"}},
        {"key": "f", "factors": {"order": "old"}},
    ]
    response = create(client_secret, kind="factorial", variants=cells)
    assert response.status_code == 400 and "factor" in response.json()["message"]
    cells[2]["factors"]["fresh"] = "yes"
    cells.append({"key": "of", "factors": {"order": "new", "fresh": "yes"}})
    assert create(client_secret, kind="factorial", variants=cells).status_code == 201


def test_experiments_of_another_source_are_invisible(client_secret, client):
    from tests.factories import SourceFactory
    from tracking.services.sources import secret_key_create

    create_metric(client_secret)
    create(client_secret)
    _, other = secret_key_create(source=SourceFactory(), name="other")
    response = client.get("/api/v1/experiments/button", HTTP_AUTHORIZATION=f"Bearer {other}")
    assert response.status_code == 404
