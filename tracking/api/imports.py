"""Import API: historical events as JSON Lines or CSV, through the same checks as live traffic."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.body import read_body
from personalization.api.errors import BadRequest
from tracking.services.imports import FORMATS, events_import


class ImportResultSerializer(serializers.Serializer):
    lines = serializers.IntegerField()
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    suppressed = serializers.IntegerField(help_text="Valid but not stored: no consent for their purpose.")
    skipped = serializers.IntegerField()
    rejected_count = serializers.IntegerField()
    rejected = serializers.ListField(child=serializers.DictField(), help_text="First 100: field and error.")


class ImportView(APIView):
    @extend_schema(
        tags=["collection"],
        summary="Import historical events (JSON Lines or CSV, secret key)",
        parameters=[
            OpenApiParameter(
                "format", str, enum=list(FORMATS), description="jsonl (default for application/x-ndjson) or csv"
            )
        ],
        request={"application/x-ndjson": bytes, "text/csv": bytes},
        responses=ImportResultSerializer,
    )
    def post(self, request):
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip()
        fmt = request.query_params.get("format") or ("csv" if content_type == "text/csv" else "jsonl")
        if fmt not in FORMATS:
            raise BadRequest(f"format: must be one of {', '.join(FORMATS)}")
        data = read_body(request._request, max_bytes=settings.IMPORT_MAX_BYTES)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequest("body is not UTF-8 text") from None
        result = events_import(source=request.auth.source, lines=text.splitlines(), fmt=fmt)
        status = 200 if not result.rejected else (207 if result.accepted else 400)
        return Response(result.as_dict(), status=status)
