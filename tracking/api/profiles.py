"""Profiles API: secret-key reads of any profile, and the visitor's own profile by anonymous id."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.auth import HasSourceKey, SecretKeyAuthentication, WriteKeyAuthentication
from personalization.api.errors import BadRequest
from privacy.selectors import encrypted_traits_read
from privacy.services import access_record, api_actor
from tracking.models import Event, Identity, Profile, ProfileEventStat
from tracking.selectors import profile_by_anonymous_id, profile_by_uuid, profile_list, profile_timeline


class EventStatSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProfileEventStat
        fields = ["event_type", "count", "value_sum", "first_at", "last_at"]


class IdentitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Identity
        fields = ["kind", "value", "created_at"]


class ProfileSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)

    class Meta:
        model = Profile
        fields = [
            "id",
            "traits",
            "first_seen_at",
            "last_seen_at",
            "event_count",
            "session_count",
            "purchase_count",
            "revenue",
            "last_device_type",
            "last_os",
            "last_browser",
            "last_country",
            "last_traffic_source",
        ]


class ProtectedTraitsMixin(serializers.Serializer):
    protected_traits = serializers.SerializerMethodField(
        help_text="Traits the source keeps encrypted at rest (e.g. first name), decrypted for this answer."
    )

    def get_protected_traits(self, profile) -> dict[str, str | None]:
        return encrypted_traits_read(profile_id=profile.pk)


class ProfileDetailSerializer(ProtectedTraitsMixin, ProfileSerializer):
    identities = IdentitySerializer(many=True, read_only=True)
    event_stats = EventStatSerializer(many=True, read_only=True)

    class Meta(ProfileSerializer.Meta):
        fields = [*ProfileSerializer.Meta.fields, "protected_traits", "identities", "event_stats"]


class MyProfileSerializer(ProtectedTraitsMixin, ProfileSerializer):
    class Meta(ProfileSerializer.Meta):
        fields = [*ProfileSerializer.Meta.fields, "protected_traits"]


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = [
            "id",
            "message_id",
            "kind",
            "type",
            "timestamp",
            "received_at",
            "properties",
            "context",
            "value",
            "device_type",
            "os",
            "browser",
            "country",
            "traffic_source",
            "local_hour",
            "local_weekday",
        ]


class ProfileListView(generics.ListAPIView):
    serializer_class = ProfileSerializer

    @extend_schema(tags=["profiles"], summary="List profiles, most recently seen first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return profile_list()

    def paginate_queryset(self, queryset):
        self.paginator.ordering = ("-last_seen_at", "-id")
        return super().paginate_queryset(queryset)


class ProfileDetailView(APIView):
    @extend_schema(
        tags=["profiles"],
        summary="One profile with identities and per-event-type aggregates",
        responses=ProfileDetailSerializer,
    )
    def get(self, request, profile_id):
        profile = profile_by_uuid(profile_id)
        if profile is None:
            raise Http404("no profile with this id")
        profile = Profile.objects.prefetch_related("identities", "event_stats").get(pk=profile.pk)
        access_record(
            actor=api_actor(request.auth), channel="api", action="view", profile_uuid=profile.uuid, detail="profile"
        )
        return Response(ProfileDetailSerializer(profile).data)


class ProfileEventsView(generics.ListAPIView):
    serializer_class = EventSerializer

    @extend_schema(tags=["profiles"], summary="A profile's timeline, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        profile = profile_by_uuid(self.kwargs["profile_id"])
        if profile is None:
            raise Http404("no profile with this id")
        access_record(
            actor=api_actor(self.request.auth),
            channel="api",
            action="view",
            profile_uuid=profile.uuid,
            detail="timeline",
        )
        return profile_timeline(profile=profile)

    def paginate_queryset(self, queryset):
        self.paginator.ordering = ("-timestamp", "-id")
        return super().paginate_queryset(queryset)


class MyProfileView(APIView):
    """The visitor's own profile, readable with the public write key and their anonymous id."""

    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes = [HasSourceKey]

    @extend_schema(
        tags=["profiles"],
        summary="The visitor's own profile (public key + anonymous id)",
        parameters=[OpenApiParameter("anonymous_id", str, required=True)],
        responses=MyProfileSerializer,
    )
    def get(self, request):
        anonymous_id = request.query_params.get("anonymous_id", "").strip()
        if not anonymous_id:
            raise BadRequest("anonymous_id: query parameter is required")
        profile = profile_by_anonymous_id(anonymous_id)
        if profile is None:
            raise Http404("no profile for this anonymous_id")
        return Response(MyProfileSerializer(profile).data)
