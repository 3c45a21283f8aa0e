"""Reads of the recommenders app: catalogue, configurations and model versions."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from recommenders.models import Item, ModelVersion, RecommenderConfig

DEFAULT_CONFIG_KEY = "default"


def item_list(
    *, category: str = "", stub: bool | None = None, in_stock: bool | None = None, updated_since: datetime | None = None
) -> QuerySet[Item]:
    items = Item.objects.all()
    if category:
        # JSON containment works on Postgres and SQLite alike through Django's JSONField lookups.
        items = (
            items.filter(categories__contains=[category])
            if _json_contains_supported()
            else items.filter(categories__icontains=f'"{category}"')
        )
    if stub is not None:
        items = items.filter(is_stub=stub)
    if in_stock is not None:
        items = items.filter(in_stock=in_stock)
    if updated_since is not None:
        items = items.filter(updated_at__gte=updated_since)
    return items


def _json_contains_supported() -> bool:
    from django.db import connection

    return connection.features.supports_json_field_contains


def item_get(*, external_id: str) -> Item | None:
    return Item.objects.filter(external_id=external_id).first()


def config_get(*, key: str) -> RecommenderConfig | None:
    return RecommenderConfig.objects.filter(key=key).first()


def config_default() -> RecommenderConfig | None:
    """The configuration placements without one use: the one marked default, else key "default"."""
    return (
        RecommenderConfig.objects.filter(is_default=True).first()
        or RecommenderConfig.objects.filter(key=DEFAULT_CONFIG_KEY).first()
    )


def model_versions(*, config: RecommenderConfig | None = None) -> QuerySet[ModelVersion]:
    versions = ModelVersion.objects.select_related("config")
    return versions.filter(config=config) if config is not None else versions


def live_version_row(*, config: RecommenderConfig) -> ModelVersion | None:
    return ModelVersion.objects.filter(config=config, status=ModelVersion.Status.LIVE).first()
