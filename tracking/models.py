"""Sources and their keys, profiles with linked identities and aggregates, and stored events."""

import uuid
from decimal import Decimal

from django.db import models
from django.db.models.functions import Coalesce

from tracking.keys import write_key_generate

# Largest stored sum (numeric(18, 2)); sums saturate here rather than overflow.
SUM_MAX = Decimal("9999999999999999.99")


class Source(models.Model):
    """One site or app that sends events, with its public write key and allowed browser origins."""

    name = models.CharField(max_length=100, unique=True)
    write_key = models.CharField(max_length=64, unique=True, default=write_key_generate)
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text='Browser origins allowed to send with the write key, e.g. ["https://shop.example"]. '
        '"*" allows any origin. Requests without an Origin header (servers, SDKs) are always allowed.',
    )
    cookie_days = models.PositiveIntegerField(
        default=395, help_text="Lifetime of the snippet's first-party anonymous-id cookie, in days."
    )
    pii_denylist = models.JSONField(
        default=list,
        blank=True,
        help_text='Property and trait names whose values are never stored, e.g. ["password", "address"] '
        "(any nesting depth, case-insensitive).",
    )
    phone_region = models.CharField(
        max_length=2,
        blank=True,
        help_text="Country (ISO code) whose national-format phone numbers are masked too, e.g. FR. "
        "International (+…) numbers are always masked.",
    )

    class ConsentRegime(models.TextChoices):
        OPT_IN = "opt_in", "Opt-in (GDPR: nothing but necessary until granted)"
        OPT_OUT = "opt_out", "Opt-out (CCPA: allowed until the visitor opts out)"

    consent_regime = models.CharField(max_length=8, choices=ConsentRegime.choices, default=ConsentRegime.OPT_IN)
    banner_title = models.CharField(max_length=200, default="Your privacy", help_text="Consent banner title.")
    banner_text = models.TextField(
        default="We use your data only for what you allow. Choose what you accept; you can change it at any time.",
        help_text="Consent banner text, shown above the purposes.",
    )
    consent_policy_version = models.PositiveIntegerField(
        default=1, help_text="Raise it when the privacy policy changes: opt-in visitors must consent again."
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Raw events older than this many days are purged every night (profiles and their aggregates "
        "stay). Empty: kept until erased.",
    )
    encrypted_traits = models.JSONField(
        default=list,
        blank=True,
        help_text='Traits to keep, encrypted at rest, instead of masking them, e.g. ["first_name", "email"] '
        "(for greetings or messaging). Everything else that looks like PII is masked.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from privacy.masking import phone_region

        if self.phone_region and phone_region(self.phone_region) is None:
            raise ValidationError({"phone_region": f"{self.phone_region!r} is not a country code phone numbers know"})
        for name, example in (("pii_denylist", '["password"]'), ("encrypted_traits", '["first_name"]')):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValidationError({name: f"must be a list of names, e.g. {example}"})

    def origin_allowed(self, origin: str) -> bool:
        origins = self.allowed_origins or []
        return "*" in origins or origin.rstrip("/") in {o.rstrip("/") for o in origins}


class SecretKey(models.Model):
    """A server-side key of a source; only its hash is stored, the key itself is shown once."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="secret_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="First characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.source})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Profile(models.Model):
    """A pseudonymous visitor: linked identities, traits and aggregates kept with each event."""

    uuid = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    traits = models.JSONField(default=dict, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    event_count = models.PositiveBigIntegerField(default=0)
    session_count = models.PositiveIntegerField(default=0)
    purchase_count = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    last_source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_device_type = models.CharField(max_length=16, blank=True)
    last_os = models.CharField(max_length=50, blank=True)
    last_browser = models.CharField(max_length=50, blank=True)
    last_country = models.CharField(max_length=2, blank=True)
    last_traffic_source = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["last_seen_at"], name="profile_last_seen")]

    def __str__(self) -> str:
        return str(self.uuid)


class Identity(models.Model):
    """An identifier linked to a profile. User ids and emails are kept only as keyed hashes."""

    class Kind(models.TextChoices):
        ANONYMOUS = "anonymous", "Anonymous id"
        USER = "user", "User id (keyed hash)"
        EMAIL = "email", "Email (keyed hash)"
        PHONE = "phone", "Phone number (keyed hash of E.164)"

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.CharField(max_length=128)
    key_id = models.CharField(
        max_length=8, blank=True, help_text="Fingerprint of the key the value was hashed with (blank: not hashed)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [models.UniqueConstraint(fields=["kind", "value"], name="identity_kind_value_unique")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class ProfileMerge(models.Model):
    """Record of a profile folded into another, so its old id still resolves."""

    merged_uuid = models.UUIDField(unique=True)
    into = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="merged_from")
    merged_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.merged_uuid} → {self.into_id}"


class ProfileEventStat(models.Model):
    """Per-profile, per-event-type aggregate: count, summed value, first and last time."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="event_stats")
    event_type = models.CharField(max_length=100)
    count = models.PositiveBigIntegerField(default=0)
    value_sum = models.DecimalField(max_digits=18, decimal_places=2, default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["profile", "event_type"], name="profile_event_stat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} × {self.count}"


class Event(models.Model):
    """One stored event, enriched at ingest. (source, message_id) is unique: retries store once."""

    class Kind(models.TextChoices):
        TRACK = "track"
        PAGE = "page"
        SCREEN = "screen"
        IDENTIFY = "identify"
        ALIAS = "alias"
        GROUP = "group"

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="events")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="events")
    message_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.TRACK)
    type = models.CharField(max_length=100, help_text="Event name, e.g. page_view, add_to_cart, purchase.")
    anonymous_id = models.CharField(max_length=128, blank=True)
    user_hash = models.CharField(max_length=64, blank=True, help_text="Keyed hash of the user id.")
    timestamp = models.DateTimeField(help_text="When it happened, corrected for the sender's clock skew.")
    received_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    device_type = models.CharField(max_length=16, blank=True)
    os = models.CharField(max_length=50, blank=True)
    browser = models.CharField(max_length=50, blank=True)
    country = models.CharField(max_length=2, blank=True)
    traffic_source = models.CharField(max_length=16, blank=True)
    local_hour = models.PositiveSmallIntegerField(null=True, blank=True)
    local_weekday = models.PositiveSmallIntegerField(null=True, blank=True, help_text="0 = Monday")
    ip_truncated = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "message_id"], name="event_source_message_unique"),
        ]
        indexes = [
            models.Index(fields=["profile", "-timestamp"], name="event_profile_time"),
            models.Index(fields=["type", "timestamp"], name="event_type_time"),
            models.Index(fields=["timestamp"], name="event_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} @ {self.timestamp:%Y-%m-%d %H:%M}"


class IngestRejection(models.Model):
    """Daily count of refused events per source (none when the key was unknown) and reason."""

    day = models.DateField()
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=64)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(Coalesce("source", 0), "day", "reason", name="ingest_rejection_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.reason}: {self.count}"
