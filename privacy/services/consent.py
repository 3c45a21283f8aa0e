"""Consent: purposes, decisions (records and current state), and the gate in front of collection."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.dispatch import receiver
from django.utils import timezone

from privacy.consent import State, collection_allowed
from privacy.models import CategoryMapping, ConsentRecord, ConsentState, Purpose
from tracking.models import Profile, Source
from tracking.services.identity import event_keys, profile_merged
from tracking.wire import EventIn

CACHE_SECONDS = 30.0
_memo: dict[str, tuple[float, object]] = {}


@dataclass(frozen=True, slots=True)
class PurposeInfo:
    id: int
    key: str
    required: bool


def _cached(name: str, load):
    hit = _memo.get(name)
    now = time.monotonic()
    if hit is None or hit[0] < now:
        hit = (now + CACHE_SECONDS, load())
        _memo[name] = hit
    return hit[1]


def purposes() -> dict[str, PurposeInfo]:
    """Purposes by key (cached in the process for half a minute: they change in the admin, rarely)."""
    return _cached("purposes", lambda: {p.key: PurposeInfo(p.id, p.key, p.required) for p in Purpose.objects.all()})


def _types() -> dict[str, str]:
    def load():
        return {t: p.key for p in Purpose.objects.all() for t in (p.event_types or []) if isinstance(t, str)}

    return _cached("types", load)


def _categories() -> dict[str, str]:
    return _cached(
        "categories",
        lambda: {m.category.casefold(): m.purpose.key for m in CategoryMapping.objects.select_related("purpose")},
    )


def purposes_forget() -> None:
    _memo.clear()


def purpose_of(event_type: str) -> PurposeInfo | None:
    """The purpose an event type is collected for: the one listing it, else the default purpose."""
    key = _types().get(event_type, settings.CONSENT_DEFAULT_PURPOSE)
    return purposes().get(key)


def decisions_in(context: dict) -> dict[str, bool]:
    """Decisions an event carries the way Segment's consent management sends them:
    `context.consent.categoryPreferences = {"Analytics": true, "Advertising": false}`."""
    consent = context.get("consent") if isinstance(context, dict) else None
    preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(preferences, dict):
        return {}
    mapping = _categories()
    decided: dict[str, bool] = {}
    for category, value in preferences.items():
        key = mapping.get(str(category).casefold())
        if key and isinstance(value, bool):
            decided[key] = decided.get(key, True) and value  # two categories, one purpose: any refusal wins
    return decided


def consent_states(profile_ids: Iterable[int]) -> dict[int, dict[str, State]]:
    ids = list(set(profile_ids))
    if not ids:
        return {}
    by_id = {p.id: p.key for p in purposes().values()}
    states: dict[int, dict[str, State]] = {}
    for profile_id, purpose_id, granted, version in ConsentState.objects.filter(profile_id__in=ids).values_list(
        "profile_id", "purpose_id", "granted", "policy_version"
    ):
        if purpose_id in by_id:
            states.setdefault(profile_id, {})[by_id[purpose_id]] = State(granted, version)
    return states


def consent_record(
    *,
    profile_id: int,
    decisions: dict[str, bool],
    origin: str,
    source: Source | None,
    policy_version: int,
    only_changes: bool = False,
) -> int:
    """Append a record per decision and update the current state; returns how many were recorded.
    `only_changes`: skip decisions equal to the current state (SDKs repeat them on every event)."""
    known = purposes()
    current = consent_states([profile_id]).get(profile_id, {})
    now = timezone.now()
    recorded = 0
    for key, granted in sorted(decisions.items()):
        purpose = known.get(key)
        if purpose is None or purpose.required:
            continue
        before = current.get(key)
        if (
            only_changes
            and before is not None
            and before.granted == granted
            and before.policy_version >= policy_version
        ):
            continue
        status = "granted" if granted else ("withdrawn" if before is not None and before.granted else "denied")
        ConsentRecord.objects.create(
            profile_id=profile_id,
            purpose_id=purpose.id,
            status=status,
            origin=origin,
            policy_version=policy_version,
            source=source,
            created_at=now,
        )
        ConsentState.objects.update_or_create(
            profile_id=profile_id,
            purpose_id=purpose.id,
            defaults={"granted": granted, "policy_version": policy_version, "origin": origin, "updated_at": now},
        )
        recorded += 1
    return recorded


@dataclass
class Gate:
    """What the gate decided for a batch: events to store, events suppressed per purpose, and the
    decisions to record (by event index) before anything else."""

    kept: list[EventIn] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    decisions: dict[int, list[tuple[dict[str, bool], str]]] = field(default_factory=dict)


def consent_gate(*, source: Source, events: list[EventIn], gpc: bool) -> Gate:
    """Decide, in batch order, which events may be collected. Decisions an event carries apply to
    that event and to the visitor's later ones; GPC refuses marketing."""
    gate = Gate()
    keys_of = {event.index: event_keys(event) for event in events}
    owner = _owners([key for keys in keys_of.values() for key in keys])
    states = consent_states(owner.values())
    by_visitor: dict[object, dict[str, State]] = {}
    for event in events:
        keys = keys_of[event.index]
        known = [owner[key] for key in keys if key in owner]
        visitor = known[0] if known else (keys[0] if keys else event.index)
        state = by_visitor.setdefault(visitor, dict(states.get(visitor, {})) if known else {})
        recorded: list[tuple[dict[str, bool], str]] = []
        decided = decisions_in(event.context)
        if decided:
            recorded.append((decided, "sdk"))
        marketing = state.get("marketing")
        event_gpc = gpc or event.context.get("gpc") is True
        if event_gpc and "marketing" not in decided and (marketing is None or marketing.granted):
            recorded.append(({"marketing": False}, "gpc"))
        for choices, _ in recorded:
            for key, granted in choices.items():
                state[key] = State(granted, source.consent_policy_version)
        if recorded:
            gate.decisions[event.index] = recorded
        purpose = purpose_of(event.type)
        if purpose is None or collection_allowed(
            regime=source.consent_regime,
            policy_version=source.consent_policy_version,
            purpose=purpose.key,
            required=purpose.required,
            state=state.get(purpose.key),
            gpc=event_gpc,
        ):
            gate.kept.append(event)
        else:
            gate.suppressed[purpose.key] = gate.suppressed.get(purpose.key, 0) + 1
    return gate


def _owners(keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    from tracking.services.identity import identities_fetch

    return identities_fetch(keys) if keys else {}


@receiver(profile_merged, sender=Profile, dispatch_uid="privacy.consent_merge")
def consent_merge(sender, *, source_id: int, target_id: int, **kwargs) -> None:
    """Consent follows a merge: all records move; per purpose the most recent decision stands."""
    ConsentRecord.objects.filter(profile_id=source_id).update(profile_id=target_id)
    theirs = {s.purpose_id: s for s in ConsentState.objects.filter(profile_id=source_id)}
    for ours in ConsentState.objects.filter(profile_id=target_id, purpose_id__in=theirs):
        if theirs[ours.purpose_id].updated_at > ours.updated_at:
            ours.delete()
        else:
            theirs.pop(ours.purpose_id).delete()
    ConsentState.objects.filter(profile_id=source_id, purpose_id__in=theirs).update(profile_id=target_id)


def consent_condition_sql(*, source: Source, purpose: PurposeInfo | None, profile: str) -> tuple[str, list]:
    """The consent rule as SQL on a profile id expression, for the one-statement paths (no GPC there)."""
    if purpose is None or purpose.required:
        return "TRUE", []
    table = ConsentState._meta.db_table
    if source.consent_regime == "opt_in":
        return (
            f"EXISTS (SELECT 1 FROM {table} cs WHERE cs.profile_id = {profile} AND cs.purpose_id = %s "
            "AND cs.granted AND cs.policy_version >= %s)",
            [purpose.id, source.consent_policy_version],
        )
    return (
        f"NOT EXISTS (SELECT 1 FROM {table} cs WHERE cs.profile_id = {profile} AND cs.purpose_id = %s "
        "AND NOT cs.granted)",
        [purpose.id],
    )


def purpose_key(event_type: str) -> str:
    purpose = purpose_of(event_type)
    return purpose.key if purpose else settings.CONSENT_DEFAULT_PURPOSE


def _subject_event(*, anonymous_id: str, user_id: str) -> EventIn:
    return EventIn(
        index=0,
        kind="track",
        type="consent",
        message_id="",
        anonymous_id=anonymous_id,
        user_id=user_id,
        timestamp=timezone.now(),
    )


def consent_decide(
    *, source: Source, anonymous_id: str = "", user_id: str = "", decisions: dict[str, bool], origin: str
) -> Profile:
    """Record a visitor's choices (banner, API, import), creating their profile if it is the first we
    hear of them: recording consent is itself necessary processing."""
    from django.db import transaction

    from tracking.services.identity import profiles_resolve

    with transaction.atomic():
        profile_id = profiles_resolve([_subject_event(anonymous_id=anonymous_id, user_id=user_id)])[0]
        consent_record(
            profile_id=profile_id,
            decisions=decisions,
            origin=origin,
            source=source,
            policy_version=source.consent_policy_version,
        )
    return Profile.objects.get(pk=profile_id)


def consent_view(*, source: Source, profile_id: int | None) -> dict:
    """What a banner needs: the regime, every purpose with the visitor's current choice, and whether
    a decision is still needed (opt-in, a purpose undecided at the current policy version)."""
    states = consent_states([profile_id]).get(profile_id, {}) if profile_id else {}
    items, undecided = [], False
    for purpose in Purpose.objects.all():
        state = states.get(purpose.key)
        current = state is not None and state.policy_version >= source.consent_policy_version
        if not purpose.required and not current:
            undecided = True
        items.append(
            {
                "key": purpose.key,
                "name": purpose.name,
                "description": purpose.description,
                "required": purpose.required,
                "granted": True if purpose.required else (state.granted if current else None),
            }
        )
    return {
        "regime": source.consent_regime,
        "policy_version": source.consent_policy_version,
        "title": source.banner_title,
        "text": source.banner_text,
        "needs_decision": source.consent_regime == "opt_in" and undecided,
        "purposes": items,
    }
