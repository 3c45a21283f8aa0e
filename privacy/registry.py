"""Registry of everything held per profile, so export and erasure reach every app's data.

Each app declares, in its AppConfig.ready(), which models hold per-profile rows and how they reach
the profile. A test fails when a model referencing a profile is not declared, so a later
capability cannot be forgotten by a data-subject request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import models


@dataclass(frozen=True)
class Holding:
    """Rows of `model` belonging to a profile: those whose `profile_field` is the profile's pk."""

    model: type[models.Model]
    profile_field: str
    label: str
    exclude: tuple[str, ...] = ()
    # Turns a row into what the person receives (e.g. decrypts a token); default: its field values.
    export: Callable[[models.Model], dict] | None = field(default=None, compare=False)


_holdings: dict[str, Holding] = {}
_cache_cleaners: list[Callable[[models.Model], None]] = []


def register(
    model: type[models.Model],
    *,
    profile_field: str = "profile",
    label: str | None = None,
    exclude: tuple[str, ...] = (),
    export: Callable[[models.Model], dict] | None = None,
) -> None:
    name = label or model._meta.label_lower
    _holdings[name] = Holding(model, profile_field, name, exclude, export)


def holdings() -> list[Holding]:
    """Every declared holding; the profile itself last, so erasure deletes dependants first."""
    return sorted(_holdings.values(), key=lambda h: h.profile_field == "pk")


def registered_models() -> set[type[models.Model]]:
    return {holding.model for holding in _holdings.values()}


def register_cache_cleaner(cleaner: Callable[[models.Model], None]) -> None:
    """A function deleting what an app caches about a profile; erasure calls each with the profile."""
    if cleaner not in _cache_cleaners:
        _cache_cleaners.append(cleaner)


def cache_cleaners() -> list[Callable[[models.Model], None]]:
    return list(_cache_cleaners)
