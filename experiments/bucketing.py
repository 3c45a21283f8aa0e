"""Deterministic bucketing, pure: which layer slot a unit falls in and which variant it draws.

Everything is a function of (seed, unit id) through SHA-256, so any process on any machine gives
the same answer without reading the database. No Django here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SLOTS = 10_000


def unit_hash(seed: str, unit: str) -> int:
    """A 64-bit integer uniformly spread over units, stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x1f{unit}".encode()).digest()[:8], "big")


def bucket(seed: str, unit: str, buckets: int) -> int:
    return unit_hash(seed, unit) % buckets


def layer_slot(*, layer: str, salt: str, unit: str) -> int:
    """The unit's slot in the experiment's layer. Experiments of one named layer share the hash, so they
    see the same slot for a unit and disjoint slot ranges never share it; a layer of its own uses the salt."""
    seed = f"layer:{layer}" if layer else f"traffic:{salt}"
    return bucket(seed, unit, SLOTS)


def variant_index(*, salt: str, unit: str, weights: Sequence[float]) -> int | None:
    """Index of the variant a unit draws with these relative weights (None if every weight is 0).

    A separate hash from the layer slot, so which units enter and which variant they get are independent."""
    total = sum(w for w in weights if w > 0)
    if total <= 0:
        return None
    point = (unit_hash(f"variant:{salt}", unit) / 2**64) * total
    running = 0.0
    last = None
    for index, weight in enumerate(weights):
        if weight <= 0:
            continue
        running += weight
        last = index
        if point < running:
            return index
    return last  # float rounding at the very top


def slot_range_allocate(*, size: int, taken: Sequence[tuple[int, int]], prefer: int | None = None) -> int | None:
    """Start of a free range of `size` slots among the `taken` [start, end) ranges, or None.

    `prefer` keeps an experiment's current start when it still fits (changing its traffic in place)."""
    if size <= 0 or size > SLOTS:
        return None

    def fits(start: int) -> bool:
        end = start + size
        return end <= SLOTS and all(end <= lo or start >= hi for lo, hi in taken)

    if prefer is not None and fits(prefer):
        return prefer
    candidates = [0, *(hi for _, hi in taken)]
    for start in sorted(candidates):
        if fits(start):
            return start
    return None
