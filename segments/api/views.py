"""Segments API: definitions (secret key), preview, members, templates, a profile's segments, and the
visitor's own segment keys (public write key + anonymous id)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.auth import HasSourceKey, SecretKeyAuthentication, WriteKeyAuthentication
from personalization.api.errors import BadRequest, error_response
from segments import selectors
from segments.models import Segment
from segments.rules import RULE_SCHEMA, rule_catalogue
from segments.services import (
    SegmentInvalid,
    segment_create,
    segment_from_template,
    segment_preview,
    segment_update,
)
from segments.tasks import segment_recompute_task
from segments.templates import TEMPLATES
from tracking.api.profiles import ProfileSerializer
from tracking.selectors import profile_by_anonymous_id, profile_by_uuid

TAGS = ["segments"]


def invalid(exc: SegmentInvalid) -> Response:
    return error_response(400, exc.code, str(exc), errors=[{"field": e.path, "error": e.message} for e in exc.errors])


# Status as plain text in the schema: an enum named "status" would collide with other apps' status enums.
STATUS_HELP = "active (kept up to date) or paused (memberships frozen)"


class SegmentSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text=STATUS_HELP)

    class Meta:
        model = Segment
        fields = [
            "key",
            "name",
            "description",
            "rule",
            "status",
            "template",
            "version",
            "computed_version",
            "member_count",
            "last_computed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SegmentCreateSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100, help_text="Lower-case letters, digits, - and _.")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    rule = serializers.JSONField(help_text="Rule tree; see GET /api/v1/segments/catalogue and the README.")
    status = serializers.CharField(default=Segment.Status.ACTIVE, help_text=STATUS_HELP)


class SegmentUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    rule = serializers.JSONField(required=False)
    status = serializers.CharField(required=False, help_text=STATUS_HELP)


class PreviewRequestSerializer(serializers.Serializer):
    rule = serializers.JSONField()
    sample = serializers.IntegerField(min_value=0, max_value=100, default=20)


class PreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    sample = ProfileSerializer(many=True)


class MemberSerializer(serializers.Serializer):
    profile = serializers.UUIDField(source="profile.uuid")
    entered_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField(source="profile.last_seen_at")


class TemplateSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    rule = serializers.JSONField()


class FromTemplateSerializer(serializers.Serializer):
    template = serializers.ChoiceField(choices=sorted(TEMPLATES))
    key = serializers.CharField(max_length=100, required=False, help_text="Default: the template's key.")
    name = serializers.CharField(max_length=200, required=False)


SegmentKeysSerializer = inline_serializer(
    "SegmentKeys", {"segments": serializers.ListField(child=serializers.CharField())}
)


def _segment_or_404(key: str) -> Segment:
    segment = selectors.segment_by_key(key=key)
    if segment is None:
        raise Http404(f"no segment with key {key!r}")
    return segment


class SegmentListView(generics.ListAPIView):
    serializer_class = SegmentSerializer

    @extend_schema(tags=TAGS, summary="List segments")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.segment_list()

    def paginate_queryset(self, queryset):
        self.paginator.ordering = ("key",)
        return super().paginate_queryset(queryset)

    @extend_schema(
        tags=TAGS,
        summary="Create a segment (its members are computed in the background)",
        request=SegmentCreateSerializer,
        responses={201: SegmentSerializer},
    )
    def post(self, request):
        data = SegmentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            segment = segment_create(**data.validated_data)
        except SegmentInvalid as exc:
            return invalid(exc)
        return Response(SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)


class SegmentDetailView(APIView):
    @extend_schema(tags=TAGS, summary="One segment", responses=SegmentSerializer)
    def get(self, request, key):
        return Response(SegmentSerializer(_segment_or_404(key)).data)

    @extend_schema(
        tags=TAGS,
        summary="Change a segment's name, description, rule or status (a new rule bumps the version)",
        request=SegmentUpdateSerializer,
        responses=SegmentSerializer,
    )
    def patch(self, request, key):
        segment = _segment_or_404(key)
        data = SegmentUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            segment = segment_update(segment=segment, **data.validated_data)
        except SegmentInvalid as exc:
            return invalid(exc)
        return Response(SegmentSerializer(segment).data)


class SegmentRecomputeView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Recompute a segment's members now (queued)",
        request=None,
        responses={
            202: inline_serializer(
                "RecomputeQueued", {"queued": serializers.BooleanField(), "version": serializers.IntegerField()}
            )
        },
    )
    def post(self, request, key):
        segment = _segment_or_404(key)
        segment_recompute_task.delay(segment.pk, segment.version)
        return Response({"queued": True, "version": segment.version}, status=status.HTTP_202_ACCEPTED)


class SegmentPreviewView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="How many profiles a rule matches now, and a sample of them (nothing saved)",
        request=PreviewRequestSerializer,
        responses=PreviewSerializer,
    )
    def post(self, request):
        data = PreviewRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            preview = segment_preview(rule=data.validated_data["rule"], sample=data.validated_data["sample"])
        except SegmentInvalid as exc:
            return invalid(exc)
        return Response(PreviewSerializer(preview).data)


class SegmentMembersView(generics.ListAPIView):
    serializer_class = MemberSerializer

    @extend_schema(tags=TAGS, summary="Current members of a segment, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.segment_members(segment=_segment_or_404(self.kwargs["key"]))

    def paginate_queryset(self, queryset):
        self.paginator.ordering = ("-entered_at", "-id")
        return super().paginate_queryset(queryset)


class SegmentTemplatesView(APIView):
    @extend_schema(tags=TAGS, summary="Built-in segment templates", responses=TemplateSerializer(many=True))
    def get(self, request):
        rows = [{"key": k, "name": n, "description": d, "rule": r} for k, (n, d, r) in TEMPLATES.items()]
        return Response(TemplateSerializer(rows, many=True).data)


class SegmentFromTemplateView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Add a segment from a built-in template",
        request=FromTemplateSerializer,
        responses={201: SegmentSerializer},
    )
    def post(self, request):
        data = FromTemplateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            segment = segment_from_template(
                template_key=data.validated_data["template"],
                key=data.validated_data.get("key"),
                name=data.validated_data.get("name"),
            )
        except SegmentInvalid as exc:
            return invalid(exc)
        return Response(SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)


class SegmentCatalogueView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="The rule language: condition kinds, fields, operators, and its JSON Schema",
        responses=inline_serializer(
            "RuleCatalogue", {"catalogue": serializers.JSONField(), "schema": serializers.JSONField()}
        ),
    )
    def get(self, request):
        return Response({"catalogue": rule_catalogue(), "schema": RULE_SCHEMA})


class ProfileSegmentsView(APIView):
    @extend_schema(tags=TAGS, summary="Keys of the active segments a profile is in", responses=SegmentKeysSerializer)
    def get(self, request, profile_id):
        profile = profile_by_uuid(profile_id)
        if profile is None:
            raise Http404("no profile with this id")
        return Response({"segments": selectors.profile_segment_keys(profile_id=profile.pk)})


class MySegmentsView(APIView):
    """The visitor's own segment keys, readable with the public write key and their anonymous id (for
    personalizing a page in the browser)."""

    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes = [HasSourceKey]

    @extend_schema(
        tags=TAGS,
        summary="The visitor's own segment keys (public key + anonymous id)",
        parameters=[OpenApiParameter("anonymous_id", str, required=True)],
        responses=SegmentKeysSerializer,
    )
    def get(self, request):
        anonymous_id = request.query_params.get("anonymous_id", "").strip()
        if not anonymous_id:
            raise BadRequest("anonymous_id: query parameter is required")
        profile = profile_by_anonymous_id(anonymous_id)
        keys = selectors.profile_segment_keys(profile_id=profile.pk) if profile else []
        return Response({"segments": keys})
