"""Health of live models: staleness (older than the configuration's schedule), online CTR of the
lists served under the live version (impression and click events carry the list's `rec_token`),
and drift of the interaction distribution since training (the share of each weighted event type,
compared with the training's by total variation distance and PSI). Alerts are stored on the live
version (shown in the admin) and trigger a retrain."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from recommenders.models import ModelVersion, RecommendationServed
from recommenders.registry import live_pointer_set
from recommenders.services.matrix import event_type_counts, relevant_types
from tracking.models import Event

# Event types that report a served list was seen / clicked, with `properties.rec_token`.
IMPRESSION_EVENTS = ("recommendation_viewed", "rec_impression", "impression", "product_impression")
CLICK_EVENTS = ("recommendation_clicked", "rec_click", "click", "product_clicked")
CTR_WINDOW = timedelta(hours=24)
MIN_DRIFT_EVENTS = 100


def _tokens(types: tuple[str, ...], start: datetime, end: datetime) -> set[str]:
    values = (
        Event.objects.filter(type__in=types, timestamp__gte=start, timestamp__lt=end, properties__has_key="rec_token")
        .values_list("properties__rec_token", flat=True)
        .distinct()
    )
    return {str(v) for v in values if v}


def _served_of(version: ModelVersion, tokens: set[str]) -> int:
    found = 0
    tokens_list = sorted(tokens)
    for start in range(0, len(tokens_list), 5000):
        chunk = []
        for token in tokens_list[start : start + 5000]:
            try:
                chunk.append(str(uuid.UUID(token)))
            except ValueError:
                continue
        found += RecommendationServed.objects.filter(model_version=version, token__in=chunk).count()
    return found


def ctr_window(version: ModelVersion, start: datetime, end: datetime) -> dict:
    """Clicks / impressions of lists served under `version` in a window. Impressions are the
    impression events when the site sends them, else the lists served."""
    impressions = _served_of(version, _tokens(IMPRESSION_EVENTS, start, end))
    basis = "impression events"
    if not impressions:
        impressions = RecommendationServed.objects.filter(
            model_version=version, served_at__gte=start, served_at__lt=end
        ).count()
        basis = "lists served"
    clicks = _served_of(version, _tokens(CLICK_EVENTS, start, end))
    return {
        "impressions": impressions,
        "clicks": clicks,
        "ctr": round(clicks / impressions, 6) if impressions else None,
        "basis": basis,
    }


def distribution_shift(before: dict[str, int], after: dict[str, int]) -> dict:
    """Total variation distance (0 same .. 1 disjoint) and PSI between two event-type counts."""
    types = sorted(set(before) | set(after))
    total_before, total_after = sum(before.values()), sum(after.values())
    if not total_before or not total_after:
        return {"tv": None, "psi": None}
    eps = 1e-4
    tv, psi = 0.0, 0.0
    for t in types:
        p = before.get(t, 0) / total_before
        q = after.get(t, 0) / total_after
        tv += abs(p - q)
        p_, q_ = max(p, eps), max(q, eps)
        psi += (q_ - p_) * math.log(q_ / p_)
    return {"tv": round(tv / 2, 6), "psi": round(psi, 6)}


def version_health(version: ModelVersion, *, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    config = version.config
    alerts: list[str] = []
    reference = version.published_at or version.trained_at
    age_hours = (now - version.trained_at).total_seconds() / 3600
    trained = (version.matrix_stats or {}).get("event_types") or {}
    since = version.trained_through or version.trained_at
    types = list(relevant_types(config))
    after = event_type_counts(types=types, start=since, end=now) if types else {}
    # Old but with nothing new to learn from is not stale: retraining would build the same model.
    stale = age_hours > config.schedule_hours and sum(after.values()) > 0
    if stale:
        alerts.append(
            f"model is {age_hours:.0f} h old (schedule: {config.schedule_hours} h) "
            f"and {sum(after.values())} events came since"
        )

    recent = ctr_window(version, now - CTR_WINDOW, now)
    first = (
        ctr_window(version, reference, min(reference + CTR_WINDOW, now - CTR_WINDOW))
        if (now - reference > 2 * CTR_WINDOW)
        else None
    )
    previous = (
        ModelVersion.objects.filter(config=config, version__lt=version.version, published_at__isnull=False)
        .order_by("-version")
        .first()
    )
    prior_ctr = ((previous.health or {}).get("ctr") or {}).get("recent", {}).get("ctr") if previous else None
    baseline = prior_ctr if prior_ctr is not None else (first or {}).get("ctr")
    minimum = settings.RECOMMENDERS_CTR_MIN_IMPRESSIONS
    if (
        baseline
        and recent["ctr"] is not None
        and recent["impressions"] >= minimum
        and recent["ctr"] < baseline * (1 - settings.RECOMMENDERS_CTR_DROP)
    ):
        alerts.append(f"CTR {recent['ctr']:.2%} over the last 24 h, down from {baseline:.2%}")

    shift = distribution_shift(trained, after) if sum(after.values()) >= MIN_DRIFT_EVENTS else {"tv": None, "psi": None}
    if shift["tv"] is not None and shift["tv"] > settings.RECOMMENDERS_DRIFT_THRESHOLD:
        alerts.append(
            f"event mix shifted since training (total variation {shift['tv']:.2f} > "
            f"{settings.RECOMMENDERS_DRIFT_THRESHOLD:.2f})"
        )
    return {
        "checked_at": now.isoformat(),
        "age_hours": round(age_hours, 2),
        "stale": stale,
        "ctr": {"recent": recent, "first_day": first, "baseline": baseline},
        "drift": {**shift, "events_since": sum(after.values()), "after": after},
        "alerts": alerts,
    }


def health_check(*, now: datetime | None = None) -> dict:
    """Check every live version; store the result on it, retrain where an alert is raised, and put
    the cache's live pointer back in line with the database (e.g. after Redis was down)."""
    from recommenders.services.training import training_enqueue

    report = {}
    for version in ModelVersion.objects.filter(status=ModelVersion.Status.LIVE).select_related("config"):
        health = version_health(version, now=now)
        ModelVersion.objects.filter(pk=version.pk).update(health=health)
        live_pointer_set(config_key=version.config.key, version=version.version)
        if health["alerts"]:
            training_enqueue(config=version.config)
        report[version.config.key] = {"version": version.version, "alerts": health["alerts"]}
    return report
