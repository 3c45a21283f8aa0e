"""Catalogue API: bulk upsert (per-item errors, good items kept), list, read and delete items."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from personalization.api.errors import BadRequest
from recommenders.models import Item
from recommenders.selectors import item_get, item_list
from recommenders.services.catalogue import MAX_EXTERNAL_ID, UPSERT_FIELDS, item_delete, items_upsert
from tracking.api.collect import ErrorSerializer

MAX_ITEMS_PER_CALL = 1000


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = [
            "external_id",
            "title",
            "description",
            "categories",
            "tags",
            "price",
            "attributes",
            "in_stock",
            "available_from",
            "available_until",
            "latitude",
            "longitude",
            "is_stub",
            "created_at",
            "updated_at",
        ]


class NameListField(serializers.ListField):
    child = serializers.CharField(max_length=100, allow_blank=False)
    max_length = 100


class ItemInSerializer(serializers.Serializer):
    """One item of an upsert. Only `external_id` is required; omitted fields keep their value."""

    external_id = serializers.CharField(max_length=MAX_EXTERNAL_ID, allow_blank=False, trim_whitespace=True)
    title = serializers.CharField(max_length=500, allow_blank=True, required=False)
    description = serializers.CharField(max_length=20_000, allow_blank=True, required=False, trim_whitespace=False)
    categories = NameListField(required=False)
    tags = NameListField(required=False)
    price = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0, allow_null=True, required=False)
    attributes = serializers.DictField(required=False)
    in_stock = serializers.BooleanField(required=False)
    available_from = serializers.DateTimeField(allow_null=True, required=False)
    available_until = serializers.DateTimeField(allow_null=True, required=False)
    latitude = serializers.FloatField(min_value=-90, max_value=90, allow_null=True, required=False)
    longitude = serializers.FloatField(min_value=-180, max_value=180, allow_null=True, required=False)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"external_id", *UPSERT_FIELDS})
            if unknown:
                raise serializers.ValidationError({name: "unknown field" for name in unknown})
        if (
            isinstance(data, dict)
            and isinstance(data.get("external_id"), int)
            and not isinstance(data["external_id"], bool)
        ):
            data = {**data, "external_id": str(data["external_id"])}
        return super().to_internal_value(data)

    def validate(self, attrs):
        start, end = attrs.get("available_from"), attrs.get("available_until")
        if start and end and end <= start:
            raise serializers.ValidationError({"available_until": "must be after available_from"})
        if ("latitude" in attrs) != ("longitude" in attrs) or (
            (attrs.get("latitude") is None) != (attrs.get("longitude") is None)
        ):
            raise serializers.ValidationError({"latitude": "latitude and longitude go together"})
        return attrs


class ItemsUpsertSerializer(serializers.Serializer):
    items = serializers.ListField(child=serializers.DictField(), max_length=MAX_ITEMS_PER_CALL)


class ItemRejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    external_id = serializers.CharField(allow_null=True)
    field = serializers.CharField(help_text="Where the problem is, e.g. items[3].price")
    error = serializers.CharField()


class UpsertResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    rejected = ItemRejectedSerializer(many=True)


def _rejections(index: int, item: object, errors: dict) -> list[dict]:
    external_id = item.get("external_id") if isinstance(item, dict) else None
    rows = []
    for name, messages in errors.items():
        for message in messages if isinstance(messages, list) else [messages]:
            where = f"items[{index}]" if name == "non_field_errors" else f"items[{index}].{name}"
            rows.append(
                {
                    "index": index,
                    "external_id": None if external_id is None else str(external_id),
                    "field": where,
                    "error": str(message),
                }
            )
    return rows


class ItemsView(generics.ListAPIView):
    """The catalogue (secret key)."""

    serializer_class = ItemSerializer

    @extend_schema(
        summary="List catalogue items",
        parameters=[
            OpenApiParameter("category", str, description="Only items in this category."),
            OpenApiParameter("stub", bool, description="true: only stubs (items events named, never upserted)."),
            OpenApiParameter("in_stock", bool),
            OpenApiParameter("updated_since", str, description="ISO 8601 time."),
        ],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        updated_since = None
        if params.get("updated_since"):
            field = serializers.DateTimeField()
            try:
                updated_since = field.to_internal_value(params["updated_since"])
            except serializers.ValidationError as exc:
                raise BadRequest(f"updated_since: {exc.detail[0]}") from None
        return item_list(
            category=params.get("category", ""),
            stub=_bool_param(params, "stub"),
            in_stock=_bool_param(params, "in_stock"),
            updated_since=updated_since,
        )

    @extend_schema(
        summary="Create or update up to 1,000 items",
        description=(
            "Upsert by `external_id`. Fields an item omits keep their current value (defaults for a new item), so "
            '`{"external_id": "sku-1", "in_stock": false}` only changes the stock. Invalid items are listed in '
            "`rejected` with where and why; the valid ones are stored (207 when some were rejected, 400 when all)."
        ),
        request=ItemsUpsertSerializer,
        responses={
            200: UpsertResultSerializer,
            207: OpenApiResponse(UpsertResultSerializer, description="Some items stored, some rejected."),
            400: OpenApiResponse(ErrorSerializer, description="Malformed body, too many items, or every item invalid."),
        },
    )
    def put(self, request):
        body = request.data
        if isinstance(body, list):
            body = {"items": body}
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise BadRequest('body must be {"items": [...]} (or a JSON array of items)')
        if len(body["items"]) > MAX_ITEMS_PER_CALL:
            raise BadRequest(f"items: {len(body['items'])} items, at most {MAX_ITEMS_PER_CALL} per call")
        good, rejected = [], []
        for index, raw in enumerate(body["items"]):
            if not isinstance(raw, dict):
                rejected.append(
                    {"index": index, "external_id": None, "field": f"items[{index}]", "error": "must be an object"}
                )
                continue
            serializer = ItemInSerializer(data=raw)
            if serializer.is_valid():
                good.append(serializer.validated_data)
            else:
                rejected.extend(_rejections(index, raw, serializer.errors))
        result = items_upsert(items=good)
        payload = {"created": result.created, "updated": result.updated, "rejected": rejected}
        if not rejected:
            return Response(payload, status=200)
        if good:
            return Response(payload, status=207)
        first = rejected[0]
        return Response({"error": "invalid", "message": f"{first['field']}: {first['error']}", **payload}, status=400)


def _bool_param(params, name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise BadRequest(f"{name}: {value!r} is not a boolean (true or false)")


class ItemView(APIView):
    """One catalogue item (secret key)."""

    @extend_schema(summary="Read an item", responses={200: ItemSerializer, 404: ErrorSerializer})
    def get(self, request, external_id: str):
        item = item_get(external_id=external_id)
        if item is None:
            raise NotFound(f"no item {external_id!r} in the catalogue")
        return Response(ItemSerializer(item).data)

    @extend_schema(summary="Delete an item", responses={204: None, 404: ErrorSerializer})
    def delete(self, request, external_id: str):
        if not item_delete(external_id=external_id):
            raise NotFound(f"no item {external_id!r} in the catalogue")
        return Response(status=204)
