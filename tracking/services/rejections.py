"""Counting refused events per day, source and reason, for the admin."""

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tracking.models import IngestRejection, Source


def rejection_count(*, source: Source | None, reason: str, count: int = 1) -> None:
    day = timezone.now().date()
    lookup = {"day": day, "source": source, "reason": reason[:64]}
    if IngestRejection.objects.filter(**lookup).update(count=F("count") + count):
        return
    try:
        with transaction.atomic():
            IngestRejection.objects.create(count=count, **lookup)
    except IntegrityError:
        IngestRejection.objects.filter(**lookup).update(count=F("count") + count)
