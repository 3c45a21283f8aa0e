"""Single events on Postgres, the shape of most live traffic, in the fewest round trips."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from personalization.db import execute_prepared
from privacy.consent import collection_allowed
from privacy.services.consent import PurposeInfo, consent_condition_sql, purpose_of
from tracking import wire
from tracking.enrich import Enrichment
from tracking.models import Event, Identity, Profile, ProfileEventStat, Source
from tracking.services.aggregates import (
    DELTA_COLUMNS,
    DELTA_ROW,
    LAST_FIELDS,
    delta_params,
    deltas_build,
    profile_update_sql,
    stats_conflict_sql,
)
from tracking.services.event_rows import EVENT_CASTS, EVENT_COLUMNS, event_item, event_params, stored_event
from tracking.services.identity import (
    event_keys,
    identities_claim,
    identities_fetch,
    identity_hash_key,
    key_fingerprint,
)
from tracking.signals import events_announce

SUPPRESSED = -1  # not stored: the visitor has not consented to the event's purpose


class _FallBack(Exception):
    """The single-event shortcut does not apply after all: roll it back, take the general path."""


def single_store(source: Source, event: wire.EventIn, e: Enrichment, received_at: datetime) -> int | None:
    """A single event on Postgres, the shape of most live traffic, in the fewest round trips: one
    statement for a returning visitor (consent checked in it), one short transaction for a first
    visit. Returns how many events were stored (0: a duplicate), SUPPRESSED, or None when the general
    path must decide (a merge, an alias, identifiers known in part, consent decisions to record)."""
    keys = event_keys(event)
    if event.previous_id or not keys or event.protected or settings.IDENTITY_HASH_OLD_KEYS:
        # During a key rotation the general path looks identifiers up under the old keys too.
        return None
    purpose = purpose_of(event.type)
    target, inserted, known, consented = _store_known_visitor(source, event, e, received_at, keys, purpose)
    if target is not None:
        if consented and inserted:
            events_announce(source_id=source.pk, events=[stored_event(target, event)])
        return inserted if consented else SUPPRESSED
    if known:
        return None
    if purpose is not None and not collection_allowed(
        regime=source.consent_regime,
        policy_version=source.consent_policy_version,
        purpose=purpose.key,
        required=purpose.required,
        state=None,
        gpc=False,
    ):
        return SUPPRESSED  # a first visit without consent leaves nothing behind
    try:
        with transaction.atomic():
            identities_claim(set(keys))
            if identities_fetch(keys):
                raise _FallBack  # another request brought this visitor first
            profile_id = _store_new_visitor(source, event, e, received_at, keys)
    except (_FallBack, IntegrityError):
        return None
    events_announce(source_id=source.pk, events=[stored_event(profile_id, event)])
    return 1


def _store_new_visitor(
    source: Source, event: wire.EventIn, e: Enrichment, received_at: datetime, keys: list[tuple[str, str]]
) -> int:
    """A first visit in one statement: the profile with its aggregates already counted, its
    identities, the event and its per-type stats."""
    (delta,), stats = deltas_build([event_item(0, event, e)], source_id=source.pk)
    ((_, event_type), (_, value_sum, first_at, last_at)) = next(iter(stats.items()))
    select = ", ".join(
        "prof.id" if column == "profile_id" else f"%s::{EVENT_CASTS[column]}" for column in EVENT_COLUMNS
    )
    row = event_params(source, None, event, e, connection.ops.adapt_datetimefield_value(received_at))
    row.pop(EVENT_COLUMNS.index("profile_id"))
    last_columns = ", ".join(f"last_{name}" for name in LAST_FIELDS)
    sql = (
        f"WITH prof AS (INSERT INTO {Profile._meta.db_table} (uuid, traits, first_seen_at, last_seen_at, "
        f"event_count, session_count, purchase_count, revenue, last_source_id, {last_columns}, created_at) "
        "VALUES (%s::uuid, %s::jsonb, %s::timestamptz, %s::timestamptz, 1, 1, %s::int, %s::numeric, %s::bigint, "
        + ", ".join(["%s::text"] * len(LAST_FIELDS))
        + ", now()) RETURNING id), "
        f"ids AS (INSERT INTO {Identity._meta.db_table} (profile_id, kind, value, key_id, created_at) "
        "SELECT prof.id, k.kind, k.value, k.key_id, now() FROM prof, (VALUES "
        + ", ".join(["(%s::text, %s::text, %s::text)"] * len(keys))
        + ") AS k(kind, value, key_id) RETURNING 1), "
        f"ins AS (INSERT INTO {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) SELECT {select} FROM prof "
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING profile_id), "
        f"st AS (INSERT INTO {ProfileEventStat._meta.db_table} "
        "(profile_id, event_type, count, value_sum, first_at, last_at) "
        "SELECT ins.profile_id, %s::text, 1, %s::numeric, %s::timestamptz, %s::timestamptz FROM ins) "
        "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM ids), (SELECT id FROM prof)"
    )
    params: list = [str(uuid.uuid4()), json.dumps(delta.traits, ensure_ascii=False, default=str), first_at, last_at]
    params.extend([delta.purchases, str(delta.revenue), source.pk])
    params.extend(delta.last.get(name, "") for name in LAST_FIELDS)
    fingerprint = key_fingerprint(identity_hash_key())
    for kind, value in keys:
        params.extend((kind, value, "" if kind == Identity.Kind.ANONYMOUS else fingerprint))
    params.extend(row)
    params.extend([event_type, str(value_sum), first_at, last_at])
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        inserted, _, profile_id = cursor.fetchone()
    if not inserted:
        # The message id was stored before under other identifiers: let the general path sort it.
        raise _FallBack
    return profile_id


def _store_known_visitor(
    source: Source,
    event: wire.EventIn,
    e: Enrichment,
    received_at: datetime,
    keys: list[tuple[str, str]],
    purpose: PurposeInfo | None,
) -> tuple[int | None, int, int, int]:
    """A returning visitor's event in one statement: when all its identifiers are known, name one
    profile, and its consent allows the event's purpose, the event, the profile's aggregates and the
    per-type stats are written by one atomic statement with data-modifying CTEs. Returns (profile id
    or None, events stored, identifiers known, 1 if consent allowed it)."""
    consent_sql, consent_params = consent_condition_sql(source=source, purpose=purpose, profile="target.id")
    (delta,), stats = deltas_build([event_item(0, event, e)], source_id=source.pk)
    ((_, event_type), (_, value_sum, first_at, last_at)) = next(iter(stats.items()))
    match = " OR ".join(["(kind = %s AND value = %s)"] * len(keys))
    select = ", ".join(
        "allowed.id" if column == "profile_id" else f"%s::{EVENT_CASTS[column]}" for column in EVENT_COLUMNS
    )
    row = event_params(source, None, event, e, connection.ops.adapt_datetimefield_value(received_at))
    row.pop(EVENT_COLUMNS.index("profile_id"))
    sql = (
        f"WITH ident AS (SELECT profile_id FROM {Identity._meta.db_table} WHERE {match}), "
        "target AS (SELECT min(profile_id) AS id FROM ident HAVING count(*) = %s AND count(DISTINCT profile_id) = 1), "
        f"allowed AS (SELECT id FROM target WHERE {consent_sql}), "
        f"ins AS (INSERT INTO {Event._meta.db_table} ({', '.join(EVENT_COLUMNS)}) SELECT {select} FROM allowed "
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING profile_id), "
        "upd AS ("
        + profile_update_sql(
            rows=f"(VALUES ({DELTA_ROW})) AS v({', '.join(DELTA_COLUMNS)}), ins", where="p.id = ins.profile_id"
        )
        + " RETURNING p.id), "
        f"st AS (INSERT INTO {ProfileEventStat._meta.db_table} "
        "(profile_id, event_type, count, value_sum, first_at, last_at) "
        # Reading upd's rows makes the profile row locked before the stats row, the order every
        # path takes: no deadlock with a concurrent batch.
        "SELECT ins.profile_id, %s::text, 1, %s::numeric, %s::timestamptz, %s::timestamptz "
        "FROM ins JOIN upd ON upd.id = ins.profile_id"
        + stats_conflict_sql()
        + ") SELECT (SELECT id FROM target), (SELECT count(*) FROM ins), (SELECT count(*) FROM ident), "
        "(SELECT count(*) FROM allowed)"
    )
    params: list = [part for key in keys for part in key]
    params.append(len(keys))
    params.extend(consent_params)
    params.extend(row)
    params.extend(delta_params(delta))
    params.extend([event_type, str(value_sum), first_at, last_at])
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        return cursor.fetchone()
