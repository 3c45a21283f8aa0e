"""Celery tasks of the experiments app: the minute's roll-up, and a full recompute on demand."""

from celery import shared_task


@shared_task(name="experiments.rollup", acks_late=True, autoretry_for=(Exception,), max_retries=3, retry_backoff=True)
def experiments_rollup_task() -> dict[str, int]:
    """Idempotent: each experiment reads from its stored high-water marks, under a row lock."""
    from experiments.services.rollup import experiments_refresh

    return experiments_refresh()


@shared_task(
    name="experiments.recompute", acks_late=True, autoretry_for=(Exception,), max_retries=3, retry_backoff=True
)
def experiment_recompute_task(experiment_id: int) -> int:
    from experiments.models import Experiment
    from experiments.services.rollup import experiment_recompute

    if not Experiment.objects.filter(pk=experiment_id).exists():
        return 0
    return experiment_recompute(experiment_id=experiment_id).units_touched
