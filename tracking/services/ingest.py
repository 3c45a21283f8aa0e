"""Event ingestion: validate, enrich, resolve profiles, store exactly once, update aggregates.

Everything an accepted event changes (the event row, its profile's identities, traits and
aggregates) is written in one transaction, so a 2xx answer means it is all in the database, and a
retried `message_id` changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from privacy.masking import MaskingPolicy, mask_event, phone_e164, phone_region
from privacy.services import encrypted_traits_store
from privacy.services.consent import consent_gate, consent_record, decisions_in, purpose_key
from tracking import wire
from tracking.enrich import Enrichment, enrich
from tracking.models import Source
from tracking.services.aggregates import (
    aggregates_apply,
)
from tracking.services.event_rows import event_item, events_insert, stored_event
from tracking.services.identity import profiles_resolve
from tracking.services.rejections import rejection_count
from tracking.services.single import SUPPRESSED, single_store
from tracking.signals import StoredEvent, events_announce

logger = logging.getLogger(__name__)

RETRIES = 3


@dataclass(slots=True)
class RequestMeta:
    """What the HTTP request adds to every event it carries."""

    user_agent: str = ""
    ip: str = ""
    country: str = ""
    received_at: datetime | None = None
    sent_at: datetime | None = None
    gpc: bool = False  # Sec-GPC: 1, the browser's Global Privacy Control


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0
    rejected: list[wire.Rejected] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "rejected": [r.as_dict() for r in self.rejected],
        }


Parser = Callable[..., wire.EventIn]


def events_check(
    raws: list, *, parse: Parser, path: str, meta: RequestMeta, **parse_options
) -> tuple[list[wire.EventIn], list[wire.Rejected]]:
    """Validate a batch; every bad event is rejected with where and why, the good ones kept."""
    max_bytes = settings.INGEST_MAX_EVENT_BYTES
    received_at = meta.received_at or timezone.now()
    events: list[wire.EventIn] = []
    rejected: list[wire.Rejected] = []
    for index, raw in enumerate(raws):
        event_path = f"{path}[{index}]" if path else ""
        message_id = ""
        if isinstance(raw, dict):
            candidate = raw.get("message_id", raw.get("messageId"))
            message_id = candidate if isinstance(candidate, str) else ""
        encoded = json.dumps(raw, separators=(",", ":"), default=str, ensure_ascii=False)
        size = len(encoded.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            rejected.append(
                wire.Rejected(
                    index,
                    event_path or "body",
                    f"is {size} bytes, over the limit of {max_bytes}",
                    message_id[:100],
                    "too_large",
                )
            )
            continue
        try:
            events.append(
                parse(
                    raw,
                    index=index,
                    path=event_path,
                    received_at=received_at,
                    sent_at=meta.sent_at,
                    max_future=settings.INGEST_MAX_FUTURE,
                    **parse_options,
                )
            )
        except wire.Invalid as exc:
            rejected.append(wire.Rejected(index, exc.path, exc.message, message_id[:100]))
    return events, rejected


def events_ingest(
    *, source: Source, events: list[wire.EventIn], rejected: list[wire.Rejected] | None = None, meta: RequestMeta
) -> IngestResult:
    """Store checked events of one source. Duplicates (same message_id) are counted, not stored."""
    result = IngestResult(rejected=list(rejected or []))
    if result.rejected:
        for reason in {r.reason for r in result.rejected}:
            rejection_count(source=source, reason=reason, count=sum(r.reason == reason for r in result.rejected))
    if not events:
        return result
    received_at = meta.received_at or timezone.now()
    unique: dict[str, wire.EventIn] = {}
    for event in events:
        unique.setdefault(event.message_id, event)
    batch = list(unique.values())
    _mask(batch, source)
    result.accepted = len(events)
    if (
        len(batch) == 1
        and connection.vendor == "postgresql"
        and not meta.gpc
        and batch[0].context.get("gpc") is not True
        and not decisions_in(batch[0].context)
    ):
        event = batch[0]
        try:
            stored = single_store(source, event, _enrich(event, meta), received_at)
        except OperationalError:
            stored = None  # e.g. a deadlock: that statement wrote nothing; the general path retries
        if stored == SUPPRESSED:
            _suppressed(result, source, {purpose_key(event.type): 1}, len(events))
            return result
        if stored is not None:
            result.duplicates = len(events) - stored
            return result
    gate = consent_gate(source=source, events=batch, gpc=meta.gpc)
    _suppressed(result, source, gate.suppressed, 0)
    kept = {event.index for event in gate.kept}
    prepared = [
        (event, _enrich(event, meta)) for event in batch if event.index in kept or event.index in gate.decisions
    ]
    if not prepared:
        return result
    for attempt in range(RETRIES):
        try:
            stored: list[StoredEvent] = []
            with transaction.atomic():
                inserted = _store(source, prepared, kept, gate.decisions, received_at, stored)
            break
        except (OperationalError, IntegrityError) as exc:
            # Deadlocks, serialization failures and lost identity races: the whole batch rolled
            # back, so running it again is safe.
            if attempt == RETRIES - 1:
                raise
            logger.warning("ingest retry %d after %s", attempt + 1, exc.__class__.__name__)
            time.sleep(0.01 * (attempt + 1))
    result.duplicates = len(events) - result.suppressed - inserted
    events_announce(source_id=source.pk, events=stored)
    return result


def _suppressed(result: IngestResult, source: Source, by_purpose: dict[str, int], duplicates_of: int) -> None:
    """Events the visitor's consent does not allow: not stored, counted per source and purpose."""
    for purpose, count in by_purpose.items():
        rejection_count(source=source, reason=f"no_consent:{purpose}", count=count)
    result.suppressed = sum(by_purpose.values())
    # Retried copies of a suppressed event (same message id in one request) were suppressed too.
    result.duplicates = max(0, duplicates_of - result.suppressed)


def _mask(batch: list[wire.EventIn], source: Source) -> None:
    """Mask PII (emails, phones, cards, IPs, the source's denylisted names) in what will be stored."""
    policy = MaskingPolicy(
        denylist=frozenset(str(name).casefold() for name in source.pii_denylist or []),
        default_region=phone_region(source.phone_region),
    )
    kept = [name for name in source.encrypted_traits or [] if isinstance(name, str)]
    for event in batch:
        identifiers = {}
        if event.traits and kept:
            event.protected = {name: event.traits[name] for name in kept if _scalar(event.traits.get(name))}
            if event.protected:
                event.traits = {k: v for k, v in event.traits.items() if k not in event.protected}
        if event.traits:
            if isinstance(event.traits.get("email"), str):
                identifiers["email"] = event.traits["email"]
            if isinstance(event.traits.get("phone"), str):
                phone = phone_e164(event.traits["phone"], policy.default_region)
                if phone:
                    identifiers["phone"] = phone
        event.properties, event.traits, event.context, _ = mask_event(
            properties=event.properties, traits=event.traits, context=event.context, policy=policy
        )
        if identifiers:
            # Kept only to derive the identities' keyed hashes; never stored (stored_traits drops them).
            event.traits = {**event.traits, **identifiers}


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != ""


def _enrich(event: wire.EventIn, meta: RequestMeta) -> Enrichment:
    return enrich(
        event.context,
        event.timestamp,
        request_user_agent=meta.user_agent,
        request_ip=meta.ip,
        request_country=meta.country,
    )


def _store(
    source: Source,
    prepared: list[tuple[wire.EventIn, Enrichment]],
    kept: set[int],
    decisions: dict[int, list[tuple[dict[str, bool], str]]],
    received_at: datetime,
    stored: list[StoredEvent],
) -> int:
    """Store the kept events and record the consent decisions events carried (an event refused by
    its own decision still records it: the profile then holds the choice, and nothing else)."""
    profile_of = profiles_resolve([event for event, _ in prepared])
    for index, recorded in sorted(decisions.items()):
        for choices, origin in recorded:
            consent_record(
                profile_id=profile_of[index],
                decisions=choices,
                origin=origin,
                source=source,
                policy_version=source.consent_policy_version,
                only_changes=True,
            )
    prepared = [(event, e) for event, e in prepared if event.index in kept]
    inserted_ids = events_insert(source, prepared, profile_of, received_at) if prepared else set()
    fresh = [(event, enrichment) for event, enrichment in prepared if event.message_id in inserted_ids]
    stored.extend(stored_event(profile_of[event.index], event) for event, _ in fresh)
    aggregates_apply([event_item(profile_of[event.index], event, e) for event, e in fresh], source_id=source.pk)
    protected: dict[int, dict] = {}
    for event, _ in sorted(fresh, key=lambda pair: pair[0].timestamp):
        if event.protected:
            protected.setdefault(profile_of[event.index], {}).update(event.protected)
    encrypted_traits_store(values=protected)
    return len(fresh)
