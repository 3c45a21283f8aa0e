"""Admin for segments: a visual rule builder with live preview, size over time, members and history,
one-click templates, "Recompute now"; the ML score models (AUC, clusters) with "Retrain now"."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from unfold.admin import ModelAdmin
from unfold.decorators import action, display

# tasks_ml: also registers segments.train_scores in every process that sets Django up (web, worker, beat).
from segments import admin_views, tasks_ml
from segments.models import ProfileScore, ScoreModel, Segment
from segments.rules import RuleError, rule_validate

CELL = "padding: 2px 16px 2px 0; text-align: left"


class RuleBuilderWidget(forms.Textarea):
    """The rule's JSON textarea (kept for power users) with the visual builder and preview beside it."""

    template_name = "admin/segments/widgets/rule_builder.html"

    def __init__(self, attrs=None):
        super().__init__(attrs={"rows": 14, "class": "pz-rule-json", "spellcheck": "false", **(attrs or {})})
        self.errors: list[RuleError] = []

    class Media:
        js = ["segments/builder.js"]
        css = {"all": ["segments/builder.css"]}

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["builder"] = admin_views.builder_context(errors=self.errors)
        context["widget"]["open_json"] = bool(self.errors)
        return context

    def render(self, name, value, attrs=None, renderer=None):
        # The project's template engine (templates/admin/segments/...), not the forms renderer's.
        return mark_safe(render_to_string(self.template_name, self.get_context(name, value, attrs)))


class RuleField(forms.JSONField):
    """The rule's JSON, indented: power users read and edit it in the textarea."""

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class SegmentForm(forms.ModelForm):
    rule = RuleField(
        widget=RuleBuilderWidget,
        initial=dict,
        help_text="Build the rule above, or edit its JSON (the format the API takes; see the README).",
    )

    class Meta:
        model = Segment
        fields = ["key", "name", "description", "status", "rule"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.initial.get("rule") and not self.is_bound:
            self.initial["rule"] = {"all": [{"kind": "profile", "field": "event_count", "op": "gte", "value": 1}]}

    def clean_key(self):
        """The services' key rule (lower-case slug), so the save below cannot refuse what the form took."""
        from segments.services.definitions import SegmentInvalid, _check_key

        key = self.cleaned_data.get("key")
        try:
            return _check_key(key)
        except SegmentInvalid as exc:
            raise ValidationError([e.message for e in exc.errors]) from None

    def clean_rule(self):
        rule = self.cleaned_data.get("rule")
        errors = rule_validate(rule)
        if not errors:
            errors = self._reference_errors(rule)
        if errors:
            self.fields["rule"].widget.errors = errors
            raise ValidationError([f"{e.path}: {e.message}" for e in errors])
        return rule

    def _reference_errors(self, rule) -> list[RuleError]:
        """Unknown segments and reference cycles, checked by the same code the services save with."""
        from segments.services.definitions import SegmentInvalid, _check_rule

        key = self.instance.key if self.instance.pk else self.data.get("key") or None
        try:
            _check_rule(rule, key=key)
        except SegmentInvalid as exc:
            return exc.errors
        return []


@admin.register(Segment)
class SegmentAdmin(ModelAdmin):
    form = SegmentForm
    list_display = ["key", "name", "status_badge", "member_count", "last_computed_at", "template", "version"]
    list_filter = ["status", "template"]
    search_fields = ["key", "name", "description"]
    readonly_fields = ["template", "version", "computed_version", "member_count", "last_computed_at"]
    fieldsets = [
        (None, {"fields": ["key", "name", "description", "status"]}),
        ("Rule", {"fields": ["rule"]}),
        ("Computed", {"fields": readonly_fields}),
    ]
    actions = ["recompute_selected"]
    actions_list = ["add_from_template"]
    actions_detail = ["recompute_now"]
    change_form_outer_after_template = "admin/segments/segment/insights.html"

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "key"] if obj else self.readonly_fields

    def get_urls(self):
        custom = [
            path(
                "preview/",
                self.admin_site.admin_view(admin_views.segment_preview_view),
                name="segments_segment_preview",
            ),
            path(
                "templates/",
                self.admin_site.admin_view(self._templates),
                name="segments_segment_templates",
            ),
        ]
        return custom + super().get_urls()

    def _templates(self, request):
        return admin_views.segment_templates_view(request, model_admin=self)

    @display(description="Status", label={"active": "success", "paused": "warning"})
    def status_badge(self, obj: Segment):
        return obj.status, obj.get_status_display()

    def save_model(self, request, obj: Segment, form, change) -> None:
        """Through the services: they bump the version and queue the recompute (the same path as the API)."""
        from segments.services.definitions import segment_create, segment_update

        data = form.cleaned_data
        if change:
            segment_update(
                segment=obj,
                name=data["name"],
                description=data.get("description", ""),
                rule=data["rule"],
                status=data["status"],
            )
            obj.refresh_from_db()
        else:
            created = segment_create(
                key=data["key"],
                name=data["name"],
                description=data.get("description", ""),
                rule=data["rule"],
                status=data["status"],
            )
            obj.pk = created.pk
            obj.refresh_from_db()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        segment = Segment.objects.filter(pk=object_id).first()
        extra = dict(extra_context or {})
        if segment is not None:
            extra.update(admin_views.segment_insights(request, segment))
        return super().change_view(request, object_id, form_url, extra)

    def _recompute(self, request: HttpRequest, segments) -> int:
        from segments.tasks import segment_recompute_task

        queued = 0
        for segment_id, version in segments.values_list("pk", "version"):
            transaction.on_commit(lambda s=segment_id, v=version: segment_recompute_task.delay(s, v))
            queued += 1
        return queued

    @admin.action(description="Recompute the selected segments now", permissions=["change"])
    def recompute_selected(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        queued = self._recompute(request, queryset)
        messages.success(request, f"Queued a recompute of {queued} segment(s).")

    @action(description="Recompute now", url_path="recompute", icon="refresh", permissions=["change"])
    def recompute_now(self, request: HttpRequest, object_id: str):
        segment = Segment.objects.get(pk=object_id)
        back = reverse("admin:segments_segment_change", args=[segment.pk])

        def perform():
            self._recompute(request, Segment.objects.filter(pk=segment.pk))
            messages.success(request, f"Queued a recompute of “{segment.name}”: the members update in a moment.")

        return admin_views.confirm_view(
            request,
            model_admin=self,
            title=f"Recompute “{segment.name}”",
            question=f"Recompute the members of “{segment.name}” now ({segment.member_count} today)?",
            perform=perform,
            back=back,
        )

    @action(description="Add from template", url_path="add-from-template", icon="library_add")
    def add_from_template(self, request: HttpRequest):
        from django.shortcuts import redirect

        return redirect("admin:segments_segment_templates")


@admin.register(ScoreModel)
class ScoreModelAdmin(ModelAdmin):
    """Trained versions, read-only: what they scored on held-out profiles and what they found."""

    list_display = ["name", "version", "live", "trained_at", "auc", "summary"]
    list_filter = ["name", "is_live"]
    fields = ["name", "version", "is_live", "trained_at", "held_out", "clusters", "parameters", "artifact"]
    readonly_fields = fields
    actions_list = ["retrain_now"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # versions are the record of what scored whom; retraining supersedes them

    def has_retrain_permission(self, request, obj=None) -> bool:
        # The pages are read-only, so the model's change permission is free to mean "may retrain".
        return request.user.has_perm("segments.change_scoremodel")

    @display(description="Live", boolean=True)
    def live(self, obj: ScoreModel) -> bool:
        return obj.is_live

    @display(description="AUC (held out)")
    def auc(self, obj: ScoreModel) -> str:
        value = (obj.metrics or {}).get("auc")
        return "—" if value is None else f"{value:.3f}"

    @display(description="Summary")
    def summary(self, obj: ScoreModel) -> str:
        metrics = obj.metrics or {}
        if metrics.get("clusters"):
            return ", ".join(f"{c['name']} ({c['size']})" for c in metrics["clusters"])
        if "n_test" in metrics:
            return (
                f"{metrics.get('profiles', 0)} profiles scored; trained on {metrics['n_train']}, "
                f"tested on {metrics['n_test']}; churn rate {metrics.get('churn_rate', 0):.0%}"
            )
        return ""

    @display(description="Metrics (churn: on held-out profiles)")
    def held_out(self, obj: ScoreModel) -> str:
        metrics = obj.metrics or {}
        rows = [(k, v) for k, v in metrics.items() if k not in ("clusters", "silhouettes")]
        return format_html_join("", "<div><b>{}</b>: {}</div>", rows)

    @display(description="Clusters (centroids)")
    def clusters(self, obj: ScoreModel) -> str:
        clusters = (obj.metrics or {}).get("clusters") or []
        if not clusters:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td style='{}'>{}</td><td style='{}'><b>{}</b></td><td style='{}'>{}</td><td style='{}'>{}</td>"
            "<td style='{}'>{}</td><td style='{}'>{}</td></tr>",
            (
                tuple(
                    part
                    for value in (c["index"], c["name"], c["size"], c["recency_days"], c["visits"], c["revenue"])
                    for part in (CELL, value)
                )
                for c in clusters
            ),
        )
        head = format_html_join(
            "",
            "<th style='{}'>{}</th>",
            ((CELL, h) for h in ("#", "Name", "Profiles", "Days since last visit", "Visits", "Revenue")),
        )
        return format_html("<table><tr>{}</tr>{}</table>", head, rows)

    @display(description="Parameters")
    def parameters(self, obj: ScoreModel) -> str:
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(obj.params, indent=2))

    @action(
        description="Retrain now",
        url_path="retrain",
        icon="model_training",
        permissions=["retrain"],
    )
    def retrain_now(self, request: HttpRequest):
        def perform():
            transaction.on_commit(lambda: tasks_ml.train_scores_task.delay())
            messages.success(request, "Retraining queued: new versions appear here when it is done.")

        return admin_views.confirm_view(
            request,
            model_admin=self,
            title="Retrain the score models",
            question="Retrain the churn-risk and RFM models on today's data and rewrite every profile's scores?",
            perform=perform,
            back=reverse("admin:segments_scoremodel_changelist"),
        )


@admin.register(ProfileScore)
class ProfileScoreAdmin(ModelAdmin):
    list_display = ["profile", "name", "value", "label", "model_version", "computed_at"]
    list_filter = ["name", "label"]
    search_fields = ["=profile__uuid"]
    list_select_related = ["profile"]
    show_full_result_count = False
    readonly_fields = ["profile", "name", "value", "label", "model_version", "computed_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # written by training only; erasure removes them with the profile
