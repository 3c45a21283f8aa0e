"""What collection announces to the other apps once events are durably stored.

`events_stored` is sent after the transaction that stored the events (never for duplicates or
suppressed events), with ``source_id`` and ``events``: a list of :class:`StoredEvent`. Receivers
run in the request, so they must be quick: enqueue a Celery task (with
``transaction.on_commit``), mark a cache stale, bump a counter. A receiver that raises is logged
and does not fail the ingestion (the events are stored already).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.dispatch import Signal

logger = logging.getLogger(__name__)

events_stored = Signal()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    profile_id: int
    type: str
    timestamp: datetime
    properties: dict


def events_announce(*, source_id: int, events: list[StoredEvent]) -> None:
    if not events:
        return
    for receiver, result in events_stored.send_robust(sender=StoredEvent, source_id=source_id, events=events):
        if isinstance(result, Exception):
            logger.error("events_stored receiver %r failed", receiver, exc_info=result)
