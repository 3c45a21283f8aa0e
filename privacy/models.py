"""What the privacy capability stores: traits kept encrypted at rest, data-subject requests."""

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class EncryptedTrait(models.Model):
    """A trait a source chose to keep (e.g. first name for greetings), stored only as a Fernet token."""

    profile = models.ForeignKey("tracking.Profile", on_delete=models.CASCADE, related_name="encrypted_traits")
    name = models.CharField(max_length=100)
    token = models.TextField(help_text="Fernet token; readable only with FIELD_ENCRYPTION_KEYS.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "name"], name="encrypted_trait_unique")]

    def __str__(self) -> str:
        return f"{self.name} (encrypted)"


class SubjectRequest(models.Model):
    """A data-subject request (export or erasure). Once done it holds no personal data of an erased
    person: only the receipt (id, times, what was deleted)."""

    class Kind(models.TextChoices):
        EXPORT = "export", "Export (access, portability)"
        ERASE = "erase", "Erasure"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        NOT_FOUND = "not_found", "No data held"
        FAILED = "failed"

    class Regulation(models.TextChoices):
        GDPR = "gdpr", "GDPR (30 days)"
        CCPA = "ccpa", "CCPA (45 days)"

    DEADLINE_DAYS = {Regulation.GDPR: 30, Regulation.CCPA: 45}

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    regulation = models.CharField(max_length=10, choices=Regulation.choices, default=Regulation.GDPR)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    source = models.ForeignKey("tracking.Source", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject_kind = models.CharField(max_length=16, help_text="Which identifier named the person.")
    subject_hash = models.CharField(max_length=64, help_text="Keyed hash of that identifier, never the clear value.")
    due_at = models.DateTimeField(help_text="Statutory deadline.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["due_at"]
        indexes = [models.Index(fields=["status", "due_at"], name="subject_request_queue")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.id} ({self.status})"


class AccessLog(models.Model):
    """Who looked at or exported whose data, and when (for the privacy audit). It holds the profile's
    pseudonymous id only; after an erasure that id links to nothing."""

    class Action(models.TextChoices):
        VIEW = "view"
        EXPORT = "export"
        ERASE = "erase"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, help_text="Admin user, or the API key that called.")
    channel = models.CharField(max_length=10, help_text="admin, api or task")
    action = models.CharField(max_length=10, choices=Action.choices)
    profile_uuid = models.UUIDField(null=True, blank=True)
    detail = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["profile_uuid", "at"], name="access_log_profile")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.profile_uuid}"


class Purpose(models.Model):
    """What data is processed for (necessary, analytics, personalization, marketing, ...)."""

    class LegalBasis(models.TextChoices):
        CONSENT = "consent"
        LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest"
        CONTRACT = "contract"
        LEGAL_OBLIGATION = "legal_obligation", "Legal obligation"

    key = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, help_text="Shown to visitors in the consent banner.")
    legal_basis = models.CharField(max_length=24, choices=LegalBasis.choices, default=LegalBasis.CONSENT)
    required = models.BooleanField(default=False, help_text="Always on; visitors cannot refuse it (necessary).")
    event_types = models.JSONField(
        default=list,
        blank=True,
        help_text='Event types collected for this purpose, e.g. ["email_open"]. Any other event type counts '
        "as the default purpose (CONSENT_DEFAULT_PURPOSE, analytics).",
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "key"]

    def __str__(self) -> str:
        return self.name


class CategoryMapping(models.Model):
    """A consent category as consent tools name it (Segment's `categoryPreferences`) -> one of our purposes."""

    category = models.CharField(max_length=100, unique=True, help_text="Compared case-insensitively.")
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="categories")

    def __str__(self) -> str:
        return f"{self.category} -> {self.purpose.key}"


class ConsentRecord(models.Model):
    """One consent decision, appended and never changed."""

    class Status(models.TextChoices):
        GRANTED = "granted"
        DENIED = "denied"
        WITHDRAWN = "withdrawn"

    class Origin(models.TextChoices):
        BANNER = "banner"
        API = "api"
        SDK = "sdk", "SDK (event context)"
        GPC = "gpc", "Global Privacy Control"
        IMPORT = "import"

    profile = models.ForeignKey("tracking.Profile", on_delete=models.CASCADE, related_name="consent_records")
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices)
    origin = models.CharField(max_length=10, choices=Origin.choices)
    policy_version = models.PositiveIntegerField(default=1)
    source = models.ForeignKey("tracking.Source", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["profile", "purpose", "created_at"], name="consent_record_profile")]

    def __str__(self) -> str:
        return f"{self.purpose_id} {self.status} ({self.origin})"


class ConsentState(models.Model):
    """The current decision per profile and purpose: the latest record, kept for fast gating."""

    profile = models.ForeignKey("tracking.Profile", on_delete=models.CASCADE, related_name="consent_states")
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="+")
    granted = models.BooleanField()
    policy_version = models.PositiveIntegerField(default=1)
    origin = models.CharField(max_length=10, choices=ConsentRecord.Origin.choices)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "purpose"], name="consent_state_unique")]

    def __str__(self) -> str:
        return f"{self.purpose_id}: {'granted' if self.granted else 'refused'}"
