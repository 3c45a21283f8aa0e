"""Admin of the recommenders app: catalogue, configurations (event weights, schedule, gate) with a
retrain button, model versions with metrics next to the popularity baseline and the live version,
health alerts (staleness, CTR, drift), placements, curated collections; feedback and served lists
read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from unfold.admin import ModelAdmin, TabularInline
from unfold.decorators import action, display

from recommenders.models import (
    Collection,
    CollectionItem,
    Feedback,
    Item,
    ModelVersion,
    Placement,
    RecommendationServed,
    RecommenderConfig,
)
from recommenders.services.promotion import version_promote
from recommenders.services.training import training_enqueue

METRICS_SHOWN = ("precision@{k}", "recall@{k}", "map@{k}", "ndcg@{k}", "coverage", "diversity")
HISTORY_LENGTH = 20


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_table(version: ModelVersion) -> str:
    """Model, popularity baseline and (when compared) the live version, metric by metric."""
    metrics = version.metrics or {}
    k = metrics.get("k", 10)
    sides = [("This model", metrics.get("model") or {}), ("Popularity", metrics.get("popularity") or {})]
    if metrics.get("live"):
        sides.append((f"Live v{metrics.get('live_version')} (same holdout)", metrics["live"]))
    names = [name.format(k=k) for name in METRICS_SHOWN]
    head = format_html_join("", "<th style='padding:2px 10px'>{}</th>", ((label,) for label, _ in sides))
    base = sides[1][1]

    def cells(name):
        out = []
        for label, side in sides:
            value = side.get(name)
            ratio = ""
            if label == "This model" and value is not None and base.get(name):
                ratio = f" (×{value / base[name]:.2f})"
            out.append((_fmt(value) + ratio,))
        return format_html_join("", "<td style='padding:2px 10px'>{}</td>", out)

    body = format_html_join(
        "", "<tr><th style='text-align:left;padding:2px 10px'>{}</th>{}</tr>", ((n, cells(n)) for n in names)
    )
    return format_html(
        "<table><tr><th></th>{}</tr>{}</table><p>Evaluated on {} users' latest interactions.</p>",
        head,
        body,
        (metrics.get("model") or {}).get("users", 0),
    )


def alerts_of(version: ModelVersion | None) -> list[str]:
    return list((version.health or {}).get("alerts") or []) if version else []


@admin.register(Item)
class ItemAdmin(ModelAdmin):
    list_display = ["external_id", "title", "category_list", "price", "in_stock", "is_stub", "updated_at"]
    list_filter = ["in_stock", "is_stub"]
    search_fields = ["external_id", "title"]
    readonly_fields = ["is_stub", "created_at", "updated_at"]

    @display(description="Categories")
    def category_list(self, obj: Item) -> str:
        return ", ".join(obj.categories or [])

    def save_model(self, request, obj: Item, form, change) -> None:
        obj.is_stub = False  # described by hand: no longer a stub
        super().save_model(request, obj, form, change)


class VersionInline(ReadOnlyMixin, TabularInline):
    model = ModelVersion
    fields = ["version", "status", "algorithm", "trained_at", "headline", "reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-version"]
    verbose_name_plural = "Versions (newest first)"

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-version")

    @display(description="Metric vs popularity")
    def headline(self, obj: ModelVersion) -> str:
        return _headline(obj)


def _headline(obj: ModelVersion) -> str:
    metric = obj.config.promotion_metric
    ours = (obj.metrics.get("model") or {}).get(metric)
    base = (obj.metrics.get("popularity") or {}).get(metric)
    if ours is None:
        return "—"
    ratio = f" (×{ours / base:.2f})" if base else ""
    return f"{metric} {ours:.4f} vs {_fmt(base)}{ratio}"


@admin.register(RecommenderConfig)
class RecommenderConfigAdmin(ModelAdmin):
    list_display = ["key", "name", "algorithm", "live", "live_metric", "health", "is_default"]
    search_fields = ["key", "name"]
    readonly_fields = ["created_at", "updated_at", "history"]
    fieldsets = [
        (None, {"fields": ["key", "name", "is_default", "algorithm", "params"]}),
        ("Interactions", {"fields": ["event_weights", "half_life_days"]}),
        (
            "Training and promotion",
            {
                "fields": [
                    "schedule_hours",
                    "promotion_metric",
                    "promotion_tolerance",
                    "tuning_budget_seconds",
                    "top_n",
                    "active_days",
                ]
            },
        ),
        ("History", {"fields": ["history", "created_at", "updated_at"]}),
    ]
    inlines = [VersionInline]
    actions = ["retrain"]
    actions_detail = ["retrain_detail"]

    def _live(self, obj: RecommenderConfig) -> ModelVersion | None:
        return obj.versions.filter(status=ModelVersion.Status.LIVE).first()

    @display(description="Live version")
    def live(self, obj: RecommenderConfig) -> str:
        version = self._live(obj)
        return f"v{version.version} ({version.algorithm})" if version else "none yet"

    @display(description="Metric vs popularity")
    def live_metric(self, obj: RecommenderConfig) -> str:
        version = self._live(obj)
        return _headline(version) if version else "—"

    @display(description="Health", label={"ok": "success", "alert": "danger", "—": "info"})
    def health(self, obj: RecommenderConfig) -> str:
        version = self._live(obj)
        if version is None or not version.health:
            return "—"
        return "alert" if alerts_of(version) else "ok"

    @display(description="Metrics history")
    def history(self, obj: RecommenderConfig) -> str:
        if not obj.pk:
            return "Save the configuration, then train it."
        rows = []
        for version in obj.versions.order_by("-version")[:HISTORY_LENGTH]:
            metric = obj.promotion_metric
            rows.append(
                (
                    version.version,
                    version.status,
                    version.trained_at.strftime("%Y-%m-%d %H:%M"),
                    _fmt((version.metrics.get("model") or {}).get(metric)),
                    _fmt((version.metrics.get("popularity") or {}).get(metric)),
                    "; ".join(alerts_of(version)) or version.reason[:160],
                )
            )
        if not rows:
            return "No version trained yet: use “Train now”."
        body = format_html_join(
            "",
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            rows,
        )
        return format_html(
            "<table><tr><th>Version</th><th>Status</th><th>Trained</th><th>{} (model)</th><th>Popularity</th>"
            "<th>Reason / alerts</th></tr>{}</table>",
            obj.promotion_metric,
            body,
        )

    @action(description="Train now")
    def retrain(self, request: HttpRequest, queryset: QuerySet[RecommenderConfig]) -> None:
        for config in queryset:
            training_enqueue(config=config, force=True)
        messages.success(request, f"Training queued for {queryset.count()} configuration(s).")

    @action(description="Train now", url_path="train")
    def retrain_detail(self, request: HttpRequest, object_id: int):
        config = RecommenderConfig.objects.get(pk=object_id)
        training_enqueue(config=config, force=True)
        messages.success(request, f"Training of {config.key} queued; its version appears below when done.")
        return redirect("admin:recommenders_recommenderconfig_change", object_id)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = ["__str__", "status_badge", "algorithm", "trained_at", "age", "metric", "alerts", "reason_short"]
    list_filter = ["status", "config"]
    ordering = ["config", "-version"]
    readonly_fields = [
        "config",
        "version",
        "status",
        "reason",
        "algorithm",
        "trained_at",
        "trained_through",
        "published_at",
        "comparison",
        "health_report",
        "params",
        "tuning",
        "matrix_stats",
        "timings",
        "artifact",
    ]
    fields = readonly_fields
    actions_detail = ["make_live", "retrain_detail"]

    @display(
        description="Status",
        label={"live": "success", "candidate": "warning", "rejected": "danger", "retired": "info"},
    )
    def status_badge(self, obj: ModelVersion) -> str:
        return obj.status

    @display(description="Age")
    def age(self, obj: ModelVersion) -> str:
        hours = (timezone.now() - obj.trained_at).total_seconds() / 3600
        stale = obj.status == ModelVersion.Status.LIVE and hours > obj.config.schedule_hours
        text = f"{hours:.0f} h" if hours < 72 else f"{hours / 24:.0f} d"
        return f"{text} (stale)" if stale else text

    @display(description="Metric vs popularity")
    def metric(self, obj: ModelVersion) -> str:
        return _headline(obj)

    @display(description="Alerts")
    def alerts(self, obj: ModelVersion) -> str:
        found = alerts_of(obj)
        if not found:
            return "—"
        return format_html("<span style='color:#dc2626'>{}</span>", "; ".join(found))

    @display(description="Reason")
    def reason_short(self, obj: ModelVersion) -> str:
        return obj.reason[:120]

    @display(description="Metrics: this model, popularity baseline, live version")
    def comparison(self, obj: ModelVersion) -> str:
        return metrics_table(obj)

    @display(description="Health (CTR, drift, staleness)")
    def health_report(self, obj: ModelVersion) -> str:
        health = obj.health or {}
        if not health:
            return "Not checked yet (checked every half hour while live)."
        recent = (health.get("ctr") or {}).get("recent") or {}
        drift = health.get("drift") or {}
        return format_html(
            "<p>Checked {}: {} h old{}.</p><p>CTR last 24 h: {} ({} clicks / {} {}).</p>"
            "<p>Event mix since training: total variation {}, PSI {} over {} events.</p><p>{}</p>",
            health.get("checked_at", "?"),
            health.get("age_hours", "?"),
            ", stale" if health.get("stale") else "",
            _fmt(recent.get("ctr")),
            recent.get("clicks", 0),
            recent.get("impressions", 0),
            recent.get("basis", ""),
            _fmt(drift.get("tv")),
            _fmt(drift.get("psi")),
            drift.get("events_since", 0),
            "; ".join(health.get("alerts") or []) or "No alerts.",
        )

    @action(description="Make live (over the gate)", url_path="make-live")
    def make_live(self, request: HttpRequest, object_id: int):
        version = ModelVersion.objects.select_related("config").get(pk=object_id)
        if version.status == ModelVersion.Status.LIVE:
            messages.info(request, f"v{version.version} is already live.")
        elif not version.artifact:
            messages.error(request, f"v{version.version} has no artifact any more; train a new version.")
        else:
            outcome = version_promote(version=version, force=True)
            level = messages.success if outcome.status == ModelVersion.Status.LIVE else messages.error
            level(request, f"v{version.version}: {outcome.status} — {outcome.reason}")
        return redirect("admin:recommenders_modelversion_change", object_id)

    @action(description="Retrain this configuration", url_path="retrain")
    def retrain_detail(self, request: HttpRequest, object_id: int):
        version = ModelVersion.objects.select_related("config").get(pk=object_id)
        training_enqueue(config=version.config, force=True)
        messages.success(request, f"Training of {version.config.key} queued.")
        return redirect("admin:recommenders_modelversion_change", object_id)


@admin.register(Placement)
class PlacementAdmin(ModelAdmin):
    list_display = ["key", "name", "config", "n", "fallback_collection"]
    search_fields = ["key", "name"]
    autocomplete_fields = ["fallback_collection"]


class CollectionItemInline(TabularInline):
    model = CollectionItem
    fields = ["position", "item"]
    autocomplete_fields = ["item"]
    extra = 1
    ordering = ["position", "id"]


@admin.register(Collection)
class CollectionAdmin(ModelAdmin):
    list_display = ["key", "name", "size", "is_new_visitor_default", "updated_at"]
    search_fields = ["key", "name"]
    inlines = [CollectionItemInline]

    @display(description="Items")
    def size(self, obj: Collection) -> int:
        return obj.entries.count()


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = ["profile", "item", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["item__external_id"]
    list_select_related = ["item", "profile"]


@admin.register(RecommendationServed)
class RecommendationServedAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = ["token", "placement", "model_version", "algorithm", "variant", "served_at"]
    list_filter = ["placement", "algorithm"]
    search_fields = ["token"]
    list_select_related = ["model_version__config"]
    date_hierarchy = "served_at"
