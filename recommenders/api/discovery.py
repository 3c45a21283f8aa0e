"""Recently viewed items and items near a point: the simple lists beside the models.

`GET /api/v1/recently-viewed` is the visitor's own history (public key: their own anonymous id; it
answers an empty list when the visitor withdrew personalization consent). `GET /api/v1/items/nearest`
needs no visitor: `near=lat,lon` is the point (a store locator, the visitor's coarse location).
"""

from __future__ import annotations

import re

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from personalization.api.errors import BadRequest
from recommenders import discovery
from recommenders.api.serving import ServingView, VisitorQuery, _exclude, _validated, _visitor
from recommenders.serving.visitors import personalization_allowed

POINT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


class RecentlyViewedQuery(VisitorQuery):
    n = serializers.IntegerField(min_value=1, max_value=100, required=False, help_text="How many (10).")
    category = serializers.CharField(max_length=100, required=False, help_text="Only items of this category.")
    in_stock = serializers.BooleanField(required=False, default=False, help_text="Only items in stock.")


class NearestQuery(serializers.Serializer):
    near = serializers.CharField(help_text="The point, `lat,lon` in degrees, e.g. `48.8566,2.3522`.")
    n = serializers.IntegerField(min_value=1, max_value=100, required=False, help_text="How many (10).")
    max_km = serializers.FloatField(min_value=0, required=False, help_text="Only items within this distance.")
    category = serializers.CharField(max_length=100, required=False, help_text="Only items of this category.")
    in_stock = serializers.BooleanField(required=False, default=True, help_text="Only items in stock (default).")
    anonymous_id = serializers.CharField(
        max_length=128, required=False, help_text="The visitor's anonymous id: their thumbs-down are left out."
    )

    def validate_near(self, value: str) -> tuple[float, float]:
        match = POINT.match(value)
        if not match:
            raise serializers.ValidationError("expected `lat,lon` in decimal degrees, e.g. 48.8566,2.3522")
        lat, lon = float(match.group(1)), float(match.group(2))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise serializers.ValidationError(
                f"latitude must be in [-90, 90] and longitude in [-180, 180], got {value}"
            )
        return lat, lon


class FoundItemSerializer(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    price = serializers.CharField(allow_null=True)
    categories = serializers.ListField(child=serializers.CharField())
    in_stock = serializers.BooleanField()
    seen_at = serializers.DateTimeField(required=False, allow_null=True)
    distance_km = serializers.FloatField(required=False, allow_null=True)


class FoundListSerializer(serializers.Serializer):
    personalized = serializers.BooleanField()
    items = FoundItemSerializer(many=True)


def _item(found: discovery.Found) -> dict:
    item = found.item
    body = {
        "id": item.external_id,
        "title": item.title,
        "price": None if item.price is None else f"{item.price:.2f}",
        "categories": [str(c) for c in item.categories or []],
        "in_stock": item.in_stock,
    }
    if found.seen_at is not None:
        body["seen_at"] = found.seen_at.isoformat()
    if found.distance_km is not None:
        body["distance_km"] = found.distance_km
    return body


class RecentlyViewedView(ServingView):
    @extend_schema(
        tags=["recommendations"],
        summary="The visitor's recently viewed items",
        parameters=[RecentlyViewedQuery, OpenApiParameter("exclude", str, description="Comma-separated item ids.")],
        responses=FoundListSerializer,
    )
    def get(self, request):
        data = _validated(RecentlyViewedQuery, request.query_params)
        visitor = _visitor(request, data, required=True)
        if visitor is None or not personalization_allowed(
            profile=visitor.profile, source=request.auth.source, state=visitor.consent
        ):
            return Response({"personalized": False, "items": []})
        found = discovery.items_recently_viewed(
            profile_id=visitor.profile.pk,
            n=data.get("n") or 10,
            category=data.get("category", ""),
            in_stock_only=data["in_stock"],
            exclude=set(_exclude(request)),
        )
        return Response({"personalized": True, "items": [_item(f) for f in found]})


class NearestItemsView(ServingView):
    @extend_schema(
        tags=["recommendations"],
        summary="Items nearest a point (items that carry a location)",
        parameters=[NearestQuery, OpenApiParameter("exclude", str, description="Comma-separated item ids.")],
        responses=FoundListSerializer,
    )
    def get(self, request):
        data = _validated(NearestQuery, request.query_params)
        visitor = _visitor(request, data, required=False)
        lat, lon = data["near"]
        try:
            found = discovery.items_nearest(
                lat=lat,
                lon=lon,
                n=data.get("n") or 10,
                max_km=data.get("max_km"),
                category=data.get("category", ""),
                in_stock_only=data["in_stock"],
                exclude=set(_exclude(request)),
                profile_id=visitor.profile.pk if visitor else None,
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        return Response({"personalized": False, "items": [_item(f) for f in found]})


urlpatterns = [
    path("recently-viewed", RecentlyViewedView.as_view(), name="recently-viewed"),
    path("items/nearest", NearestItemsView.as_view(), name="items-nearest"),
]
