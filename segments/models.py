"""Segments (rule trees), their memberships and history, size snapshots, and per-profile ML scores."""

from django.db import models


class Segment(models.Model):
    """A named rule over profiles. `version` rises with every rule change; `computed_version` is the
    version the stored memberships were computed against (a stale recompute never overwrites a newer one)."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rule = models.JSONField(default=dict, help_text="Rule tree (see the README: all/any/not and conditions).")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    template = models.CharField(max_length=50, blank=True, help_text="Key of the built-in template it was made from.")
    version = models.PositiveIntegerField(default=1)
    computed_version = models.PositiveIntegerField(default=0)
    member_count = models.PositiveBigIntegerField(default=0)
    last_computed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name or self.key


class SegmentMembership(models.Model):
    """A profile currently in a segment.

    Written in bulk (a recompute from empty writes one row per matching profile, 700k for "returning
    visitors" on a million profiles), so the table carries only the indexes its reads need, and no
    database foreign keys: a deferred foreign-key check is a trigger per row at commit that also
    locks the referenced profile row (as long again as the insert itself). Integrity is kept instead
    by the writers: ids come from the profile table in the same statement, the recompute locks its
    segment row against deletion (services/membership.py), Django cascades deletes of segments and
    profiles, and a row left by a profile deleted during a recompute is removed as a leaver by the
    next one (it matches nothing)."""

    # Lookups by segment use the unique (segment, profile) index; by profile, the one below.
    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships", db_constraint=False, db_index=False
    )
    profile = models.ForeignKey(
        "tracking.Profile",
        on_delete=models.CASCADE,
        related_name="segment_memberships",
        db_constraint=False,
        db_index=False,
    )
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "profile"], name="segment_membership_unique"),
        ]
        # The unique constraint serves segment -> members; this one serves profile -> segments.
        indexes = [models.Index(fields=["profile"], name="segment_membership_profile")]

    def __str__(self) -> str:
        return f"{self.profile_id} in {self.segment_id}"


class SegmentMembershipChange(models.Model):
    """History: a profile entering or leaving a segment, and which path noticed it."""

    class Kind(models.TextChoices):
        ENTERED = "entered"
        LEFT = "left"

    class Via(models.TextChoices):
        REALTIME = "realtime"
        BATCH = "batch"

    # An append-only log written in bulk (a new segment on a million profiles writes as many rows): no
    # database constraint checks each row; deleting a segment or a profile still deletes its rows
    # (Django cascades them), and rows are only ever written with ids that exist.
    # No single-column indexes either: the (segment, -at) and (profile, -at) ones below serve those lookups.
    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="changes", db_constraint=False, db_index=False
    )
    profile = models.ForeignKey(
        "tracking.Profile",
        on_delete=models.CASCADE,
        related_name="segment_changes",
        db_constraint=False,
        db_index=False,
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    at = models.DateTimeField()
    via = models.CharField(max_length=8, choices=Via.choices)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["segment", "-at"], name="segment_change_segment_at"),
            models.Index(fields=["profile", "-at"], name="segment_change_profile_at"),
        ]

    def __str__(self) -> str:
        return f"{self.profile_id} {self.kind} {self.segment_id} ({self.via})"


class SegmentSizeSnapshot(models.Model):
    """The size of a segment after a recompute, for size-over-time charts."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="snapshots")
    at = models.DateTimeField()
    size = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["segment", "at"], name="segment_snapshot_at")]

    def __str__(self) -> str:
        return f"{self.segment_id} @ {self.at:%Y-%m-%d %H:%M}: {self.size}"


class ScoreModel(models.Model):
    """A trained scoring model (e.g. churn risk, RFM clusters): its version, metrics and artifact."""

    name = models.CharField(max_length=50)
    version = models.PositiveIntegerField()
    trained_at = models.DateTimeField()
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text='Held-out metrics, e.g. {"auc": 0.81}.')
    artifact = models.CharField(max_length=300, blank=True, help_text="Path of the artifact in Django storage.")
    is_live = models.BooleanField(default=False)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="score_model_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class ProfileScore(models.Model):
    """A score of a profile by name ("churn_risk", "rfm_segment"): a value and, for clusters, a label."""

    profile = models.ForeignKey("tracking.Profile", on_delete=models.CASCADE, related_name="scores")
    name = models.CharField(max_length=50)
    value = models.FloatField(null=True, blank=True)
    label = models.CharField(max_length=100, blank=True)
    model_version = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "name"], name="profile_score_unique")]
        indexes = [models.Index(fields=["name", "value"], name="profile_score_name_value")]

    def __str__(self) -> str:
        return f"{self.name}={self.value} {self.label}".strip()
