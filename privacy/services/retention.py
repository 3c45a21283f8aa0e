"""Retention: apply each source's retention period to its raw events."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from tracking.models import Source
from tracking.services.retention import events_purge

logger = logging.getLogger(__name__)


def retention_purge() -> dict[str, int]:
    """Purge every source's raw events older than its retention period; returns counts per source."""
    now = timezone.now()
    purged: dict[str, int] = {}
    for source in Source.objects.filter(retention_days__isnull=False).order_by("pk"):
        purged[source.name] = events_purge(source_id=source.pk, older_than=now - timedelta(days=source.retention_days))
        logger.info("retention: purged %d events of %s", purged[source.name], source.name)
    return purged
