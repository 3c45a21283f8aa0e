"""Admin page "Recommendation insight": pick a profile (by profile id or anonymous id), see its
recent events and what each algorithm would recommend to it, and why.

Mounted from the project's URL map before `admin/` (`include("recommenders.admin_insight")`), so
it lives under the admin's address and look without a ModelAdmin of its own. Staff only; viewing a
profile here is recorded in the access audit like any other admin view of a profile.
"""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from recommenders.serving.insight import profile_insight
from tracking.selectors import profile_by_anonymous_id, profile_by_uuid, profile_list


def _find(query: str):
    query = query.strip()
    if not query:
        return None
    try:
        found = profile_by_uuid(uuid.UUID(query))
    except ValueError:
        found = None
    return found or profile_by_anonymous_id(query)


@staff_member_required
def insight(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    placement = request.GET.get("placement", "").strip()[:64]
    context = {
        **admin.site.each_context(request),
        "title": "Recommendation insight",
        "query": query,
        "placement": placement,
        "recent_profiles": list(profile_list()[:12]),
    }
    profile = _find(query)
    if query and profile is None:
        context["not_found"] = True
    if profile is not None:
        from privacy.services.audit import access_record

        access_record(
            actor=request.user.get_username(),
            channel="admin",
            action="view",
            profile_uuid=profile.uuid,
            detail="recommendation insight",
        )
        context["insight"] = profile_insight(profile=profile, placement=placement)
    return TemplateResponse(request, "admin/recommenders/insight.html", context)


urlpatterns = [path("", insight, name="recommenders-insight")]
