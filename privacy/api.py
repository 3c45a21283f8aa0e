"""Data-subject requests API (secret key): file an export or erasure, then read its status and result."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.auth import HasSourceKey, SecretKeyAuthentication, WriteKeyAuthentication
from personalization.api.errors import BadRequest
from privacy.models import SubjectRequest
from privacy.services import subject_request_create
from privacy.services.consent import consent_decide, consent_view, purposes


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


class ConsentInSerializer(serializers.Serializer):
    anonymous_id = serializers.CharField(required=False, max_length=128)
    user_id = serializers.CharField(required=False, max_length=128, help_text="Secret key only.")
    purposes = serializers.DictField(child=serializers.BooleanField(), help_text='e.g. {"analytics": true}')
    origin = serializers.ChoiceField(choices=["banner", "api", "import"], required=False)


class ConsentPurposeSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    required = serializers.BooleanField()
    granted = serializers.BooleanField(allow_null=True, help_text="null: not decided (at this policy version)")


class ConsentViewSerializer(serializers.Serializer):
    regime = serializers.ChoiceField(choices=["opt_in", "opt_out"])
    policy_version = serializers.IntegerField()
    title = serializers.CharField(help_text="Banner title (per source, in the admin).")
    text = serializers.CharField(help_text="Banner text (per source, in the admin).")
    needs_decision = serializers.BooleanField(help_text="Show the banner: opt-in and something undecided.")
    purposes = ConsentPurposeSerializer(many=True)


class ConsentView(APIView):
    """The visitor's consent: readable and settable with the public key and their anonymous id, or
    server-side with a secret key (which may also name a user id)."""

    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes = [HasSourceKey]

    @extend_schema(
        tags=["privacy"],
        summary="A visitor's consent per purpose",
        parameters=[OpenApiParameter("anonymous_id", str), OpenApiParameter("user_id", str)],
        responses=ConsentViewSerializer,
    )
    def get(self, request):
        anonymous_id, user_id = self._subject(request, request.query_params)
        profile = _profile_of(anonymous_id, user_id)
        return Response(consent_view(source=request.auth.source, profile_id=profile.pk if profile else None))

    @extend_schema(
        tags=["privacy"],
        summary="Record a visitor's consent choices",
        request=ConsentInSerializer,
        responses=ConsentViewSerializer,
    )
    def post(self, request):
        data = ConsentInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        anonymous_id, user_id = self._subject(request, data.validated_data)
        known = set(purposes())
        unknown = sorted(set(data.validated_data["purposes"]) - known)
        if unknown:
            raise BadRequest(f"purposes: unknown purpose(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        decisions = dict(data.validated_data["purposes"])
        if request.META.get("HTTP_SEC_GPC", "").strip() == "1":
            decisions["marketing"] = False
        origin = data.validated_data.get("origin") or ("api" if request.auth.secret else "banner")
        profile = consent_decide(
            source=request.auth.source, anonymous_id=anonymous_id, user_id=user_id, decisions=decisions, origin=origin
        )
        return Response(consent_view(source=request.auth.source, profile_id=profile.pk))

    @staticmethod
    def _subject(request, data) -> tuple[str, str]:
        anonymous_id = (data.get("anonymous_id") or "").strip()
        user_id = (data.get("user_id") or "").strip()
        if user_id and not request.auth.secret:
            raise exceptions.PermissionDenied("user_id needs a secret key; browsers use anonymous_id")
        if not anonymous_id and not user_id:
            raise BadRequest("anonymous_id (or, with a secret key, user_id) is required")
        return anonymous_id, user_id


def _profile_of(anonymous_id: str, user_id: str):
    from tracking.models import Identity
    from tracking.services.identity import identity_hash

    key = ("user", identity_hash(user_id)) if user_id else ("anonymous", anonymous_id)
    identity = Identity.objects.select_related("profile").filter(kind=key[0], value=key[1]).first()
    return identity.profile if identity else None
