"""Celery task of the ML scores: retrain the churn-risk and RFM models and rewrite the scores (daily, beat)."""

from celery import shared_task
from django.db import OperationalError

from segments.services.scores import scores_train


@shared_task(
    name="segments.train_scores",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def train_scores_task() -> dict:
    """Train both models on the current data; each new version goes live with its scores. Takes no
    arguments: it always trains on everything as of now, and a rerun only makes a fresher version."""
    return scores_train().as_dict()
