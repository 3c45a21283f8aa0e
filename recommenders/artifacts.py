"""Trained-model artifacts in Django's default storage: one file per version holding the fitted
model, its index maps and the training matrix, so any process (web, worker, another machine with
shared or S3 storage) can load exactly what the trainer built.

The file is a NumPy `.npz` archive read with `allow_pickle=False`: loading an artifact never runs
code from storage, whoever could write there.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from recommenders.algorithms.base import ItemFeatures

ARTIFACT_DIR = "recommenders/models"
FORMAT = 1


@dataclass
class Bundle:
    """What a trained version needs at serving time."""

    model: bytes
    item_ids: np.ndarray  # column -> item external id (str)
    profile_ids: np.ndarray  # row -> profile id (int64)
    user_items: sp.csr_matrix  # the (weighted) matrix the model was trained on
    item_features: ItemFeatures | None
    meta: dict  # algorithm, config_key, version, trained_through (ISO) ...

    @property
    def trained_through(self) -> datetime | None:
        value = self.meta.get("trained_through")
        return datetime.fromisoformat(value) if value else None


def artifact_path(*, config_key: str, version: int) -> str:
    return f"{ARTIFACT_DIR}/{config_key}/v{version}.npz"


def _csr_arrays(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    matrix = matrix.tocsr()
    return {
        f"{prefix}_data": matrix.data.astype(np.float32, copy=False),
        f"{prefix}_indices": matrix.indices.astype(np.int32, copy=False),
        f"{prefix}_indptr": matrix.indptr.astype(np.int64, copy=False),
        f"{prefix}_shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def _csr_from(prefix: str, archive) -> sp.csr_matrix:
    shape = tuple(int(n) for n in archive[f"{prefix}_shape"])
    return sp.csr_matrix(
        (archive[f"{prefix}_data"], archive[f"{prefix}_indices"], archive[f"{prefix}_indptr"]), shape=shape
    )


def bundle_dumps(bundle: Bundle) -> bytes:
    arrays = {
        "format": np.asarray([FORMAT]),
        "model": np.frombuffer(bundle.model, dtype=np.uint8),
        "item_ids": np.asarray(bundle.item_ids, dtype=str),
        "profile_ids": np.asarray(bundle.profile_ids, dtype=np.int64),
        "meta": np.frombuffer(json.dumps(bundle.meta).encode(), dtype=np.uint8),
        **_csr_arrays("ui", bundle.user_items),
    }
    features = bundle.item_features
    if features is not None:
        arrays["if_texts"] = np.asarray(list(features.texts), dtype=str)
        lists = {"categories": [list(c) for c in features.categories]}
        if features.tags is not None:
            lists["tags"] = [list(t) for t in features.tags]
        arrays["if_lists"] = np.frombuffer(json.dumps(lists).encode(), dtype=np.uint8)
        if features.coordinates is not None:
            arrays["if_coordinates"] = np.asarray(features.coordinates, dtype=np.float64)
    out = io.BytesIO()
    # Uncompressed: the float arrays barely compress and loading fast matters more than bytes.
    np.savez(out, **arrays)
    return out.getvalue()


def _features_from(archive) -> ItemFeatures | None:
    if "if_texts" not in archive.files:
        return None
    lists = json.loads(archive["if_lists"].tobytes().decode())
    return ItemFeatures(
        texts=archive["if_texts"].tolist(),
        categories=lists["categories"],
        tags=lists.get("tags"),
        coordinates=archive["if_coordinates"] if "if_coordinates" in archive.files else None,
    )


def bundle_loads(data: bytes) -> Bundle:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        if int(archive["format"][0]) != FORMAT:
            raise ValueError(f"artifact format {int(archive['format'][0])} is not {FORMAT}")
        return Bundle(
            model=archive["model"].tobytes(),
            item_ids=archive["item_ids"],
            profile_ids=archive["profile_ids"],
            user_items=_csr_from("ui", archive),
            item_features=_features_from(archive),
            meta=json.loads(archive["meta"].tobytes().decode()),
        )


def artifact_save(*, config_key: str, version: int, bundle: Bundle) -> str:
    """Write the artifact; returns its storage path. Overwrites a leftover of a crashed run."""
    path = artifact_path(config_key=config_key, version=version)
    if default_storage.exists(path):
        default_storage.delete(path)
    return default_storage.save(path, ContentFile(bundle_dumps(bundle)))


def artifact_load(path: str) -> Bundle:
    with default_storage.open(path, "rb") as handle:
        return bundle_loads(handle.read())


def artifact_delete(path: str) -> None:
    if path and default_storage.exists(path):
        default_storage.delete(path)
