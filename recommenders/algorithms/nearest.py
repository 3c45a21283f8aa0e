"""Nearest items for items that carry a location (stores, venues): great-circle (haversine)
distance from a point, e.g. ``near=lat,lon`` or the visitor's coarse location."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from scipy import sparse

from recommenders.algorithms.base import ItemFeatures, Recommender, UserContext, as_user_items, topk

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat: np.ndarray, lon: np.ndarray, item_lat: np.ndarray, item_lon: np.ndarray) -> np.ndarray:
    """Distances (len(lat), len(item_lat)) in km between points and items, all in degrees."""
    lat1, lon1 = np.radians(np.asarray(lat, dtype=np.float64))[:, None], np.radians(np.asarray(lon))[:, None]
    lat2, lon2 = np.radians(np.asarray(item_lat, dtype=np.float64))[None, :], np.radians(np.asarray(item_lon))[None, :]
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def check_point(lat: float, lon: float) -> None:
    if not (-90 <= lat <= 90) or not (-180 <= lon <= 180):
        raise ValueError(f"near: latitude must be in [-90, 90] and longitude in [-180, 180], got {lat},{lon}")


def nearest_items(
    lat: float,
    lon: float,
    coordinates: np.ndarray,
    N: int = 10,
    *,
    max_km: float | None = None,
    items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The N items closest to (lat, lon): (item columns, distances in km), nearest first. Items
    without coordinates (NaN), outside ``max_km`` or outside ``items`` are never returned."""
    check_point(lat, lon)
    coords = np.asarray(coordinates, dtype=np.float64)
    dist = haversine_km(np.array([lat]), np.array([lon]), coords[:, 0], coords[:, 1])[0]
    dist[np.isnan(dist)] = np.inf
    if max_km is not None:
        dist[dist > max_km] = np.inf
    if items is not None:
        allowed = np.zeros(len(dist), dtype=bool)
        allowed[np.asarray(items, dtype=np.int64)] = True
        dist[~allowed] = np.inf
    ids, neg = topk(-dist[None, :], N)
    keep = ids[0] >= 0
    return ids[0][keep], -neg[0][keep].astype(np.float64)


class Nearest(Recommender):
    """Ranks items by distance (score = -km) from the user's location (``context.locations``) or,
    without one, from the centre of the located items the user interacted with."""

    name = "nearest"
    defaults = {"max_km": None}

    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        X = as_user_items(user_items)
        if item_features is None or item_features.coordinates is None:
            raise ValueError("nearest: needs item_features.coordinates (lat, lon per item; NaN where unknown)")
        if item_features.n_items != X.shape[1]:
            raise ValueError(f"nearest: item_features has {item_features.n_items} items, user_items {X.shape[1]}")
        self.coordinates = np.asarray(item_features.coordinates, dtype=np.float64)
        self._fitted(X)
        return self

    def user_locations(self, rows: sparse.csr_matrix, context: UserContext | None) -> np.ndarray:
        n = rows.shape[0]
        given = np.full((n, 2), np.nan) if context is None or context.locations is None else context.locations
        located = np.asarray(given, dtype=np.float64).copy()
        missing = np.isnan(located).any(axis=1)
        if missing.any():
            # Centroid of the located items the user touched (fine at city scale, where it matters).
            has = ~np.isnan(self.coordinates).any(axis=1)
            weights = rows[missing].multiply(has[None, :].astype(np.float32)).tocsr()
            weights.data = np.abs(weights.data)
            total = np.asarray(weights.sum(axis=1)).ravel()
            centre = weights @ np.nan_to_num(self.coordinates)
            with np.errstate(invalid="ignore", divide="ignore"):
                centre = centre / total[:, None]
            located[missing] = np.where(total[:, None] > 0, centre, np.nan)
        return located

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        where = self.user_locations(rows, context)
        dist = haversine_km(where[:, 0], where[:, 1], self.coordinates[:, 0], self.coordinates[:, 1])
        dist[np.isnan(dist)] = np.inf
        if self._params["max_km"] is not None:
            dist[dist > float(self._params["max_km"])] = np.inf
        return (-dist).astype(np.float32)

    def _similar(self, itemids: np.ndarray) -> np.ndarray:
        c = self.coordinates
        dist = haversine_km(c[itemids, 0], c[itemids, 1], c[:, 0], c[:, 1])
        dist[np.isnan(dist)] = np.inf
        return (-dist).astype(np.float32)

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "coordinates": self.coordinates}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.coordinates = np.asarray(state["coordinates"], dtype=np.float64)
