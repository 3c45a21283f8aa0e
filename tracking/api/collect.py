"""Collection endpoints: our own JSON API and Segment's HTTP tracking API.

Answers: 200 when every event is accepted (duplicates count as accepted, stored once), 207 when
some were accepted and some rejected (each rejected one listed with where and why), 400 or 413
when none was accepted.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.auth import (
    Credential,
    SecretKeyAuthentication,
    WriteKeyAuthentication,
    origin_check,
)
from personalization.api.body import read_json
from personalization.api.errors import BadRequest, PayloadTooLarge
from tracking import wire
from tracking.selectors import source_by_write_key
from tracking.services.ingest import IngestResult, RequestMeta, events_check, events_ingest


def request_meta(request, *, sent_at=None) -> RequestMeta:
    meta = request.META
    ip = meta.get("REMOTE_ADDR", "")
    hops = settings.TRUSTED_PROXY_COUNT
    if hops and meta.get("HTTP_X_FORWARDED_FOR"):
        chain = [part.strip() for part in meta["HTTP_X_FORWARDED_FOR"].split(",") if part.strip()]
        if chain:
            ip = chain[-min(hops, len(chain))]
    country = ""
    if settings.GEO_COUNTRY_HEADER:
        country = meta.get("HTTP_" + settings.GEO_COUNTRY_HEADER.upper().replace("-", "_"), "")
    return RequestMeta(
        user_agent=meta.get("HTTP_USER_AGENT", ""),
        ip=ip,
        country=country,
        received_at=timezone.now(),
        sent_at=sent_at,
        gpc=meta.get("HTTP_SEC_GPC", "").strip() == "1",
    )


def ingest_response(result: IngestResult, *, single: bool = False) -> Response:
    body = result.as_dict()
    if single:
        body["success"] = bool(result.accepted)
    if result.accepted and not result.rejected:
        return Response(body, status=200)
    if result.accepted:
        return Response(body, status=207)
    if not result.rejected:
        return Response(body, status=200)
    first = result.rejected[0]
    status = 413 if all(r.reason == "too_large" for r in result.rejected) else 400
    return Response(
        {"error": "too_large" if status == 413 else "invalid", "message": f"{first.path}: {first.message}", **body},
        status=status,
    )


class RejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message_id = serializers.CharField(allow_null=True)
    field = serializers.CharField(help_text="Where the problem is, e.g. events[3].timestamp")
    error = serializers.CharField()


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events stored (or already stored: duplicates).")
    duplicates = serializers.IntegerField(help_text="Accepted events whose message_id was already stored.")
    suppressed = serializers.IntegerField(
        help_text="Accepted events not stored because the visitor has not consented to their purpose."
    )
    rejected = RejectedSerializer(many=True)


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    message = serializers.CharField()


class EventDocSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Event name: page_view, add_to_cart, purchase, identify, …")
    anonymous_id = serializers.CharField(required=False, help_text="Visitor's anonymous id (cookie).")
    user_id = serializers.CharField(required=False, help_text="Your user id; stored only as a keyed hash.")
    message_id = serializers.CharField(required=False, help_text="Unique per source; retries are stored once.")
    timestamp = serializers.DateTimeField(required=False)
    properties = serializers.DictField(required=False)
    traits = serializers.DictField(required=False, help_text="Profile traits (identify).")
    context = serializers.DictField(required=False, help_text="Segment-style context: page, campaign, …")


class SegmentCallDocSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=wire.KINDS, required=False, help_text="In a batch: the call kind.")
    userId = serializers.CharField(required=False)
    anonymousId = serializers.CharField(required=False)
    messageId = serializers.CharField(required=False)
    event = serializers.CharField(required=False, help_text="track: event name")
    name = serializers.CharField(required=False, help_text="page/screen: name")
    previousId = serializers.CharField(required=False, help_text="alias")
    groupId = serializers.CharField(required=False, help_text="group")
    properties = serializers.DictField(required=False)
    traits = serializers.DictField(required=False)
    context = serializers.DictField(required=False)
    timestamp = serializers.DateTimeField(required=False)
    sentAt = serializers.DateTimeField(required=False)


class SegmentBatchDocSerializer(serializers.Serializer):
    batch = SegmentCallDocSerializer(many=True)
    sentAt = serializers.DateTimeField(required=False)
    context = serializers.DictField(required=False)
    writeKey = serializers.CharField(required=False)


class EventBatchDocSerializer(serializers.Serializer):
    events = EventDocSerializer(many=True)
    sent_at = serializers.DateTimeField(required=False, help_text="Sender's clock when sending (skew fix).")


INGEST_RESPONSES = {
    200: IngestResultSerializer,
    207: OpenApiResponse(IngestResultSerializer, description="Some events accepted, some rejected."),
    400: OpenApiResponse(ErrorSerializer, description="Nothing accepted: malformed body or every event invalid."),
    401: OpenApiResponse(ErrorSerializer, description="Unknown write key."),
    403: OpenApiResponse(ErrorSerializer, description="Origin not allowed for this source."),
    413: OpenApiResponse(ErrorSerializer, description="Body or event too large."),
}


class CollectView(APIView):
    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes: list = []
    throttle_classes: list = []

    def credential(self, request, body: object = None) -> Credential:
        if isinstance(request.auth, Credential):
            return request.auth
        key = body.get("writeKey") if isinstance(body, dict) else None
        source = source_by_write_key(key) if isinstance(key, str) else None
        if key and source is None:
            raise exceptions.AuthenticationFailed("unknown or inactive write key")
        if source is None:
            raise exceptions.NotAuthenticated(
                "a write key is required: X-Write-Key header, HTTP Basic user, or ?k= parameter"
            )
        origin_check(request, source)
        return Credential(source=source, secret=False)

    def body(self, request) -> object:
        return read_json(request._request, max_bytes=settings.INGEST_MAX_BATCH_BYTES)

    @staticmethod
    def sent_at(body: dict, key: str, path: str):
        if body.get(key) is None:
            return None
        try:
            return wire.parse_time(body[key], path)
        except wire.Invalid as exc:
            raise BadRequest(str(exc)) from None


class EventsView(CollectView):
    """Our own collection API."""

    @extend_schema(
        operation_id="events_collect",
        tags=["collection"],
        summary="Send events",
        request=EventBatchDocSerializer,
        responses=INGEST_RESPONSES,
        examples=[
            OpenApiExample(
                "Add to cart",
                request_only=True,
                value={
                    "events": [
                        {
                            "type": "add_to_cart",
                            "anonymous_id": "3f0c…",
                            "message_id": "m-1",
                            "timestamp": "2026-11-30T10:00:00Z",
                            "properties": {"item_id": "sku-1", "price": 19.9},
                            "context": {"page": {"url": "https://shop.example/p/sku-1"}},
                        }
                    ]
                },
            )
        ],
    )
    def post(self, request):
        body = self.body(request)
        credential = self.credential(request, body)
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise BadRequest('body must be an object with an "events" array')
        if len(body["events"]) > settings.INGEST_MAX_BATCH_EVENTS:
            raise PayloadTooLarge(
                f"events: {len(body['events'])} events, over the limit of "
                f"{settings.INGEST_MAX_BATCH_EVENTS} per request"
            )
        meta = request_meta(request, sent_at=self.sent_at(body, "sent_at", "sent_at"))
        events, rejected = events_check(body["events"], parse=wire.native_event, path="events", meta=meta)
        return ingest_response(events_ingest(source=credential.source, events=events, rejected=rejected, meta=meta))


class SegmentCallView(CollectView):
    """One call of Segment's tracking API; `kind` is set per URL."""

    kind = "track"

    def post(self, request):
        body = self.body(request)
        credential = self.credential(request, body)
        meta = request_meta(request)
        events, rejected = events_check([body], parse=wire.segment_event, path="", meta=meta, kind=self.kind)
        return ingest_response(
            events_ingest(source=credential.source, events=events, rejected=rejected, meta=meta), single=True
        )


class SegmentBatchView(CollectView):
    @extend_schema(
        operation_id="segment_batch",
        tags=["segment"],
        request=SegmentBatchDocSerializer,
        responses=INGEST_RESPONSES,
        description="Segment batch: `{batch: [...], sentAt, context}`; up to 500 KB.",
    )
    def post(self, request):
        body = self.body(request)
        credential = self.credential(request, body)
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise BadRequest('body must be an object with a "batch" array')
        if len(body["batch"]) > settings.INGEST_MAX_BATCH_EVENTS:
            raise PayloadTooLarge(
                f"batch: {len(body['batch'])} events, over the limit of {settings.INGEST_MAX_BATCH_EVENTS} per request"
            )
        meta = request_meta(request, sent_at=self.sent_at(body, "sentAt", "sentAt"))
        shared = body.get("context")
        raws = body["batch"]
        if isinstance(shared, dict) and shared:
            # Batch-level context applies to every call that does not say otherwise.
            raws = [
                {**raw, "context": {**shared, **(raw.get("context") or {})}}
                if isinstance(raw, dict) and isinstance(raw.get("context", {}), dict)
                else raw
                for raw in raws
            ]
        events, rejected = events_check(raws, parse=wire.segment_event, path="batch", meta=meta)
        return ingest_response(events_ingest(source=credential.source, events=events, rejected=rejected, meta=meta))


def segment_view(kind: str):
    view = type(f"Segment{kind.title()}View", (SegmentCallView,), {"kind": kind})
    schema = extend_schema(
        operation_id=f"segment_{kind}",
        summary=f"Segment {kind} call",
        tags=["segment"],
        request=SegmentCallDocSerializer,
        responses=INGEST_RESPONSES,
        description="Segment HTTP tracking API; write key as the HTTP Basic user. Existing SDKs work unchanged.",
    )
    return extend_schema_view(post=schema)(view).as_view()
