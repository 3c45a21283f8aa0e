"""Segment membership: the batch recompute (set-based, versioned) and the real-time refresh of one profile.

Both run the Q from :func:`segments.compiler.rule_compile`; only the surrounding statement differs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from segments.compiler import RuleCycle, rule_compile
from segments.models import Segment, SegmentMembership, SegmentMembershipChange, SegmentSizeSnapshot
from segments.prepared import execute_prepared
from segments.services.realtime import (
    ActiveSegment,
    active_segments,
    profile_segments_matches_sql,
    profile_segments_state,
)
from segments.signals import membership_changed
from tracking.models import Profile

logger = logging.getLogger(__name__)

ENTERED, LEFT = SegmentMembershipChange.Kind.ENTERED, SegmentMembershipChange.Kind.LEFT
BATCH, REALTIME = SegmentMembershipChange.Via.BATCH, SegmentMembershipChange.Via.REALTIME


@dataclass(frozen=True)
class RecomputeResult:
    segment_id: int
    version: int
    size: int = 0
    entered: int = 0
    left: int = 0
    skipped: str = ""  # why nothing was done ("stale", "missing", "cycle"), else empty
    seconds: float = 0.0


@dataclass(frozen=True)
class Change:
    segment_id: int
    segment_key: str
    profile_id: int
    kind: str


# -- batch -------------------------------------------------------------------------------------------


def segment_recompute(*, segment_id: int, version: int | None = None, now: datetime | None = None) -> RecomputeResult:
    """Recompute a segment's members in the database: the matching profiles go to a temporary table
    (one INSERT..SELECT of the compiled rule), then one statement adds the entrants and one deletes
    the leavers, each recording its history rows in the same statement (Postgres) or transaction.

    Safe twice and concurrently: one run per segment at a time (advisory lock), a run queued for a
    version older than the one already computed does nothing, and a second run finds nothing to
    change. Real-time changes made while the recompute runs win over its (older) snapshot.
    """
    started = time.perf_counter()
    stamp = timezone.now()
    now = now or stamp
    with transaction.atomic():
        _recompute_lock(segment_id)
        segment = Segment.objects.filter(pk=segment_id).first()  # read after the lock: the latest rule
        if segment is None:
            return RecomputeResult(segment_id, version or 0, skipped="missing")
        if version is not None and segment.computed_version > version:
            return RecomputeResult(segment_id, version, skipped="stale")
        try:
            q = rule_compile(segment.rule, now=now)
        except RuleCycle:
            logger.warning("segment %s refers to itself; not recomputed", segment.key)
            return RecomputeResult(segment_id, segment.version, skipped="cycle")
        matching_sql, matching_params = Profile.objects.filter(q).values("id").query.sql_with_params()
        entered, left = _apply(segment.pk, matching_sql, list(matching_params), stamp)
        size = SegmentMembership.objects.filter(segment_id=segment.pk).count()
        # Never lowers computed_version: the rule may have changed (and been recomputed) meanwhile.
        Segment.objects.filter(pk=segment.pk, computed_version__lte=segment.version).update(
            computed_version=segment.version, member_count=size, last_computed_at=stamp
        )
        SegmentSizeSnapshot.objects.create(segment_id=segment.pk, at=stamp, size=size)
        if (entered or left) and membership_changed.has_listeners():
            transaction.on_commit(lambda: _announce_batch(segment.pk, stamp))
    return RecomputeResult(
        segment_id, segment.version, size=size, entered=entered, left=left, seconds=time.perf_counter() - started
    )


def work_mem() -> str:
    return settings.SEGMENTS_RECOMPUTE_WORK_MEM


RECOMPUTE_LOCK_SPACE = 0x5E6  # first key of the two-key advisory locks of segment recomputes


def _recompute_lock(segment_id: int) -> None:
    """One recompute of a segment at a time (a transaction-scoped advisory lock, Postgres), and the
    segment row locked FOR KEY SHARE: it cannot be deleted under the recompute (memberships have no
    database foreign key, see SegmentMembership), while editing it (an UPDATE of non-key columns) and
    real-time refreshes do not wait for a long recompute. SQLite lets one writer in anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s::int4)", [RECOMPUTE_LOCK_SPACE, segment_id])
            cursor.execute(f"SELECT 1 FROM {Segment._meta.db_table} WHERE id = %s FOR KEY SHARE", [segment_id])


def _apply(segment_id: int, matching_sql: str, matching_params: list, stamp: datetime) -> tuple[int, int]:
    members = SegmentMembership._meta.db_table
    changes = SegmentMembershipChange._meta.db_table
    temp = f"segment_match_{segment_id}"
    stamp = connection.ops.adapt_datetimefield_value(stamp)  # raw SQL: as Django stores it (SQLite: text)
    postgres = connection.vendor == "postgresql"
    # Not an entrant if a real-time refresh decided about it after this run began.
    entrant_where = (
        f"NOT EXISTS (SELECT 1 FROM {members} m WHERE m.segment_id = %s AND m.profile_id = t.profile_id) "
        f"AND NOT EXISTS (SELECT 1 FROM {changes} c WHERE c.segment_id = %s AND c.profile_id = t.profile_id "
        "AND c.at >= %s)"
    )
    entrant_params = [segment_id, segment_id, stamp]
    # Not a leaver if it entered (in real time) after this run began.
    leaver_where = (
        f"segment_id = %s AND entered_at < %s AND NOT EXISTS (SELECT 1 FROM {temp} t "
        f"WHERE t.profile_id = {members}.profile_id)"
    )
    leaver_params = [segment_id, stamp]
    with connection.cursor() as cursor:
        if postgres:
            # A bulk job: room to hash-aggregate a million profiles in memory instead of spilling to disk
            # (for this transaction only), and no JIT compilation, which costs seconds and saves little here.
            cursor.execute("SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)", [work_mem()])
        cursor.execute(f"DROP TABLE IF EXISTS {temp}")
        cursor.execute(f"CREATE TEMPORARY TABLE {temp} (profile_id bigint PRIMARY KEY)")
        try:
            cursor.execute(f"INSERT INTO {temp} (profile_id) {matching_sql}", matching_params)
            if postgres:
                cursor.execute(f"ANALYZE {temp}")
                cursor.execute(
                    f"WITH ins AS (INSERT INTO {members} (segment_id, profile_id, entered_at) "
                    f"SELECT %s, t.profile_id, %s FROM {temp} t WHERE {entrant_where} "
                    "ON CONFLICT (segment_id, profile_id) DO NOTHING RETURNING profile_id) "
                    f"INSERT INTO {changes} (segment_id, profile_id, kind, at, via) "
                    "SELECT %s, profile_id, %s, %s, %s FROM ins",
                    [segment_id, stamp, *entrant_params, segment_id, ENTERED, stamp, BATCH],
                )
                entered = cursor.rowcount
                cursor.execute(
                    f"WITH del AS (DELETE FROM {members} WHERE {leaver_where} RETURNING profile_id) "
                    f"INSERT INTO {changes} (segment_id, profile_id, kind, at, via) "
                    "SELECT %s, profile_id, %s, %s, %s FROM del",
                    [*leaver_params, segment_id, LEFT, stamp, BATCH],
                )
                left = cursor.rowcount
            else:
                # SQLite lets one writer in at a time, so the history and the change, two statements
                # in one transaction, cannot be interleaved with another writer.
                cursor.execute(
                    f"INSERT INTO {changes} (segment_id, profile_id, kind, at, via) "
                    f"SELECT %s, t.profile_id, %s, %s, %s FROM {temp} t WHERE {entrant_where}",
                    [segment_id, ENTERED, stamp, BATCH, *entrant_params],
                )
                entered = cursor.rowcount
                cursor.execute(
                    f"INSERT INTO {members} (segment_id, profile_id, entered_at) "
                    f"SELECT %s, t.profile_id, %s FROM {temp} t WHERE t.profile_id IN (SELECT profile_id FROM "
                    f"{changes} WHERE segment_id = %s AND at = %s AND kind = %s AND via = %s)",
                    [segment_id, stamp, segment_id, stamp, ENTERED, BATCH],
                )
                cursor.execute(
                    f"INSERT INTO {changes} (segment_id, profile_id, kind, at, via) "
                    f"SELECT %s, profile_id, %s, %s, %s FROM {members} WHERE {leaver_where}",
                    [segment_id, LEFT, stamp, BATCH, *leaver_params],
                )
                left = cursor.rowcount
                cursor.execute(f"DELETE FROM {members} WHERE {leaver_where}", leaver_params)
        finally:
            cursor.execute(f"DROP TABLE IF EXISTS {temp}")
    return entered, left


def _announce_batch(segment_id: int, stamp: datetime) -> None:
    rows = (
        SegmentMembershipChange.objects.filter(segment_id=segment_id, at=stamp, via=BATCH)
        .values_list("profile_id", "kind")
        .iterator(chunk_size=5000)
    )
    for profile_id, kind in rows:
        membership_changed.send_robust(
            sender=Segment, segment_id=segment_id, profile_id=profile_id, kind=kind, via=BATCH
        )


def segments_recompute_all() -> list[int]:
    """Queue a recompute of every active segment at its current version (beat, every 15 minutes):
    time-based rules ("not seen for 30 days") change without any event."""
    from segments.tasks import segment_recompute_task

    queued = []
    for segment_id, version in Segment.objects.filter(status=Segment.Status.ACTIVE).values_list("id", "version"):
        segment_recompute_task.delay(segment_id, version)
        queued.append(segment_id)
    return queued


# -- real time ---------------------------------------------------------------------------------------


def profile_segments_refresh(
    *, profile_id: int, event_types: list[str] | None = None, now: datetime | None = None
) -> list[Change]:
    """Re-evaluate the active segments one profile's new events can change (all of them when
    `event_types` is None) and record entering and leaving. Returns the changes."""
    wanted = set(event_types) if event_types is not None else None
    segments = [s for s in active_segments() if s.deps.affected_by(wanted)]
    if not segments:
        return []
    if connection.vendor == "postgresql":
        return _refresh_postgres(profile_id, segments, now or timezone.now())
    matches, current = profile_segments_state(profile_id=profile_id, segments=segments, now=now)
    if not matches:
        return []
    by_id = {s.id: s for s in segments}
    changes: list[Change] = []
    stamp = timezone.now()
    members = SegmentMembership._meta.db_table
    segments_table = Segment._meta.db_table
    with transaction.atomic():
        for segment_id, matched in matches.items():
            if matched and segment_id not in current:
                with connection.cursor() as cursor:
                    cursor.execute(
                        # Guarded: the list of active segments may be a moment old (deleted or paused since).
                        f"INSERT INTO {members} (segment_id, profile_id, entered_at) SELECT %s, %s, %s "
                        f"WHERE EXISTS (SELECT 1 FROM {segments_table} WHERE id = %s AND status = %s) "
                        "ON CONFLICT (segment_id, profile_id) DO NOTHING",
                        [
                            segment_id,
                            profile_id,
                            connection.ops.adapt_datetimefield_value(stamp),
                            segment_id,
                            Segment.Status.ACTIVE,
                        ],
                    )
                    done = cursor.rowcount == 1
                kind = ENTERED
            elif not matched and segment_id in current:
                done = SegmentMembership.objects.filter(segment_id=segment_id, profile_id=profile_id).delete()[0] > 0
                kind = LEFT
            else:
                continue
            if done:  # else a concurrent refresh or recompute recorded it already
                SegmentMembershipChange.objects.create(
                    segment_id=segment_id, profile_id=profile_id, kind=kind, at=stamp, via=REALTIME
                )
                changes.append(Change(segment_id, by_id[segment_id].key, profile_id, kind))
        if changes:
            transaction.on_commit(lambda: _announce(changes))
    return changes


def _refresh_postgres(profile_id: int, segments: list[ActiveSegment], now: datetime) -> list[Change]:
    """The real-time refresh in one statement, so one round trip (and no transaction of its own: one
    statement is atomic): evaluate the compiled rules for the profile, insert the entrants, delete the
    leavers, and write the history rows of both, returning what changed.

    The same guards as the batch: entrants only into segments still active (the list of active
    segments may be a moment old), each locked FOR KEY SHARE so it cannot be deleted under the insert;
    ON CONFLICT and DELETE..RETURNING let a concurrent refresh or recompute record a change once. A
    profile that is gone matches nothing and no segment (NULL), so nothing changes."""
    matches_sql, params, ids = profile_segments_matches_sql(profile_id=profile_id, segments=segments, now=now)
    if not ids:
        return []
    members, changes, segments_table = (
        SegmentMembership._meta.db_table,
        SegmentMembershipChange._meta.db_table,
        Segment._meta.db_table,
    )
    stamp = timezone.now()
    if connection.in_atomic_block or settings.SEGMENTS_REALTIME_SYNCHRONOUS_COMMIT:
        matches = f"WITH m (segment_id, matched) AS ({matches_sql}), "
    else:
        # The statement is its own transaction: commit it without waiting for the WAL flush (see
        # SEGMENTS_REALTIME_SYNCHRONOUS_COMMIT). Never done inside a caller's transaction, whose
        # durability is not ours to change.
        matches = (
            "WITH cfg AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)), "
            f"m (segment_id, matched) AS (SELECT v.* FROM ({matches_sql}) v CROSS JOIN cfg), "
        )
    sql = (
        matches + f"ins AS (INSERT INTO {members} (segment_id, profile_id, entered_at) "
        f"SELECT s.id, %s::bigint, %s::timestamptz FROM m JOIN {segments_table} s ON s.id = m.segment_id "
        "WHERE m.matched AND s.status = %s::varchar "
        f"AND NOT EXISTS (SELECT 1 FROM {members} x WHERE x.segment_id = m.segment_id AND x.profile_id = %s::bigint) "
        "FOR KEY SHARE OF s ON CONFLICT (segment_id, profile_id) DO NOTHING RETURNING segment_id), "
        f"del AS (DELETE FROM {members} x USING m WHERE x.profile_id = %s::bigint AND x.segment_id = m.segment_id "
        "AND NOT m.matched RETURNING x.segment_id), "
        f"hist AS (INSERT INTO {changes} (segment_id, profile_id, kind, at, via) "
        "SELECT segment_id, %s::bigint, %s::varchar, %s::timestamptz, %s::varchar FROM ins UNION ALL "
        "SELECT segment_id, %s::bigint, %s::varchar, %s::timestamptz, %s::varchar FROM del "
        "RETURNING segment_id, kind) "
        "SELECT segment_id, kind FROM hist"
    )
    params += [profile_id, stamp, Segment.Status.ACTIVE, profile_id, profile_id]
    params += [profile_id, ENTERED, stamp, REALTIME, profile_id, LEFT, stamp, REALTIME]
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)  # explicit casts above: nothing left for PREPARE to guess
        rows = cursor.fetchall()
    if not rows:
        return []
    order = {segment_id: n for n, segment_id in enumerate(ids)}
    keys = {s.id: s.key for s in segments}
    found = [Change(segment_id, keys[segment_id], profile_id, kind) for segment_id, kind in rows]
    found.sort(key=lambda c: order[c.segment_id])
    transaction.on_commit(lambda: _announce(found))  # at once outside a transaction
    return found


def _announce(changes: list[Change]) -> None:
    for change in changes:
        membership_changed.send_robust(
            sender=Segment, segment_id=change.segment_id, profile_id=change.profile_id, kind=change.kind, via=REALTIME
        )
