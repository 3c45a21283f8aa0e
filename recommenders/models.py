"""Models of the recommenders app: catalogue, configurations, trained versions, placements,
curated collections, explicit feedback and the log of recommendations served."""

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from tracking.models import Profile


def default_event_weights() -> dict:
    return {"product_view": 1, "add_to_cart": 4, "purchase": 8, "thumbs_down": -4}


class Item(models.Model):
    """A catalogue item, known by the id the customer's site uses (SKU, article slug, store id)."""

    external_id = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    categories = models.JSONField(default=list, blank=True, help_text='e.g. ["shoes", "running"]')
    tags = models.JSONField(default=list, blank=True, help_text='e.g. ["waterproof", "sale"]')
    price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    in_stock = models.BooleanField(default=True)
    available_from = models.DateTimeField(null=True, blank=True)
    available_until = models.DateTimeField(null=True, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    is_stub = models.BooleanField(
        default=False,
        help_text="Created from an event naming an item the catalogue did not know; cleared by an upsert.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["external_id"]
        indexes = [models.Index(fields=["updated_at"], name="rec_item_updated")]

    def __str__(self) -> str:
        return self.title or self.external_id


class RecommenderConfig(models.Model):
    """How to train one recommender: algorithm and parameters, event weights, decay, schedule and
    the promotion gate. Placements and experiments point at a configuration by key."""

    key = models.SlugField(max_length=64, unique=True, help_text='e.g. "default"')
    name = models.CharField(max_length=200, blank=True)
    algorithm = models.CharField(max_length=64, default="default", help_text="Algorithm name for build().")
    params = models.JSONField(default=dict, blank=True, help_text="Hyperparameters passed to the algorithm.")
    event_weights = models.JSONField(
        default=default_event_weights,
        help_text="Weight per event type; a negative weight is a negative signal (thumbs_down is explicit feedback).",
    )
    half_life_days = models.FloatField(
        null=True, blank=True, default=30.0, help_text="Interactions lose half their weight every this many days."
    )
    schedule_hours = models.PositiveIntegerField(
        default=24, help_text="A live model older than this is stale: it is flagged and retrained."
    )
    promotion_metric = models.CharField(max_length=32, default="ndcg@10")
    promotion_tolerance = models.FloatField(
        default=0.02, help_text="Relative drop on the promotion metric still accepted (0.02 = 2%)."
    )
    top_n = models.PositiveIntegerField(default=50, help_text="Length of the precomputed list per active user.")
    active_days = models.PositiveIntegerField(
        default=30, help_text="Users with events in this many days get precomputed lists."
    )
    tuning_budget_seconds = models.PositiveIntegerField(
        default=0, help_text="Time budget of the hyperparameter search per training (0: no tuning)."
    )
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        verbose_name = "recommender configuration"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="rec_config_one_default",
                violation_error_message="Another configuration is already the default.",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.key

    def clean(self) -> None:
        weights = self.event_weights
        if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in weights.items()
        ):
            raise ValidationError({"event_weights": 'must map event types to numbers, e.g. {"purchase": 8}'})
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValidationError({"half_life_days": "must be positive (leave empty for no decay)"})
        if not isinstance(self.params, dict):
            raise ValidationError({"params": "must be an object of hyperparameters"})


class ModelVersion(models.Model):
    """One trained model of a configuration, with its evaluation next to the popularity baseline."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        LIVE = "live", "Live"
        REJECTED = "rejected", "Rejected"
        RETIRED = "retired", "Retired"

    config = models.ForeignKey(RecommenderConfig, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    reason = models.TextField(blank=True, help_text="Why it was promoted, kept as candidate or rejected.")
    algorithm = models.CharField(max_length=64, blank=True)
    trained_at = models.DateTimeField()
    trained_through = models.DateTimeField(null=True, blank=True, help_text="Time of the last event used.")
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text='{"model": {...}, "popularity": {...}}')
    tuning = models.JSONField(default=list, blank=True, help_text="Trials of the hyperparameter search.")
    matrix_stats = models.JSONField(default=dict, blank=True)
    artifact = models.CharField(max_length=500, blank=True, help_text="Path in the default storage.")
    timings = models.JSONField(default=dict, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    health = models.JSONField(default=dict, blank=True, help_text="Last drift and staleness check.")
    fingerprint = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="Hash of the inputs: equal inputs, no new training."
    )

    class Meta:
        ordering = ["config", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["config", "version"], name="rec_version_unique"),
            models.UniqueConstraint(fields=["config"], condition=models.Q(status="live"), name="rec_version_one_live"),
        ]

    def __str__(self) -> str:
        return f"{self.config.key} v{self.version} ({self.status})"


class Placement(models.Model):
    """A place on the site that shows recommendations, with its merchandising rules."""

    key = models.SlugField(max_length=64, unique=True, help_text='e.g. "home", "pdp-similar", "cart"')
    name = models.CharField(max_length=200, blank=True)
    config = models.ForeignKey(
        RecommenderConfig,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="placements",
        help_text="Empty: the default configuration.",
    )
    n = models.PositiveIntegerField(default=10)
    rules = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"exclude_seen": false, "exclude_purchased": true, "in_stock_only": true, '
        '"category_cap": 3, "mmr_lambda": 0.7, "exploration": 0.1, "pins": {"sku-1": 0}, '
        '"boosts": {"sku-2": 1.5}, "buries": ["sku-3"]}',
    )
    fallback_collection = models.ForeignKey(
        "Collection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Curated list shown to visitors the models know nothing about.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name or self.key


class Collection(models.Model):
    """A curated, ordered list of items maintained in the admin (e.g. the new-visitor default)."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_new_visitor_default = models.BooleanField(
        default=False, help_text="Shown to visitors with no history when a placement names no collection."
    )
    items = models.ManyToManyField(Item, through="CollectionItem", related_name="collections")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_new_visitor_default"],
                condition=models.Q(is_new_visitor_default=True),
                name="rec_collection_one_new_visitor_default",
                violation_error_message="Another collection is already the new-visitor default.",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.key


class CollectionItem(models.Model):
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="entries")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["collection", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["collection", "item"], name="rec_collection_item_unique")]

    def __str__(self) -> str:
        return f"{self.collection_id}#{self.position}: {self.item_id}"


class Feedback(models.Model):
    """Explicit thumbs up/down of a visitor on an item; down excludes it and trains as a negative."""

    class Kind(models.TextChoices):
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="feedback")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "feedback"
        constraints = [models.UniqueConstraint(fields=["profile", "item"], name="rec_feedback_unique")]

    def __str__(self) -> str:
        return f"{self.kind} {self.item_id} by {self.profile_id}"


class RecommendationServed(models.Model):
    """A list served to a visitor; impression and click events carry its token back (CTR per version)."""

    token = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    profile = models.ForeignKey(Profile, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    placement = models.CharField(max_length=64, blank=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="served"
    )
    algorithm = models.CharField(max_length=64, blank=True)
    items = models.JSONField(default=list, help_text="External ids in the order served.")
    variant = models.CharField(max_length=100, blank=True, help_text="Experiment variant, when one decided.")
    served_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "recommendations served"
        indexes = [models.Index(fields=["model_version", "served_at"], name="rec_served_version_time")]

    def __str__(self) -> str:
        return f"{self.token} ({self.placement})"
