"""Celery tasks of the privacy capability (they take ids and call services)."""

from celery import shared_task
from django.db import OperationalError

from privacy.models import SubjectRequest
from privacy.services.retention import retention_purge
from privacy.services.subjects import subject_request_process


@shared_task(
    name="privacy.subject_request_process",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def subject_request_process_task(request_id: str) -> str:
    try:
        return subject_request_process(request_id=request_id).status
    except SubjectRequest.DoesNotExist:
        return "missing"  # withdrawn before it ran; nothing to do


@shared_task(name="privacy.retention_purge", acks_late=True, autoretry_for=(OperationalError,), max_retries=3)
def retention_purge_task() -> dict[str, int]:
    """Nightly (beat): every source with a retention period loses its raw events past that age."""
    return retention_purge()
