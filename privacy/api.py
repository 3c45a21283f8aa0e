"""Data-subject requests API (secret key): file an export or erasure, then read its status and result."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from privacy.models import SubjectRequest
from privacy.services import subject_request_create


class SubjectRequestInSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=SubjectRequest.Kind.choices)
    regulation = serializers.ChoiceField(choices=SubjectRequest.Regulation.choices, default="gdpr")
    user_id = serializers.CharField(required=False, max_length=128)
    anonymous_id = serializers.CharField(required=False, max_length=128)
    email = serializers.EmailField(required=False)

    def validate(self, attrs):
        named = [key for key in ("user_id", "anonymous_id", "email") if attrs.get(key)]
        if len(named) != 1:
            raise serializers.ValidationError("name the person by exactly one of user_id, anonymous_id, email")
        attrs["subject_kind"], attrs["value"] = named[0], attrs[named[0]]
        return attrs


class SubjectRequestSerializer(serializers.ModelSerializer):
    result = serializers.SerializerMethodField()

    class Meta:
        model = SubjectRequest
        fields = ["id", "kind", "regulation", "status", "due_at", "created_at", "completed_at", "result"]

    def get_result(self, request: SubjectRequest) -> dict:
        # While pending, `result` holds the look-up key: not for the answer.
        return request.result if request.completed_at else {}


class SubjectRequestListView(APIView):
    @extend_schema(
        tags=["privacy"],
        summary="File a data-subject request (export or erasure)",
        request=SubjectRequestInSerializer,
        responses={202: SubjectRequestSerializer, 400: OpenApiResponse(description="Invalid request")},
    )
    def post(self, request):
        data = SubjectRequestInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        filed = subject_request_create(
            kind=data.validated_data["kind"],
            subject_kind=data.validated_data["subject_kind"],
            value=data.validated_data["value"],
            regulation=data.validated_data["regulation"],
            source=request.auth.source,
        )
        return Response(SubjectRequestSerializer(filed).data, status=202)


class SubjectRequestDetailView(APIView):
    @extend_schema(
        tags=["privacy"], summary="Status and result of a data-subject request", responses=SubjectRequestSerializer
    )
    def get(self, request, request_id):
        filed = SubjectRequest.objects.filter(pk=request_id, source=request.auth.source).first()
        if filed is None:
            raise Http404("no such request for this source")
        return Response(SubjectRequestSerializer(filed).data)
