"""The GIF pixel: `GET /p.gif?k=<write key>&e=<event type>&a=<anonymous id>&...`.

It always answers with the 1x1 GIF, even for a bad key or bad parameters (a customer's page or
email must never show a broken image); what it refuses is counted per source and reason.
"""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from tracking import wire
from tracking.api.collect import request_meta
from tracking.selectors import source_by_write_key
from tracking.services.ingest import events_check, events_ingest
from tracking.services.rejections import rejection_count

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
RESERVED = {"k", "e", "a", "u", "m", "t", "url", "ref", "tz"}


def gif_response() -> HttpResponse:
    response = HttpResponse(GIF, content_type="image/gif")
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, max-age=0"
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    return response


def pixel_event(params) -> dict:
    """Our own event shape from the pixel's query parameters; other parameters become properties."""
    page = {}
    if params.get("url"):
        page["url"] = params["url"]
    if params.get("ref"):
        page["referrer"] = params["ref"]
    context: dict = {"library": {"name": "pixel"}}
    if page:
        context["page"] = page
    if params.get("tz"):
        context["timezone"] = params["tz"]
    raw = {
        "type": params.get("e") or "page_view",
        "anonymous_id": params.get("a") or None,
        "user_id": params.get("u") or None,
        "message_id": params.get("m") or f"px-{uuid.uuid4().hex}",
        "properties": {key: value for key, value in params.items() if key not in RESERVED},
        "context": context,
    }
    if params.get("t"):
        raw["timestamp"] = params["t"]
    return raw


@require_GET
def pixel(request: HttpRequest) -> HttpResponse:
    source = source_by_write_key(request.GET.get("k", ""))
    if source is None:
        rejection_count(source=None, reason="unknown_key")
        return gif_response()
    origin = request.META.get("HTTP_ORIGIN")
    if origin and not source.origin_allowed(origin):
        rejection_count(source=source, reason="origin")
        return gif_response()
    meta = request_meta(request)
    raw = pixel_event(request.GET.dict())
    if "url" not in raw["context"].get("page", {}) and request.META.get("HTTP_REFERER"):
        raw["context"]["page"] = {**raw["context"].get("page", {}), "url": request.META["HTTP_REFERER"]}
    events, rejected = events_check([raw], parse=wire.native_event, path="", meta=meta)
    events_ingest(source=source, events=events, rejected=rejected, meta=meta)
    return gif_response()
