"""Helpers of the experiments tests: metrics, experiments and events, made the way a client would."""

from __future__ import annotations

from datetime import datetime

from experiments.models import Experiment, Metric
from experiments.services.experiments import VariantIn, experiment_save, experiment_start, metric_create
from tracking.models import Source

AB = [VariantIn("control", is_control=True), VariantIn("treatment", payload={"color": "green"})]


def metric(source: Source, key: str = "purchase", *, kind: str = "conversion", event_types=None, **fields) -> Metric:
    existing = Metric.objects.filter(source=source, key=key).first()
    if existing:
        return existing
    return metric_create(source=source, key=key, kind=kind, event_types=event_types or [key], **fields)


def experiment(
    source: Source,
    key: str = "exp",
    *,
    variants: list[VariantIn] | None = None,
    start: bool = True,
    primary: str = "purchase",
    **data,
) -> Experiment:
    metric(source, primary)
    data.setdefault("name", key)
    created = experiment_save(
        source=source,
        experiment=None,
        data={"key": key, "primary_metric": primary, **data},
        variants=list(variants or AB),
    )
    if start:
        experiment_start(experiment=created)
    created.refresh_from_db()
    return created


def send(client, source: Source, *events: dict) -> None:
    response = client.post(
        "/api/v1/events",
        {"events": list(events)},
        content_type="application/json",
        HTTP_X_WRITE_KEY=source.write_key,
    )
    assert response.status_code == 200, response.json()


def ev(event_type: str, anonymous_id: str, n: int, at: datetime, **extra) -> dict:
    body = {
        "type": event_type,
        "anonymous_id": anonymous_id,
        "message_id": f"{event_type}-{anonymous_id}-{n}",
        "timestamp": at.isoformat(),
    }
    body.update(extra)
    return body


def assignments(client, source: Source, anonymous_id: str, **params) -> dict[str, str]:
    """{experiment key: variant key} the API answers for a visitor."""
    response = client.get(
        "/api/v1/assignments", {"anonymous_id": anonymous_id, **params}, HTTP_X_WRITE_KEY=source.write_key
    )
    assert response.status_code == 200, response.json()
    return {a["experiment"]: a["variant"] for a in response.json()["assignments"]}
