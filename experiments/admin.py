"""Admin for experiments: variants inline, start/pause/stop, results with verdict, uplift chart, power calculator."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import mark_safe
from unfold.admin import ModelAdmin, TabularInline
from unfold.decorators import action, display

from experiments.models import Experiment, Metric, Variant
from experiments.selectors import experiment_results, snapshot_history, units_per_day
from experiments.services.experiments import (
    ExperimentError,
    experiment_pause,
    experiment_start,
    experiment_stop,
    experiment_touched,
    power_plan,
)
from experiments.services.rollup import experiment_catch_up

STARTED_READONLY = ["key", "kind", "layer", "salt", "source"]


@admin.register(Metric)
class MetricAdmin(ModelAdmin):
    list_display = ["key", "name", "kind", "source", "window_days"]
    list_filter = ["kind", "source"]
    search_fields = ["key", "name"]


class VariantFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        controls = sum(bool(f.cleaned_data.get("is_control")) for f in kept)
        if kept and controls != 1:
            raise ValidationError("Exactly one variant must be the control.")


class VariantInline(TabularInline):
    model = Variant
    formset = VariantFormSet
    fields = ["key", "name", "weight", "is_control", "payload", "factors", "position"]
    extra = 0

    def has_delete_permission(self, request, obj=None) -> bool:
        # Units were assigned to these variants: removing one would orphan them.
        return obj is None or obj.status == Experiment.Status.DRAFT


def _chart(experiment: Experiment) -> dict:
    """Relative uplift of each variant on the primary metric over time, with its confidence band."""
    snapshots = snapshot_history(experiment_id=experiment.pk)
    primary = experiment.primary_metric.key if experiment.primary_metric else None
    labels, series = [], {}
    for snapshot in snapshots:
        labels.append(snapshot.taken_at.strftime("%d %b %H:%M"))
        comparisons = ((snapshot.results or {}).get("analysis") or {}).get("comparisons", [])
        for c in comparisons:
            if c.get("metric") != primary:
                continue
            row = series.setdefault(c["variant"], {"mid": [], "lo": [], "hi": []})
            ci = c.get("rel_ci") or [None, None]
            for name, value in (("mid", c.get("rel_uplift")), ("lo", ci[0]), ("hi", ci[1])):
                row[name].append(None if value is None else round(value * 100, 3))
    return {"labels": labels, "series": series, "metric": primary}


@admin.register(Experiment)
class ExperimentAdmin(ModelAdmin):
    list_display = ["key", "name", "status_badge", "kind", "layer", "traffic", "source", "started_at"]
    list_filter = ["status", "kind", "source"]
    search_fields = ["key", "name", "hypothesis"]
    inlines = [VariantInline]
    filter_horizontal = ["secondary_metrics", "guardrail_metrics"]
    readonly_fields = [
        "status",
        "started_at",
        "stopped_at",
        "slot_start",
        "slot_end",
        "planned_units_per_variant",
        "results",
    ]
    fieldsets = [
        (None, {"fields": ["source", "key", "name", "hypothesis", "status", "kind", "started_at", "stopped_at"]}),
        ("Results", {"fields": ["results"]}),
        (
            "Traffic and targeting",
            {"fields": ["layer", "traffic", "slot_start", "slot_end", "targeting", "consent_purpose"]},
        ),
        ("Metrics", {"fields": ["primary_metric", "secondary_metrics", "guardrail_metrics", "cuped_days"]}),
        ("Power", {"fields": ["baseline", "mde", "alpha", "power", "planned_units_per_variant"]}),
        ("Advanced", {"classes": ["collapse"], "fields": ["salt"]}),
    ]
    actions = ["start_selected", "stop_selected"]
    actions_detail = ["start_detail", "pause_detail", "stop_detail", "power_detail"]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            fields += STARTED_READONLY
        return fields

    @display(description="Status", label={"running": "success", "paused": "warning", "stopped": "danger"})
    def status_badge(self, obj: Experiment) -> str:
        return obj.status

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        try:
            experiment_touched(experiment=form.instance)
        except ExperimentError as exc:
            messages.error(request, exc.message)

    @display(description="Results")
    def results(self, obj: Experiment) -> str:
        if not obj.pk:
            return "Save and start the experiment to see results."
        experiment_catch_up(experiment=obj)
        data = experiment_results(experiment=obj)
        analysis = data.get("analysis") or {}
        context = {
            "experiment": obj,
            "data": data,
            "analysis": analysis,
            "comparisons": analysis.get("comparisons", []),
            "srm": analysis.get("srm"),
            "breaches": analysis.get("guardrail_breaches", []),
            "chart": _chart(obj),
            "chart_id": f"uplift-{obj.pk}",
            "chart_data_id": f"uplift-data-{obj.pk}",
            "power_url": reverse("admin:experiments_experiment_power", args=[obj.pk]),
        }
        return mark_safe(render_to_string("experiments/admin/results.html", context))

    def _run(self, request: HttpRequest, experiment: Experiment, service) -> None:
        try:
            service(experiment=experiment)
        except ExperimentError as exc:
            messages.error(request, f"{experiment.key}: {exc.message}")
        else:
            messages.success(request, f"{experiment.key}: {experiment.status}")

    @admin.action(description="Start selected experiments")
    def start_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            self._run(request, experiment, experiment_start)

    @admin.action(description="Stop selected experiments")
    def stop_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            self._run(request, experiment, experiment_stop)

    @action(description="Start", url_path="start")
    def start_detail(self, request: HttpRequest, object_id: int):
        self._run(request, Experiment.objects.get(pk=object_id), experiment_start)
        return redirect("admin:experiments_experiment_change", object_id)

    @action(description="Pause", url_path="pause")
    def pause_detail(self, request: HttpRequest, object_id: int):
        self._run(request, Experiment.objects.get(pk=object_id), experiment_pause)
        return redirect("admin:experiments_experiment_change", object_id)

    @action(description="Stop", url_path="stop")
    def stop_detail(self, request: HttpRequest, object_id: int):
        self._run(request, Experiment.objects.get(pk=object_id), experiment_stop)
        return redirect("admin:experiments_experiment_change", object_id)

    @action(description="Power calculator", url_path="power-calculator")
    def power_detail(self, request: HttpRequest, object_id: int):
        return redirect("admin:experiments_experiment_power", object_id)

    def get_urls(self):
        urls = [
            path(
                "<int:object_id>/power/",
                self.admin_site.admin_view(self.power_view),
                name="experiments_experiment_power",
            )
        ]
        return urls + super().get_urls()

    def power_view(self, request: HttpRequest, object_id: int):
        """Baseline, MDE, alpha and power in; units per variant and days at the current traffic out."""
        experiment = Experiment.objects.get(pk=object_id)
        variants = max(experiment.variants.count(), 2)
        raw = {
            "baseline": request.GET.get("baseline", experiment.baseline if experiment.baseline is not None else 0.05),
            "mde": request.GET.get("mde", experiment.mde if experiment.mde is not None else 0.1),
            "alpha": request.GET.get("alpha", experiment.alpha),
            "power": request.GET.get("power", experiment.power),
        }
        plan, error = None, None
        try:
            values = {name: float(value) for name, value in raw.items()}
            plan = power_plan(**values, variants=variants, units_per_day=units_per_day(experiment=experiment))
        except (TypeError, ValueError) as exc:
            error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Power calculator: {experiment}",
            "experiment": experiment,
            "inputs": raw,
            "variants": variants,
            "plan": plan,
            "error": error,
        }
        return TemplateResponse(request, "experiments/admin/power.html", context)
