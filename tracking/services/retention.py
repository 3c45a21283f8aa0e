"""Retention: purge a source's raw events past their age, in small batches, keeping the aggregates."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction

from tracking.models import Event

PURGE_BATCH = 5000


def events_purge(*, source_id: int, older_than: datetime, batch: int = PURGE_BATCH) -> int:
    """Delete the source's events that happened before `older_than`; returns how many.

    Each batch is its own short transaction on the oldest rows (by id), so ingestion never waits on
    a long lock and a stopped purge resumes where it was. Profiles and their per-type aggregates are
    left as they are: they summarise, they do not need the raw events."""
    table = Event._meta.db_table
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE source_id = %s AND timestamp < %s "
                "ORDER BY id LIMIT %s)",
                [source_id, connection.ops.adapt_datetimefield_value(older_than), batch],
            )
            deleted = cursor.rowcount
        total += deleted
        if deleted < batch:
            return total
