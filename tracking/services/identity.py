"""Identity: keyed hashes of identifiers, resolution of a batch's identifiers to profiles, and merges."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.dispatch import Signal
from django.utils import timezone

from tracking.models import SUM_MAX, Identity, Profile, ProfileEventStat, ProfileMerge
from tracking.wire import EventIn

# Sent inside the merge's transaction with `source_id` and `target_id` (profile pks), after events,
# identities and aggregates moved and before the source profile is deleted, so that apps holding
# per-profile data (memberships, assignments, consents) move theirs in the same transaction.
profile_merged = Signal()

Key = tuple[str, str]  # (Identity.Kind, value as stored)


def identity_hash_key() -> bytes:
    """The current key of identifier hashes (IDENTITY_HASH_KEY, or derived from SECRET_KEY)."""
    key = settings.IDENTITY_HASH_KEY
    if key:
        return key.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"identity-hash", hashlib.sha256).digest()


def old_identity_hash_keys() -> list[bytes]:
    """Keys being rotated out (IDENTITY_HASH_OLD_KEYS): identifiers hashed with them are re-hashed on use."""
    return [key.encode() for key in settings.IDENTITY_HASH_OLD_KEYS if key]


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret name for a hash key, stored with each hashed identity."""
    return hashlib.sha256(b"fingerprint:" + key).hexdigest()[:8]


def identity_hash(value: str, *, kind: str = Identity.Kind.USER, key: bytes | None = None) -> str:
    """Keyed hash (HMAC-SHA256) standing in for a user id, email or phone; the clear value is never stored."""
    normalized = value.strip().lower() if kind == Identity.Kind.EMAIL else value.strip()
    return hmac.new(key or identity_hash_key(), f"{kind}:{normalized}".encode(), hashlib.sha256).hexdigest()


def clear_identifiers(event: EventIn) -> list[tuple[str, str]]:
    """The hashed kinds of identifier an event carries, in clear (kind, value), strongest first."""
    found: list[tuple[str, str]] = []
    if event.user_id:
        found.append((Identity.Kind.USER, event.user_id))
    email = event.traits.get("email") if event.traits else None
    if isinstance(email, str) and "@" in email:
        found.append((Identity.Kind.EMAIL, email))
    phone = event.traits.get("phone") if event.traits else None
    if isinstance(phone, str) and phone.startswith("+"):
        # Normalised to E.164 at ingest, so one number written two ways is one identifier.
        found.append((Identity.Kind.PHONE, phone))
    return found


def event_keys(event: EventIn) -> list[Key]:
    """The identities an event names, the strongest (user id) first."""
    keys = [(kind, identity_hash(value, kind=kind)) for kind, value in clear_identifiers(event)]
    if event.anonymous_id:
        keys.insert(1 if event.user_id else 0, (Identity.Kind.ANONYMOUS, event.anonymous_id))
    return keys


def identities_rehash(events: list[EventIn]) -> int:
    """During a key rotation, move identities these events name from an old key's hash to the current
    key's, so that returning users keep their profile. Returns how many moved."""
    old_keys = old_identity_hash_keys()
    if not old_keys:
        return 0
    clear = {pair for event in events for pair in clear_identifiers(event)}
    clear |= {(Identity.Kind.USER, event.previous_id) for event in events if event.previous_id}
    current = key_fingerprint(identity_hash_key())
    moved = 0
    for kind, value in sorted(clear):
        new = identity_hash(value, kind=kind)
        olds = [identity_hash(value, kind=kind, key=key) for key in old_keys]
        if Identity.objects.filter(kind=kind, value=new).exists():
            continue
        moved += Identity.objects.filter(kind=kind, value__in=olds).update(value=new, key_id=current)
    return moved


def alias_keys(previous_id: str) -> list[Key]:
    # Segment's previousId may be either an anonymous id or an earlier user id.
    return [(Identity.Kind.USER, identity_hash(previous_id)), (Identity.Kind.ANONYMOUS, previous_id)]


def identities_fetch(keys: Iterable[Key]) -> dict[Key, int]:
    by_kind: dict[str, set[str]] = {}
    for kind, value in keys:
        by_kind.setdefault(kind, set()).add(value)
    if not by_kind:
        return {}
    params: list = []
    if connection.vendor == "postgresql":
        where = " OR ".join(["(kind = %s AND value = ANY(%s))"] * len(by_kind))
        for kind, values in by_kind.items():
            params.extend((kind, list(values)))
    else:
        where = " OR ".join(f"(kind = %s AND value IN ({', '.join(['%s'] * len(v))}))" for v in by_kind.values())
        for kind, values in by_kind.items():
            params.append(kind)
            params.extend(values)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT kind, value, profile_id FROM {Identity._meta.db_table} WHERE {where}", params)
        return {(kind, value): profile_id for kind, value, profile_id in cursor.fetchall()}


def identities_claim(keys: set[Key]) -> None:
    """Hold a transaction lock per identifier about to be created (Postgres), in a fixed order, so two
    requests bringing the same new visitor wait for each other instead of both creating a profile."""
    if not keys or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h "
            "FROM unnest(%s::text[]) AS k ORDER BY h) AS claims",
            [[f"{kind}:{value}" for kind, value in sorted(keys)]],
        )


@dataclass
class _Resolution:
    """Union of a batch's identifiers into profiles. Tokens are profile pks, or negative for new ones."""

    owner: dict[Key, int]
    new_first_seen: dict[int, datetime] = field(default_factory=dict)
    merges: list[tuple[int, int]] = field(default_factory=list)  # (source pk, target pk), both existing
    forward: dict[int, int] = field(default_factory=dict)
    _next_new: int = -1

    def find(self, token: int) -> int:
        while token in self.forward:
            token = self.forward[token]
        return token

    def new_profile(self, seen: datetime) -> int:
        token = self._next_new
        self._next_new -= 1
        self.new_first_seen[token] = seen
        return token

    def union(self, tokens: set[int], preferred: int | None) -> int:
        """Fold the profiles behind `tokens` into one and return it. An existing profile always wins
        over one this batch creates; among existing ones, the user id's, else the oldest."""
        existing = sorted(t for t in tokens if t > 0)
        if preferred is not None and preferred > 0:
            target = preferred
        elif existing:
            target = existing[0]
        else:
            target = max(tokens)  # the first profile this batch created
        for token in tokens - {target}:
            self.forward[token] = target
            if token > 0:
                self.merges.append((token, target))
        return target


def profiles_resolve(events: list[EventIn]) -> dict[int, int]:
    """Map each event (by index) to its profile pk, creating, linking and merging profiles as the
    identities in the batch require. Runs inside the ingest transaction."""
    identities_rehash(events)
    per_event: list[tuple[EventIn, list[Key], list[Key]]] = []
    wanted: list[Key] = []
    for event in events:
        keys = event_keys(event)
        previous = alias_keys(event.previous_id) if event.previous_id else []
        per_event.append((event, keys, previous))
        wanted.extend(keys + previous)
    owner = identities_fetch(wanted)
    missing = set(wanted) - set(owner)
    if missing:
        identities_claim(missing)
        owner.update(identities_fetch(missing))
    state = _Resolution(owner=owner)
    known_before = set(state.owner)
    event_token: dict[int, int] = {}
    for event, keys, previous in per_event:
        tokens = {state.find(state.owner[k]) for k in keys + previous if k in state.owner}
        user_key = keys[0] if keys and keys[0][0] == Identity.Kind.USER else None
        preferred = state.find(state.owner[user_key]) if user_key in state.owner else None
        target = state.union(tokens, preferred) if tokens else state.new_profile(event.timestamp)
        for key in keys:
            state.owner[key] = target
        event_token[event.index] = target

    roots = [t for t in state.new_first_seen if t not in state.forward]
    created = _profiles_create({t: state.new_first_seen[t] for t in roots})

    def final(token: int) -> int:
        root = state.find(token)
        return created.get(root, root)

    for source_pk, target_pk in state.merges:
        profile_merge(source_id=source_pk, target_id=target_pk)
    lost = _identities_insert({k: final(t) for k, t in state.owner.items() if k not in known_before})
    result = {index: final(token) for index, token in event_token.items()}
    for (kind, value), ours in lost.items():
        # Another request linked this identifier first: fold our profile into the one that won.
        winner = Identity.objects.filter(kind=kind, value=value).values_list("profile_id", flat=True).first()
        if winner is not None and winner != ours:
            profile_merge(source_id=ours, target_id=winner)
            result = {index: winner if pk == ours else pk for index, pk in result.items()}
    return result


def _profiles_create(first_seen: dict[int, datetime]) -> dict[int, int]:
    if not first_seen:
        return {}
    tokens = list(first_seen)
    profiles = Profile.objects.bulk_create(
        [Profile(first_seen_at=first_seen[t], last_seen_at=first_seen[t]) for t in tokens]
    )
    return {token: profile.pk for token, profile in zip(tokens, profiles, strict=True)}


def _identities_insert(identities: dict[Key, int]) -> dict[Key, int]:
    """Insert identities, skipping ones another transaction just created; return those skipped."""
    if not identities:
        return {}
    table = Identity._meta.db_table
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    rows = sorted(identities.items())  # one order everywhere: no deadlocks between batches
    current = key_fingerprint(identity_hash_key())
    inserted: set[Key] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            placeholders = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            params: list = []
            for (kind, value), profile_id in chunk:
                params.extend([profile_id, kind, value, now, "" if kind == Identity.Kind.ANONYMOUS else current])
            cursor.execute(
                f"INSERT INTO {table} (profile_id, kind, value, created_at, key_id) VALUES {placeholders} "
                "ON CONFLICT (kind, value) DO NOTHING RETURNING kind, value",
                params,
            )
            inserted.update((kind, value) for kind, value in cursor.fetchall())
    return {key: pid for key, pid in identities.items() if key not in inserted}


def profile_merge(*, source_id: int, target_id: int) -> None:
    """Fold profile `source_id` into `target_id`: identities, events, aggregates and traits move,
    the source is deleted and its uuid keeps resolving. Merging again changes nothing."""
    if source_id == target_id:
        return
    locked = {p.pk: p for p in Profile.objects.select_for_update().filter(pk__in=[source_id, target_id]).order_by("pk")}
    source, target = locked.get(source_id), locked.get(target_id)
    if source is None or target is None:
        return
    Identity.objects.filter(profile_id=source_id).update(profile_id=target_id)
    from tracking.models import Event

    Event.objects.filter(profile_id=source_id).update(profile_id=target_id)
    _stats_fold(source_id, target_id)
    target.traits = {**source.traits, **target.traits}
    target.event_count += source.event_count
    target.session_count += source.session_count
    target.purchase_count += source.purchase_count
    target.revenue = min(target.revenue + source.revenue, SUM_MAX)
    target.first_seen_at = min(source.first_seen_at, target.first_seen_at)
    if source.last_seen_at > target.last_seen_at:
        target.last_seen_at = source.last_seen_at
        for name in (
            "last_source_id",
            "last_device_type",
            "last_os",
            "last_browser",
            "last_country",
            "last_traffic_source",
        ):
            setattr(target, name, getattr(source, name))
    target.save()
    ProfileMerge.objects.filter(into_id=source_id).update(into_id=target_id)
    ProfileMerge.objects.get_or_create(merged_uuid=source.uuid, defaults={"into_id": target_id})
    profile_merged.send(sender=Profile, source_id=source_id, target_id=target_id)
    source.delete()


def _stats_fold(source_id: int, target_id: int) -> None:
    table = ProfileEventStat._meta.db_table
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (profile_id, event_type, count, value_sum, first_at, last_at) "
            f"SELECT %s, event_type, count, value_sum, first_at, last_at FROM {table} WHERE profile_id = %s "
            f"ON CONFLICT (profile_id, event_type) DO UPDATE SET count = {table}.count + excluded.count, "
            f"value_sum = {least}({table}.value_sum + excluded.value_sum, {SUM_MAX}), "
            f"first_at = {least}({table}.first_at, excluded.first_at), "
            f"last_at = {greatest}({table}.last_at, excluded.last_at)",
            [target_id, source_id],
        )
    ProfileEventStat.objects.filter(profile_id=source_id).delete()
