"""Reads of the privacy capability."""

from __future__ import annotations

from privacy.crypto import InvalidToken, decrypt
from privacy.models import EncryptedTrait


def encrypted_traits_read(*, profile_id: int) -> dict[str, str | None]:
    """A profile's kept traits in clear (None where no configured key can decrypt the token)."""
    values: dict[str, str | None] = {}
    for name, token in EncryptedTrait.objects.filter(profile_id=profile_id).values_list("name", "token"):
        try:
            values[name] = decrypt(token)
        except InvalidToken:
            values[name] = None
    return values


def encrypted_trait_export(row: EncryptedTrait) -> dict:
    """What a person receives of an encrypted trait: its name and value in clear."""
    try:
        value = decrypt(row.token)
    except InvalidToken:
        value = None
    return {"name": row.name, "value": value, "updated_at": row.updated_at}


PERSONAL_DATA = [
    # where, what, how it is protected
    (
        "tracking · identities (user, email, phone)",
        "user ids, email addresses, phone numbers (E.164)",
        "keyed hash (HMAC-SHA256, IDENTITY_HASH_KEY, rotatable); never stored in clear",
    ),
    ("tracking · identities (anonymous)", "the snippet's random cookie id, SDK anonymous ids", "pseudonymous"),
    (
        "tracking · events: properties, traits, page and campaign context",
        "free text that may carry PII",
        "masked at ingest (emails, phones, Luhn-valid cards, IPs) + the source's denylist",
    ),
    ("tracking · events: ip_truncated, context.ip", "visitor IP address", "truncated to /24 (IPv4) or /48 (IPv6)"),
    ("tracking · events: user_hash", "user id of the event", "keyed hash"),
    ("tracking · profiles: traits", "traits sent with identify", "masked; identifiers removed"),
    ("privacy · encrypted traits", "traits a source chose to keep (e.g. first name)", "Fernet (FIELD_ENCRYPTION_KEYS)"),
    ("privacy · consent records and states", "consent decisions per purpose", "append-only; erased with the person"),
    ("privacy · access log", "admin user names and API keys that read profiles", "audit trail; no profile data"),
]


def data_inventory() -> dict:
    """The periodic privacy audit in one place: personal data and its protection, retention and what
    is due for purge, consent coverage per source and purpose, open requests and their deadlines."""
    from datetime import timedelta

    from django.db.models import Count, Q
    from django.utils import timezone

    from privacy.models import ConsentState, Purpose, SubjectRequest
    from tracking.models import Event, Identity, Source
    from tracking.services.identity import identity_hash_key, key_fingerprint, old_identity_hash_keys

    now = timezone.now()
    sources = []
    for source in Source.objects.order_by("name"):
        due = None
        if source.retention_days:
            due = Event.objects.filter(source=source, timestamp__lt=now - timedelta(days=source.retention_days)).count()
        sources.append(
            {
                "name": source.name,
                "regime": source.get_consent_regime_display(),
                "policy_version": source.consent_policy_version,
                "retention_days": source.retention_days,
                "due_for_purge": due,
                "denylist": ", ".join(source.pii_denylist or []) or "—",
                "encrypted_traits": ", ".join(source.encrypted_traits or []) or "—",
            }
        )
    coverage = []
    for purpose in Purpose.objects.filter(required=False):
        for source_name, granted, refused in (
            ConsentState.objects.filter(purpose=purpose)
            .values_list("profile__last_source__name")
            .annotate(n_granted=Count("id", filter=Q(granted=True)), n_refused=Count("id", filter=Q(granted=False)))
            .order_by("profile__last_source__name")
        ):
            coverage.append(
                {"purpose": purpose.key, "source": source_name or "—", "granted": granted, "refused": refused}
            )
    current = key_fingerprint(identity_hash_key())
    old = {key_fingerprint(key) for key in old_identity_hash_keys()}
    keys = dict(Identity.objects.exclude(kind=Identity.Kind.ANONYMOUS).values_list("key_id").annotate(n=Count("id")))
    return {
        "personal_data": PERSONAL_DATA,
        "sources": sources,
        "coverage": coverage,
        "hash_keys": {
            "current": keys.get(current, 0),
            "old": sum(n for key, n in keys.items() if key in old),
            "unknown": sum(n for key, n in keys.items() if key != current and key not in old),
        },
        "open_requests": list(SubjectRequest.objects.filter(status__in=["pending", "running"]).order_by("due_at")[:50]),
        "now": now,
    }
