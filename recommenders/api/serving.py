"""Serving API: recommendations for a visitor, similar items, trending and explicit feedback.

The public write key may only ask about the visitor holding the anonymous id (their own list,
their own feedback); a secret key may ask about any visitor, by anonymous id or user id. Each list
served carries a `token`: impression and click events send it back as `properties.rec_token`.
"""

from __future__ import annotations

import logging
import math
import re

from django.conf import settings
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.auth import (
    Credential,
    HasSourceKey,
    SecretKeyAuthentication,
    WriteKeyAuthentication,
    basic_user,
    origin_check,
    write_key_from,
)
from personalization.api.errors import BadRequest, error_response
from personalization.api.renderers import FastJSONRenderer
from recommenders import serving
from recommenders.serving.cache import CACHE_ERRORS
from recommenders.serving.visitors import Visitor, visitor_by_anonymous_id, visitor_by_user_id
from tracking.keys import SECRET_KEY_PREFIX, secret_key_hash
from tracking.models import SecretKey, Source

logger = logging.getLogger(__name__)

MAX_EXCLUDE = 500
MAX_EXTERNAL_ID = 200


# ---- authentication that survives a cache outage --------------------------------------------------


def _credential_from_database(request) -> Credential:
    """The caller's key looked up in the database: the usual look-up goes through the cache, and
    serving must answer while Redis is down."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    plaintext = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not plaintext:
        user = basic_user(request)
        plaintext = user if user.startswith(SECRET_KEY_PREFIX) else ""
    if plaintext:
        key = (
            SecretKey.objects.select_related("source")
            .filter(key_hash=secret_key_hash(plaintext), revoked_at__isnull=True, source__is_active=True)
            .first()
        )
        if key is None:
            raise exceptions.AuthenticationFailed("unknown or revoked secret key")
        return Credential(source=key.source, secret=True, key_id=key.pk)
    key = write_key_from(request)
    source = Source.objects.filter(write_key=key, is_active=True).first() if key else None
    if source is None:
        raise exceptions.AuthenticationFailed("unknown or inactive write key")
    origin_check(request, source)
    return Credential(source=source, secret=False)


class ServingView(APIView):
    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes = [HasSourceKey]
    renderer_classes = [FastJSONRenderer]

    def perform_content_negotiation(self, request, force=False):
        """JSON is the one format served: skip parsing the Accept header on every page view."""
        renderers = self.get_renderers()
        if len(renderers) == 1:
            return renderers[0], renderers[0].media_type
        return super().perform_content_negotiation(request, force)

    def perform_authentication(self, request) -> None:
        try:
            request.user  # noqa: B018 - DRF authenticates lazily, on this access
        except CACHE_ERRORS:
            logger.warning("cache unreachable during the key check: looking the key up in the database")
            credential = _credential_from_database(request)
            request._authenticator = None
            request.user = None
            request.auth = credential


# ---- input -----------------------------------------------------------------------------------------


class VisitorQuery(serializers.Serializer):
    anonymous_id = serializers.CharField(max_length=128, required=False, help_text="The visitor's anonymous id.")
    user_id = serializers.CharField(
        max_length=256, required=False, help_text="The visitor's user id (secret key only)."
    )


class ListQuery(serializers.Serializer):
    n = serializers.IntegerField(min_value=1, required=False, help_text="How many items (default: the placement's).")
    placement = serializers.SlugField(max_length=64, required=False, help_text='Where the list shows, e.g. "home".')
    category = serializers.CharField(max_length=100, required=False, help_text="Only items of this category.")

    def validate_n(self, value: int) -> int:
        if value > settings.RECOMMENDERS_SERVE_MAX_N:
            raise serializers.ValidationError(f"must be at most {settings.RECOMMENDERS_SERVE_MAX_N}")
        return value


class RecommendationsQuery(VisitorQuery, ListQuery):
    pass


class SimilarQuery(ListQuery):
    anonymous_id = serializers.CharField(
        max_length=128, required=False, help_text="The visitor's anonymous id: their thumbs-down are left out."
    )


class TrendingQuery(ListQuery):
    segment = serializers.SlugField(max_length=100, required=False, help_text="Key of a segment.")
    device = serializers.ChoiceField(choices=["desktop", "mobile", "tablet"], required=False)
    country = serializers.RegexField(r"^[A-Za-z]{2}$", required=False, help_text="ISO country code, e.g. FR.")
    hour_band = serializers.ChoiceField(
        choices=["night", "morning", "afternoon", "evening"], required=False, help_text="Visitors' local time of day."
    )


class FeedbackIn(VisitorQuery):
    item_id = serializers.CharField(max_length=MAX_EXTERNAL_ID, help_text="External id of the item.")
    kind = serializers.ChoiceField(choices=["up", "down"], help_text="Thumbs up or thumbs down.")


_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
_FAST_LIMITS = {"anonymous_id": 128, "user_id": 256, "placement": 64, "category": 100}


def _recommendations_query(params) -> dict:
    """RecommendationsQuery's validated data, read directly when every parameter is plainly valid
    (the serializer's field machinery costs a tenth of a cached answer); anything unusual (blank,
    padded, too long, not a number...) goes through the serializer, which also writes the errors."""
    data: dict = {}
    for name, value in params.items():
        limit = _FAST_LIMITS.get(name)
        if limit is not None:
            if not value or len(value) > limit or value != value.strip():
                return _validated(RecommendationsQuery, params)
            if name == "placement" and not _SLUG.match(value):
                return _validated(RecommendationsQuery, params)
            data[name] = value
        elif name == "n":
            plain = value.isascii() and value.isdigit() and len(value) <= 6
            if not plain or not 1 <= int(value) <= settings.RECOMMENDERS_SERVE_MAX_N:
                return _validated(RecommendationsQuery, params)
            data[name] = int(value)
    return data


def _validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _exclude(request) -> list[str]:
    """`exclude=a,b` and/or repeated `exclude=`; ids as the site knows them."""
    ids: list[str] = []
    for value in request.query_params.getlist("exclude"):
        ids.extend(part.strip() for part in value.split(",") if part.strip())
    if len(ids) > MAX_EXCLUDE:
        raise BadRequest(f"exclude: {len(ids)} ids, at most {MAX_EXCLUDE}")
    for index, value in enumerate(ids):
        if len(value) > MAX_EXTERNAL_ID:
            raise BadRequest(f"exclude[{index}]: id longer than {MAX_EXTERNAL_ID} characters")
    return ids


def _visitor(request, data: dict, *, required: bool, cached: bool = False, toplist_prefix: str = "") -> Visitor | None:
    """The visitor the caller may ask about: with the write key only the anonymous id's own.
    `cached`: through the visitor cache (the caller confirms the entry, see `recommendations_serve`);
    `toplist_prefix`: their precomputed list comes along (see `visitors.visitor_cached`)."""
    credential: Credential = request.auth
    anonymous_id = (data.get("anonymous_id") or "").strip()
    user_id = (data.get("user_id") or "").strip()
    if user_id and not credential.secret:
        raise exceptions.PermissionDenied(
            "user_id needs a secret key (Authorization: Bearer); with the write key, ask for the visitor's "
            "own anonymous_id"
        )
    if user_id:
        return visitor_by_user_id(user_id, cached=cached, toplist_prefix=toplist_prefix)
    if anonymous_id:
        return visitor_by_anonymous_id(anonymous_id, cached=cached, toplist_prefix=toplist_prefix)
    if required:
        raise BadRequest("anonymous_id: query parameter is required" + (" (or user_id)" if credential.secret else ""))
    return None


def _payload(served: serving.ServedList) -> dict:
    """The answer, as ServedListSerializer documents it, built directly: this is the hot path and
    a nested serializer costs more than the rest of a cached answer."""
    items = []
    for s in served.items:
        item = s.item
        # The item's own fields, rendered once per catalogue row read (rows live seconds in the
        # process's memo, and a page view shows ten of them).
        base = item.__dict__.get("_served_fields")
        if base is None:
            base = item._served_fields = {
                "id": item.external_id,
                "title": item.title,
                "price": None if item.price is None else f"{item.price:.2f}",
                "categories": [str(c) for c in item.categories or []],
            }
        items.append(
            {
                **base,
                "score": s.score if math.isfinite(s.score) else 0.0,
                "algorithm": s.algorithm,
                "reason": s.reason,
            }
        )
    return {
        "token": str(served.token),
        "placement": served.placement,
        "strategy": served.strategy,
        "personalized": served.personalized,
        "model_version": served.model_version,
        "variant": served.variant,
        "items": items,
    }


# ---- output ----------------------------------------------------------------------------------------


class ServedItemSerializer(serializers.Serializer):
    id = serializers.CharField(source="item.external_id", help_text="The item's external id.")
    title = serializers.CharField(source="item.title")
    price = serializers.DecimalField(source="item.price", max_digits=14, decimal_places=2, allow_null=True)
    categories = serializers.ListField(source="item.categories", child=serializers.CharField())
    score = serializers.FloatField(help_text="Score of the algorithm that produced it (scales differ by algorithm).")
    algorithm = serializers.CharField(
        help_text='What produced it, e.g. "ease", "item_to_item", "content", "trending", "collection", "pinned".'
    )
    reason = serializers.CharField(help_text='Why, for the visitor, e.g. "because you viewed Trail runner".')


class ServedListSerializer(serializers.Serializer):
    token = serializers.UUIDField(
        help_text="Send it back as `properties.rec_token` on impression and click events (CTR per model version)."
    )
    placement = serializers.CharField()
    strategy = serializers.CharField(
        help_text="cached | recomputed | session | preferences | collection | trending | popularity | similar | "
        "content | empty"
    )
    personalized = serializers.BooleanField(help_text="False when consent does not allow personalization.")
    model_version = serializers.IntegerField(allow_null=True, help_text="Live model version the list came from.")
    variant = serializers.CharField(
        allow_blank=True,
        help_text='"experiment:variant" when a running recommender experiment chose the configuration, else empty.',
    )
    items = ServedItemSerializer(many=True)


class FeedbackOutSerializer(serializers.Serializer):
    item_id = serializers.CharField()
    kind = serializers.CharField()
    created_at = serializers.DateTimeField()


class ServingErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    message = serializers.CharField()


ERRORS = {
    400: OpenApiResponse(ServingErrorSerializer, description="Bad parameter (the message names it)."),
    401: OpenApiResponse(ServingErrorSerializer, description="Unknown key."),
    403: OpenApiResponse(ServingErrorSerializer, description="user_id with the write key."),
}
LIST_PARAMS = [
    OpenApiParameter("exclude", str, many=True, description="Item ids never to return: `a,b` or repeated."),
]


# ---- views -----------------------------------------------------------------------------------------


class RecommendationsView(ServingView):
    @extend_schema(
        tags=["recommendations"],
        summary="Recommendations for a visitor",
        description="The visitor's list for a placement: their precomputed list while it is fresh, recomputed "
        "from the live model when they have newer events, else the cold-start ladder (item-to-item from the "
        "session, content from stated preferences, curated collection, trending in their segment and context). "
        "A visitor who withdrew personalization consent gets the non-personalized trending list.",
        parameters=[RecommendationsQuery, *LIST_PARAMS],
        responses={200: ServedListSerializer, **ERRORS},
    )
    def get(self, request):
        data = _recommendations_query(request.query_params)
        prefix = serving.toplist_prefix_for(data.get("placement", ""))
        visitor = _visitor(request, data, required=True, cached=True, toplist_prefix=prefix)
        served = serving.recommendations_serve(
            source=request.auth.source,
            profile=None,
            visitor=visitor,
            placement=data.get("placement", ""),
            n=data.get("n"),
            category=data.get("category", ""),
            exclude=_exclude(request),
            meta=request.META,
        )
        return Response(_payload(served))


class SimilarItemsView(ServingView):
    @extend_schema(
        tags=["recommendations"],
        summary="Items similar to an item",
        parameters=[SimilarQuery, *LIST_PARAMS],
        responses={200: ServedListSerializer, 404: OpenApiResponse(ServingErrorSerializer), **ERRORS},
    )
    def get(self, request, external_id: str):
        data = _validated(SimilarQuery, request.query_params)
        visitor = _visitor(request, data, required=False)
        try:
            served = serving.items_similar(
                source=request.auth.source,
                external_id=external_id,
                profile=visitor.profile if visitor else None,
                placement=data.get("placement", ""),
                n=data.get("n"),
                exclude=_exclude(request),
            )
        except serving.ItemNotFound:
            return error_response(404, "not_found", f"items/{external_id}: no catalogue item with this id")
        return Response(_payload(served))


class TrendingView(ServingView):
    @extend_schema(
        tags=["recommendations"],
        summary="Trending items, overall or in a segment / context",
        parameters=[TrendingQuery, *LIST_PARAMS],
        responses={200: ServedListSerializer, 404: OpenApiResponse(ServingErrorSerializer), **ERRORS},
    )
    def get(self, request):
        data = _validated(TrendingQuery, request.query_params)
        segment = data.get("segment", "")
        if segment:
            from segments.selectors import segment_by_key

            if segment_by_key(key=segment) is None:
                return error_response(404, "not_found", f"segment: no segment with key {segment!r}")
        slice_ = serving.Slice(
            segment=segment,
            device=data.get("device", ""),
            country=data.get("country", "").upper(),
            band=data.get("hour_band", ""),
        )
        served = serving.trending_serve(
            slice_=slice_,
            placement=data.get("placement", ""),
            n=data.get("n"),
            category=data.get("category", ""),
            exclude=_exclude(request),
        )
        return Response(_payload(served))


class FeedbackView(ServingView):
    @extend_schema(
        tags=["recommendations"],
        summary="Thumbs up or down on an item",
        description="Down leaves the item out of the visitor's lists at once and trains as a negative signal. "
        "With the write key, only for the visitor's own anonymous_id.",
        request=FeedbackIn,
        responses={
            201: FeedbackOutSerializer,
            200: FeedbackOutSerializer,
            404: OpenApiResponse(ServingErrorSerializer, description="Unknown visitor or item."),
            **ERRORS,
        },
    )
    def post(self, request):
        if not isinstance(request.data, dict):
            raise BadRequest("body must be a JSON object")
        data = _validated(FeedbackIn, request.data)
        visitor = _visitor(request, data, required=True)
        if visitor is None:
            which = "user_id" if data.get("user_id") else "anonymous_id"
            return error_response(404, "not_found", f"{which}: no visitor with this id (they have sent no event yet)")
        try:
            row, created = serving.feedback_record(
                source=request.auth.source,
                profile=visitor.profile,
                external_id=data["item_id"].strip(),
                kind=data["kind"],
            )
        except serving.UnknownItem:
            return error_response(404, "not_found", f"item_id: no catalogue item {data['item_id']!r}")
        except serving.ConsentRequired as refused:
            return error_response(403, "consent_required", str(refused))
        body = {"item_id": data["item_id"].strip(), "kind": row.kind, "created_at": row.created_at}
        return Response(
            FeedbackOutSerializer(body).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


urlpatterns = [
    path("recommendations", RecommendationsView.as_view(), name="rec-recommendations"),
    path("items/<str:external_id>/similar", SimilarItemsView.as_view(), name="rec-similar"),
    path("trending", TrendingView.as_view(), name="rec-trending"),
    path("feedback", FeedbackView.as_view(), name="rec-feedback"),
]
