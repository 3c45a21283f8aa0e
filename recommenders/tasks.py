"""Celery tasks of the recommenders app: they take ids, call one service, own their retry policy."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from recommenders.models import RecommenderConfig
from recommenders.services.health import health_check
from recommenders.services.training import model_train


@shared_task(
    name="recommenders.train",
    acks_late=True,
    autoretry_for=(OperationalError,),
    max_retries=2,
    retry_backoff=60,
    retry_jitter=True,
)
def train_task(config_id: int, force: bool = False) -> dict:
    """Train, evaluate, promote and publish one configuration. Idempotent: equal inputs are a no-op,
    and a second run while one is going returns at once."""
    result = model_train(config_id=config_id, force=force)
    return {"config": result.config_key, "version": result.version, "status": result.status, "reason": result.reason}


@shared_task(name="recommenders.train_all", acks_late=True, autoretry_for=(OperationalError,), max_retries=2)
def train_all_task() -> list[int]:
    """Nightly (beat): queue one training per configuration (each its own task, so they spread over
    workers and one failure does not stop the others)."""
    ids = list(RecommenderConfig.objects.order_by("pk").values_list("pk", flat=True))
    for config_id in ids:
        train_task.delay(config_id)
    return ids


@shared_task(name="recommenders.health_check", acks_late=True, autoretry_for=(OperationalError,), max_retries=2)
def health_check_task() -> dict:
    """Every half hour (beat): online CTR, drift and staleness of each live model; alerts and retrains."""
    return health_check()


@shared_task(name="recommenders.visitors_warm", acks_late=True, autoretry_for=(OperationalError,), max_retries=2)
def visitors_warm_task(active_days: int) -> int:
    """After a version goes live: the visitor cache entries of the recently active visitors (their
    precomputed lists were just published), so their first cached answer needs no database read."""
    from recommenders.serving.visitors import visitors_warm

    return visitors_warm(active_days=active_days)
