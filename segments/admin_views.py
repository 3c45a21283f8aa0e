"""Admin pages of segments beyond the model forms: the builder's live preview (JSON), the one-click
template page, the confirmation pages of "Recompute now" / "Retrain now", and the change page's insights.

Each is mounted by ``segments.admin`` behind ``admin_site.admin_view`` (staff only, CSRF-checked).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from segments.models import ScoreModel, Segment, SegmentMembership, SegmentMembershipChange
from segments.rules import RuleError, rule_catalogue, rule_validate

PREVIEW_SAMPLE = 10
MEMBERS_PER_PAGE = 25
HISTORY_LENGTH = 25
SNAPSHOTS = 180
MAX_PREVIEW_BYTES = 256 * 1024


def _errors(errors: list[RuleError]) -> list[dict]:
    return [{"path": e.path, "message": e.message} for e in errors]


def _refused(message: str, *, status: int) -> JsonResponse:
    return JsonResponse({"errors": [{"path": "$", "message": message}], "count": None, "sample": []}, status=status)


def _profile_url(profile_id: int) -> str:
    return reverse("admin:tracking_profile_change", args=[profile_id])


@require_POST
def segment_preview_view(request: HttpRequest, **kwargs) -> JsonResponse:
    """The builder's live preview: body ``{"rule": {...}}`` -> ``{"count", "sample", "errors"}``.

    Invalid rules answer 400 with every error and the node path it points at, so the builder can
    show each one against its node."""
    from segments.services.definitions import SegmentInvalid, segment_preview

    if not request.user.has_perm("segments.view_segment"):
        return _refused("you may not view segments", status=403)
    if len(request.body) > MAX_PREVIEW_BYTES:
        return _refused("rule too large", status=400)
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        return _refused(f"body is not JSON: {exc}", status=400)
    if not isinstance(body, dict) or "rule" not in body:
        return _refused('expected {"rule": {...}}', status=400)
    rule = body["rule"]
    errors = rule_validate(rule)
    if errors:
        return JsonResponse({"errors": _errors(errors), "count": None, "sample": []}, status=400)
    try:
        preview = segment_preview(rule=rule, sample=PREVIEW_SAMPLE)
    except SegmentInvalid as exc:
        return JsonResponse({"errors": _errors(exc.errors), "count": None, "sample": []}, status=400)
    return JsonResponse(
        {
            "errors": [],
            "count": preview.count,
            "sample": [
                {
                    "id": profile.pk,
                    "uuid": str(profile.uuid),
                    "label": _profile_label(profile),
                    "url": _profile_url(profile.pk),
                }
                for profile in preview.sample
            ],
        }
    )


def _profile_label(profile) -> str:
    seen = timezone.localtime(profile.last_seen_at).strftime("%Y-%m-%d %H:%M")
    where = " ".join(part for part in (profile.last_device_type, profile.last_country) if part)
    return f"{str(profile.uuid)[:8]} · last seen {seen}" + (f" · {where}" if where else "")


def builder_context(*, errors: list[RuleError] | None = None) -> dict:
    """What the builder widget renders from: the catalogue, the server's errors, and hints for inputs
    (segment keys, score names and the live RFM cluster names, purposes)."""
    from privacy.services.consent import purposes

    live_rfm = ScoreModel.objects.filter(name="rfm_segment", is_live=True).first()
    labels = [cluster["name"] for cluster in (live_rfm.metrics.get("clusters") or [])] if live_rfm else []
    hints = {
        "segments": list(Segment.objects.values_list("key", flat=True)[:500]),
        "scores": sorted({"churn_risk", "rfm_segment", *ScoreModel.objects.values_list("name", flat=True)}),
        "labels": labels,
        "purposes": sorted(purposes()),
        "events": ["*", "page_view", "product_view", "add_to_cart", "purchase", "identify"],
    }
    return {
        "catalogue": json.dumps(rule_catalogue()),
        "errors": json.dumps(_errors(errors or [])),
        "hints": hints,
        "hints_json": json.dumps(hints),
        "preview_url": reverse("admin:segments_segment_preview"),
    }


def segment_templates_view(request: HttpRequest, *, model_admin) -> HttpResponse:
    """One click per built-in template: GET lists them, POST adds the chosen one and opens it."""
    from segments.services.definitions import SegmentInvalid, segment_from_template
    from segments.templates import TEMPLATES

    if request.method == "POST":
        if not model_admin.has_add_permission(request):
            return HttpResponse(status=403)
        try:
            segment = segment_from_template(template_key=request.POST.get("template", ""))
        except SegmentInvalid as exc:
            messages.error(request, str(exc))
            return redirect("admin:segments_segment_templates")
        messages.success(request, f"Added “{segment.name}” ({segment.key}) from its template: edit it as you like.")
        return redirect("admin:segments_segment_change", segment.pk)
    added: dict[str, list[Segment]] = {}
    for segment in Segment.objects.exclude(template="").only("pk", "key", "name", "template"):
        added.setdefault(segment.template, []).append(segment)
    rows = [
        {
            "key": key,
            "name": name,
            "description": description,
            "rule": json.dumps(rule, indent=2),
            "added": added.get(key, []),
        }
        for key, (name, description, rule) in TEMPLATES.items()
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Segment._meta,
        "title": "Add a segment from a template",
        "templates": rows,
    }
    return TemplateResponse(request, "admin/segments/segment/templates.html", context)


def confirm_view(
    request: HttpRequest,
    *,
    model_admin,
    title: str,
    question: str,
    perform,
    back: str,
) -> HttpResponse:
    """GET asks, POST does: actions that start work are never triggered by following a link."""
    if request.method == "POST":
        perform()
        return redirect(back)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": title,
        "question": question,
        "back": back,
    }
    return TemplateResponse(request, "admin/segments/confirm.html", context)


def segment_insights(request: HttpRequest, segment: Segment) -> dict:
    """The change page's extras: size over time (chart data), a page of members, the latest changes."""
    snapshots = list(segment.snapshots.order_by("-at")[:SNAPSHOTS])[::-1]
    chart = {
        "labels": [timezone.localtime(s.at).strftime("%d %b %H:%M") for s in snapshots],
        "datasets": [{"label": "Members", "data": [s.size for s in snapshots]}],
    }
    members = SegmentMembership.objects.filter(segment=segment).select_related("profile").order_by("-entered_at", "-id")
    page = Paginator(members, MEMBERS_PER_PAGE).get_page(request.GET.get("members_page"))
    history = SegmentMembershipChange.objects.filter(segment=segment).select_related("profile")[:HISTORY_LENGTH]
    return {
        "size_chart": json.dumps(chart) if snapshots else "",
        "members_page": page,
        "members": [(m, _profile_url(m.profile_id)) for m in page.object_list],
        "history": [(c, _profile_url(c.profile_id)) for c in history],
    }
