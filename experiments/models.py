"""Experiments, their variants and metrics; sticky assignments, exposures and the incremental statistics."""

from __future__ import annotations

import secrets

from django.db import models
from django.db.models import Q

from tracking.models import Profile, Source

LAYER_SLOTS = 10_000  # a layer's units are hashed into this many slots; each experiment holds a range
# Exact decimals, so that the incremental sums and a full recompute agree to the digit: unit values
# keep 3 decimals, so their squares and products (6 decimals) fit the sums' columns without rounding.
UNIT_DIGITS = dict(max_digits=30, decimal_places=3)
STAT_DIGITS = dict(max_digits=40, decimal_places=6)


def salt_generate() -> str:
    return secrets.token_hex(8)


class Metric(models.Model):
    """What an experiment measures per exposed unit, from the unit's events after its first exposure."""

    class Kind(models.TextChoices):
        CONVERSION = "conversion", "Conversion (did the unit do it within the window)"
        COUNT = "count", "Count per unit (mean)"
        REVENUE = "revenue", "Revenue / value per unit (mean)"
        RATIO = "ratio", "Ratio (numerator / denominator events, delta method)"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="experiment_metrics")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CONVERSION)
    event_types = models.JSONField(
        default=list, help_text='Event types counted (the numerator of a ratio), e.g. ["purchase"].'
    )
    property = models.CharField(
        max_length=100,
        blank=True,
        help_text="Numeric property summed instead of counting events (revenue: empty = the event's value).",
    )
    denominator_event_types = models.JSONField(
        default=list, blank=True, help_text='Ratio metrics: event types of the denominator, e.g. ["impression"].'
    )
    window_days = models.PositiveIntegerField(default=14, help_text="Days after the first exposure that count.")
    higher_is_better = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="experiment_metric_source_key")]

    def __str__(self) -> str:
        return self.name or self.key


class Experiment(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        STOPPED = "stopped", "Stopped"

    class Kind(models.TextChoices):
        AB = "ab", "A/B (n variants)"
        FACTORIAL = "factorial", "Multivariate (factorial)"
        BANDIT = "bandit", "Bandit (Thompson sampling)"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="experiments")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    hypothesis = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.AB)
    salt = models.CharField(max_length=32, default=salt_generate, help_text="Seed of the variant hash.")
    layer = models.SlugField(
        max_length=64,
        blank=True,
        help_text="Experiments in one layer never share a unit. Empty: a layer of its own.",
    )
    traffic = models.FloatField(default=1.0, help_text="Share of eligible units that enter (0-1].")
    slot_start = models.PositiveIntegerField(default=0, help_text="First layer slot held (set when started).")
    slot_end = models.PositiveIntegerField(default=0, help_text="Layer slot after the last one held.")
    targeting = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"segments": ["vip"], "device_type": ["mobile"], "country": ["FR"], "traffic_source": ["search"]}',
    )
    consent_purpose = models.CharField(
        max_length=64, blank=True, help_text="Purpose the visitor must allow (empty: EXPERIMENTS_CONSENT_PURPOSE)."
    )
    primary_metric = models.ForeignKey(Metric, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    secondary_metrics = models.ManyToManyField(Metric, blank=True, related_name="+")
    guardrail_metrics = models.ManyToManyField(Metric, blank=True, related_name="+")
    # Power inputs and the planned sample size derived from them.
    baseline = models.FloatField(null=True, blank=True, help_text="Baseline rate (conversion) of the primary metric.")
    mde = models.FloatField(null=True, blank=True, help_text="Minimum detectable effect, relative (0.05 = 5%).")
    alpha = models.FloatField(default=0.05)
    power = models.FloatField(default=0.8)
    planned_units_per_variant = models.PositiveIntegerField(null=True, blank=True)
    cuped_days = models.PositiveIntegerField(default=14, help_text="Pre-exposure days of the CUPED covariate (0: off).")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="experiment_source_key")]
        indexes = [models.Index(fields=["source", "status"], name="experiment_source_status")]

    def __str__(self) -> str:
        return self.name or self.key

    def clean(self) -> None:
        """The admin's forms get the same checks as the API."""
        from django.core.exceptions import ValidationError

        from experiments.services.experiments import ExperimentError, targeting_check

        try:
            targeting_check(self.targeting)
        except ExperimentError as exc:
            raise ValidationError({"targeting": f"{exc.field}: {exc.message}"}) from None
        if not 0 < self.traffic <= 1:
            raise ValidationError({"traffic": "must be in (0, 1]"})


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    weight = models.FloatField(default=1.0, help_text="Relative share of new units (existing units keep theirs).")
    payload = models.JSONField(default=dict, blank=True, help_text='e.g. {"recommender_config": "als-v2"}')
    is_control = models.BooleanField(default=False)
    factors = models.JSONField(default=dict, blank=True, help_text='Factorial cell, e.g. {"order": "new", "fresh": 1}')
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["experiment", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_experiment_key"),
            models.UniqueConstraint(fields=["experiment"], condition=Q(is_control=True), name="variant_one_control"),
        ]

    def __str__(self) -> str:
        return self.key


class Assignment(models.Model):
    """A unit's variant, stored at first assignment and kept whatever changes later (sticky)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="experiment_assignments")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="assignments")
    unit_hash = models.CharField(max_length=16, help_text="Hash of the unit id the variant was drawn from.")
    assigned_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experiment", "profile"], name="assignment_one_per_unit")]
        indexes = [models.Index(fields=["profile"], name="assignment_profile")]

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.profile_id} → {self.variant_id}"


class Exposure(models.Model):
    """The first time a unit saw its variant; metrics count its events from then on."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="experiment_exposures")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="exposures")
    exposed_at = models.DateTimeField()
    # Set when the unit's events changed under it (a profile merge): the next roll-up recomputes it.
    needs_rollup = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experiment", "profile"], name="exposure_one_per_unit")]
        indexes = [
            models.Index(fields=["profile"], name="exposure_profile"),
            models.Index(fields=["experiment", "id"], name="exposure_experiment_id"),
            models.Index(fields=["experiment"], condition=Q(needs_rollup=True), name="exposure_needs_rollup"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.profile_id} @ {self.exposed_at:%Y-%m-%d %H:%M}"


class UnitMetricValue(models.Model):
    """A unit's current value of a metric (and its CUPED covariate), so that sums of squares move by exact deltas."""

    # No database constraints: a full recompute writes a row per unit and metric (millions), and checking
    # the keys at commit cost as much as the recompute itself. Django still cascades deletes, and the
    # rows are only ever written by the roll-up, from exposures and metrics it has just read.
    exposure = models.ForeignKey(Exposure, on_delete=models.CASCADE, related_name="metric_values", db_constraint=False)
    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    value = models.DecimalField(default=0, **UNIT_DIGITS)
    den = models.DecimalField(default=0, **UNIT_DIGITS, help_text="Ratio metrics: the denominator.")
    covariate = models.DecimalField(default=0, **UNIT_DIGITS, help_text="Pre-exposure value (CUPED).")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exposure", "metric"], name="unit_metric_value_unique")]

    def __str__(self) -> str:
        return f"{self.exposure_id}/{self.metric_id}: {self.value}"


class VariantMetricStats(models.Model):
    """Sufficient statistics of one metric in one variant, moved by deltas as events arrive."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="stats")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="stats")
    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="+")
    n = models.PositiveBigIntegerField(default=0)
    sum = models.DecimalField(default=0, **STAT_DIGITS)
    sum_sq = models.DecimalField(default=0, **STAT_DIGITS)
    den_sum = models.DecimalField(default=0, **STAT_DIGITS)
    den_sum_sq = models.DecimalField(default=0, **STAT_DIGITS)
    num_den_sum = models.DecimalField(default=0, **STAT_DIGITS)
    cov_sum = models.DecimalField(default=0, **STAT_DIGITS)
    cov_sum_sq = models.DecimalField(default=0, **STAT_DIGITS)
    cov_cross_sum = models.DecimalField(default=0, **STAT_DIGITS)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "variant metric stats"
        constraints = [
            models.UniqueConstraint(fields=["experiment", "variant", "metric"], name="variant_metric_stats_unique")
        ]

    def __str__(self) -> str:
        return f"{self.variant_id}/{self.metric_id}: n={self.n}"


class RollupState(models.Model):
    """How far the roll-up has read: the events and exposures it has folded into the statistics."""

    experiment = models.OneToOneField(Experiment, on_delete=models.CASCADE, related_name="rollup_state")
    event_id = models.BigIntegerField(default=0)
    exposure_id = models.BigIntegerField(default=0)
    rolled_up_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.experiment_id} @ event {self.event_id}"


class ResultSnapshot(models.Model):
    """The analysis as it stood at a moment: the history behind the uplift-over-time chart."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField()
    results = models.JSONField()

    class Meta:
        ordering = ["experiment", "taken_at"]
        indexes = [models.Index(fields=["experiment", "taken_at"], name="snapshot_experiment_time")]

    def __str__(self) -> str:
        return f"{self.experiment_id} @ {self.taken_at:%Y-%m-%d %H:%M}"
