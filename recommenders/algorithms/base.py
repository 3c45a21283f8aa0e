"""The common interface of every recommender algorithm, in the shape of implicit's RecommenderBase.

Pure numpy/scipy: no Django. The pipeline hands in matrices (rows = users, columns = items, both
as dense integer indexes it maps to external ids itself) and stores what comes out. One base class
owns everything that must behave the same for every algorithm: input checks, the already-liked /
filter / allow-list masks, batched top-N with argpartition, and the artifact format. Subclasses
only say how they fit and how they score a block of users.

Conventions (implicit 0.7's):
- ``recommend(userid, user_items, ...)``: ``user_items`` has ONE ROW PER ``userid`` (row i belongs
  to ``userid[i]``), not the whole training matrix. Pass ``matrix[userids]``. This is what lets a
  user whose events came after training (or who was never in training) be scored from a fresh row.
- A scalar ``userid`` gives 1-D ``(ids, scores)`` trimmed to the items that could be recommended;
  an array gives 2-D arrays of shape ``(len(userid), N)`` padded with id ``-1`` / score ``-inf``
  when fewer than N items were eligible.
"""

from __future__ import annotations

import io
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
from scipy import sparse

ARTIFACT_FORMAT = 1

# Scores of a block of users are materialised densely; this caps a block at ~64 MB of float32, so
# scoring 100k users over 20k items runs in bounded memory without a Python loop per user.
MAX_BLOCK_CELLS = 1 << 24


@dataclass(frozen=True)
class ItemFeatures:
    """Content of the catalogue, one entry per item column.

    ``texts``: title + description + tags as one string per item. ``categories``: list of category
    names per item. ``tags``: optional list of tags per item (matched against stated preferences).
    ``coordinates``: optional float array (n_items, 2) of (lat, lon) in degrees, NaN for items
    without a location.
    """

    texts: Sequence[str]
    categories: Sequence[Sequence[str]]
    tags: Sequence[Sequence[str]] | None = None
    coordinates: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.categories) != n:
            raise ValueError(f"item_features.categories has {len(self.categories)} entries, texts has {n}")
        if self.tags is not None and len(self.tags) != n:
            raise ValueError(f"item_features.tags has {len(self.tags)} entries, texts has {n}")
        if self.coordinates is not None:
            coords = np.asarray(self.coordinates, dtype=np.float64)
            if coords.shape != (n, 2):
                raise ValueError(f"item_features.coordinates must have shape ({n}, 2), got {coords.shape}")
            object.__setattr__(self, "coordinates", coords)

    @property
    def n_items(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Preferences:
    """What a visitor stated at onboarding (categories and tags they care about)."""

    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.categories or self.tags)


@dataclass
class UserContext:
    """What the caller knows about the users besides their interaction rows; aligned with ``userid``.

    ``groups``: group index per user (segment or context bucket the popularity model was fitted
    with), -1 for none. ``preferences``: stated preferences per user (or None). ``recent_items``:
    item columns of each user's latest session, newest first. ``locations``: (n_users, 2) lat/lon,
    NaN where unknown (for ``nearest``).
    """

    groups: np.ndarray | None = None
    preferences: Sequence[Preferences | None] | None = None
    recent_items: Sequence[Sequence[int]] | None = None
    locations: np.ndarray | None = None

    def check(self, n_users: int) -> None:
        for name in ("groups", "preferences", "recent_items", "locations"):
            value = getattr(self, name)
            if value is not None and len(value) != n_users:
                raise ValueError(f"context.{name} has {len(value)} entries for {n_users} users")

    def select(self, positions: np.ndarray) -> UserContext:
        """The context of the users at ``positions`` (an index array)."""

        def pick(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, np.ndarray):
                return value[positions]
            return [value[i] for i in positions]

        return UserContext(
            groups=pick(self.groups),
            preferences=pick(self.preferences),
            recent_items=pick(self.recent_items),
            locations=pick(self.locations),
        )

    def take(self, start: int, stop: int) -> UserContext:
        def cut(value: Any) -> Any:
            return None if value is None else value[start:stop]

        return UserContext(
            groups=cut(self.groups),
            preferences=cut(self.preferences),
            recent_items=cut(self.recent_items),
            locations=cut(self.locations),
        )


def user_weight_scale(counts: np.ndarray, exponent: float) -> float:
    """The constant c making c * n_u^-exponent average 1 over interactions (n_u = ``counts``), so
    that weighting users keeps the data's overall scale and regularisation keeps its meaning."""
    counts = np.asarray(counts, dtype=np.float64)
    active = counts[counts > 0]
    if exponent == 0 or not len(active):
        return 1.0
    return float(active.sum() / (active ** (1.0 - exponent)).sum())


def user_weights(X: sparse.csr_matrix, exponent: float) -> np.ndarray:
    """Per-user weights c * n_u^-exponent (n_u: stored interactions of the user, c from
    user_weight_scale): heavy users (and bots) stop dominating item statistics. All ones for
    exponent 0; users without interactions get 0 (they contribute nothing anyway)."""
    counts = np.diff(X.indptr).astype(np.float64)
    if exponent == 0:
        return np.ones(X.shape[0])
    weights = np.zeros(X.shape[0])
    active = counts > 0
    weights[active] = user_weight_scale(counts, exponent) * counts[active] ** -exponent
    return weights


def as_user_items(user_items: Any, *, dtype: type = np.float32) -> sparse.csr_matrix:
    """A canonical CSR matrix (sorted indices, no duplicates, no explicit zeros) of the given dtype.

    Never modifies its argument: serving shares one training matrix between threads, and
    canonicalising in place while another thread reads it would corrupt the read.
    """
    if not sparse.issparse(user_items):
        user_items = np.asarray(user_items)
    matrix = sparse.csr_matrix(user_items)
    if matrix.dtype != dtype:
        matrix = matrix.astype(dtype)
    if not matrix.has_canonical_format or (matrix.nnz and not matrix.data.all()):
        matrix = matrix.copy()
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
    return matrix


def topk(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-n of a dense score block: argpartition, then sort only the n winners.

    Deterministic for the same input (per row, whatever else is in the block). Within the top-n,
    ties are ordered by item index; which of several items tied exactly at the cut-off get in is
    up to the partition. Entries scored -inf come back with id -1.
    """
    n_rows, n_cols = scores.shape
    n = min(n, n_cols)
    if n <= 0:
        return np.empty((n_rows, 0), dtype=np.int64), np.empty((n_rows, 0), dtype=np.float32)
    if n < n_cols:
        # Partition at n_cols - n on the scores themselves: several times faster than partitioning
        # the negated scores at n - 1 (no negated copy, and numpy's introselect is slow there).
        part = np.argpartition(scores, n_cols - n, axis=1)[:, n_cols - n :]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    # lexsort: primary key -score, secondary the item index, for deterministic ties.
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[np.isneginf(vals)] = -1
    return ids, vals


def mask_liked(scores: np.ndarray, rows: sparse.csr_matrix) -> None:
    """Set the scores of the items each row interacted with to -inf (in place, vectorised)."""
    counts = np.diff(rows.indptr)
    if counts.sum():
        row_idx = np.repeat(np.arange(rows.shape[0]), counts)
        scores[row_idx, rows.indices] = -np.inf


def _block_size(n_items: int) -> int:
    return max(1, MAX_BLOCK_CELLS // max(n_items, 1))


class Recommender(ABC):
    """Base of every algorithm. Subclasses set ``name`` and ``defaults`` and implement ``fit`` and
    ``_score`` (dense scores for a block of users), and optionally ``_similar`` and the state hooks.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(self.defaults)}")
        self._params: dict[str, Any] = {**self.defaults, **params}
        self.n_items = 0
        self.n_users = 0
        self.is_fitted = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._params})"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    # -- training ----------------------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        user_items: sparse.csr_matrix,
        *,
        item_features: ItemFeatures | None = None,
        user_groups: np.ndarray | None = None,
        timestamps: sparse.csr_matrix | None = None,
        now: float | None = None,
    ) -> Self:
        """Train on ``user_items`` (users x items, weights; negatives allowed as negative signal).

        Optional: ``item_features`` (content), ``user_groups`` (group index per user row, -1 none:
        segment or context bucket for per-group popularity), ``timestamps`` (same sparsity as
        ``user_items``, unix seconds of the latest interaction in each cell, for time decay) and
        ``now`` (unix seconds; defaults to the latest timestamp). Algorithms ignore what they do not
        use, so the pipeline can hand the same inputs to any of them.
        """

    def _fitted(self, user_items: sparse.csr_matrix) -> None:
        self.n_users, self.n_items = user_items.shape
        self.is_fitted = True

    # -- scoring ------------------------------------------------------------------------------
    @abstractmethod
    def _score(
        self,
        userids: np.ndarray,
        rows: sparse.csr_matrix,
        *,
        context: UserContext | None,
        recalculate_user: bool,
    ) -> np.ndarray:
        """Dense float32 scores (len(userids), n_items) for one block of users. Higher is better;
        -inf means "never recommend". Must not modify ``rows``, and must return a new array (never
        a view of model state): the caller masks it in place."""

    def _check_rows(self, userid: Any, user_items: Any) -> tuple[np.ndarray, sparse.csr_matrix]:
        if not self.is_fitted:
            raise RuntimeError(f"{self.name}: fit() the model before asking it for recommendations")
        userids = np.atleast_1d(np.asarray(userid)).astype(np.int64, copy=False)
        if userids.ndim != 1:
            raise ValueError("userid must be an int or a 1-D array of ints")
        rows = as_user_items(user_items)
        if rows.shape[0] != len(userids):
            raise ValueError(
                f"user_items has {rows.shape[0]} rows for {len(userids)} user ids: pass one row per user "
                "(e.g. matrix[userids]), as implicit does"
            )
        if rows.shape[1] != self.n_items:
            raise ValueError(f"user_items has {rows.shape[1]} item columns, the model was fitted on {self.n_items}")
        return userids, rows

    def score(
        self,
        userids: Any,
        user_items: Any,
        *,
        context: UserContext | None = None,
        recalculate_user: bool = False,
    ) -> np.ndarray | None:
        """Dense scores (len(userids), n_items) without any filtering, or None if the model cannot
        score densely cheaply. Memory: len(userids) * n_items floats; block large requests."""
        userids, rows = self._check_rows(userids, user_items)
        if context is not None:
            context.check(len(userids))
        if not self.n_items:
            return np.zeros((len(userids), 0), dtype=np.float32)
        return self._score(userids, rows, context=context, recalculate_user=recalculate_user)

    def recommend(
        self,
        userid: int | np.ndarray,
        user_items: sparse.csr_matrix,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: np.ndarray | None = None,
        items: np.ndarray | None = None,
        *,
        recalculate_user: bool = False,
        context: UserContext | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N item columns and scores per user (see the module docstring for shapes).

        ``filter_items``: columns never to return. ``items``: only return these columns.
        ``recalculate_user``: score from the given rows rather than trained user state (matters
        for factor models; row-based models always use the rows). ``context``: groups, stated
        preferences, recent items, locations, aligned with ``userid``.
        """
        single = np.ndim(userid) == 0
        userids, rows = self._check_rows(userid, user_items)
        if N < 0:
            raise ValueError(f"N must be >= 0, got {N}")
        if context is not None:
            context.check(len(userids))
        allowed = self._allowed_mask(filter_items, items)
        n_out = min(N, int(allowed.sum()))
        all_ids = np.full((len(userids), n_out), -1, dtype=np.int64)
        all_scores = np.full((len(userids), n_out), -np.inf, dtype=np.float32)
        step = _block_size(self.n_items)
        for start in range(0, len(userids), step):  # blocks of users, not a loop per user
            stop = min(start + step, len(userids))
            block_rows = rows[start:stop]
            if not self.n_items:  # an empty catalogue: nothing to score
                continue
            scores = self._score(
                userids[start:stop],
                block_rows,
                context=None if context is None else context.take(start, stop),
                recalculate_user=recalculate_user,
            )
            # _score hands back a new array (its contract): masked in place, no copy.
            scores = np.asarray(scores, dtype=np.float32)
            scores[np.isnan(scores)] = -np.inf
            if not allowed.all():
                scores[:, ~allowed] = -np.inf
            if filter_already_liked_items:
                mask_liked(scores, block_rows)
            ids, vals = topk(scores, n_out)
            all_ids[start:stop], all_scores[start:stop] = ids, vals
        if single:
            keep = all_ids[0] >= 0
            return all_ids[0][keep], all_scores[0][keep]
        return all_ids, all_scores

    def recommend_fresh(self, user_row: sparse.csr_matrix, N: int = 10, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Recommendations for one user from a row built now (events newer than the model, or a user
        the model never saw): the user's state is recomputed from the row."""
        return self.recommend(-1, user_row, N, recalculate_user=True, **kwargs)

    def _allowed_mask(self, filter_items: np.ndarray | None, items: np.ndarray | None) -> np.ndarray:
        if items is not None:
            items = np.asarray(items, dtype=np.int64)
            _check_columns(items, self.n_items, "items")
            allowed = np.zeros(self.n_items, dtype=bool)
            allowed[items] = True
        else:
            allowed = np.ones(self.n_items, dtype=bool)
        if filter_items is not None:
            filter_items = np.asarray(filter_items, dtype=np.int64)
            _check_columns(filter_items, self.n_items, "filter_items")
            allowed[filter_items] = False
        return allowed

    # -- item to item -------------------------------------------------------------------------
    def _similar(self, itemids: np.ndarray) -> np.ndarray:
        """Dense similarity (len(itemids), n_items) of the given items to every item."""
        raise NotImplementedError(f"{self.name} has no item-to-item similarity")

    def similarity_between(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        """`_similar(itemids)[:, others]`, shaped (len(itemids), len(others)): what explaining a list
        needs, computed for those columns only where the model can (a full row of ALS or content
        similarity costs a pass over the whole catalogue)."""
        return self._similar(itemids)[:, others]

    def similarity_pairs(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        """`similarity_between` for many rows at once: ``itemids`` (rows, k) and ``others`` (rows, n)
        give (rows, k, n), row r being ``similarity_between(itemids[r], others[r])`` (what publishing
        the reasons of a block of lists needs). Row by row here; models that can, do it in one go."""
        itemids, others = np.asarray(itemids, dtype=np.int64), np.asarray(others, dtype=np.int64)
        out = np.zeros((len(itemids), itemids.shape[1], others.shape[1]), dtype=np.float32)
        for row in range(len(itemids)):
            out[row] = self.similarity_between(itemids[row], others[row])
        return out

    @property
    def has_similar_items(self) -> bool:
        return type(self)._similar is not Recommender._similar

    def similar_items(
        self, itemid: int | np.ndarray, N: int = 10, items: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The N items most similar to ``itemid`` (the item itself excluded), 1-D for a scalar id,
        2-D (padded with -1 / -inf) for an array of ids. ``items`` restricts the candidates."""
        if not self.is_fitted:
            raise RuntimeError(f"{self.name}: fit() the model before asking for similar items")
        single = np.ndim(itemid) == 0
        itemids = np.atleast_1d(np.asarray(itemid)).astype(np.int64, copy=False)
        _check_columns(itemids, self.n_items, "itemid")
        allowed = self._allowed_mask(None, items)
        n_out = min(N, int(allowed.sum()))
        sims = np.array(self._similar(itemids), dtype=np.float32, copy=True)
        sims[np.isnan(sims)] = -np.inf
        sims[:, ~allowed] = -np.inf
        sims[np.arange(len(itemids)), itemids] = -np.inf
        ids, vals = topk(sims, n_out)
        if single:
            keep = ids[0] >= 0
            return ids[0][keep], vals[0][keep]
        return ids, vals

    # -- artifacts ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """What a trained model needs to serve: numpy arrays, scipy sparse matrices, nested
        Recommenders, or JSON-able values. Subclasses extend this dict."""
        return {"n_items": self.n_items, "n_users": self.n_users}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.n_items = int(state["n_items"])
        self.n_users = int(state["n_users"])
        self.is_fitted = True

    def to_bytes(self) -> bytes:
        return dump(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Recommender:
        model = load(data)
        if not isinstance(model, cls):
            raise TypeError(f"artifact holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def _check_columns(cols: np.ndarray, n_items: int, what: str) -> None:
    if cols.size and (cols.min() < 0 or cols.max() >= n_items):
        raise ValueError(f"{what} contains item columns outside 0..{n_items - 1}")


# -- artifact format: a zip of .npy arrays plus one JSON document, never pickle -------------------
# An artifact comes back from shared storage; loading it must not be able to run code, so arrays
# are stored with allow_pickle=False and everything else is JSON.


@dataclass
class _Writer:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def encode(self, model: Recommender, prefix: str) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for key, value in model._state().items():
            path = f"{prefix}{key}"
            if isinstance(value, Recommender):
                entries[key] = {"model": self.encode(value, f"{path}/")}
            elif isinstance(value, list) and value and all(isinstance(v, Recommender) for v in value):
                entries[key] = {"models": [self.encode(v, f"{path}/{i}/") for i, v in enumerate(value)]}
            elif sparse.issparse(value):
                csr = sparse.csr_matrix(value)
                for part in ("data", "indices", "indptr"):
                    self.arrays[f"{path}.{part}"] = getattr(csr, part)
                entries[key] = {"csr": path, "shape": list(csr.shape)}
            elif isinstance(value, np.ndarray):
                if value.dtype == object:
                    raise TypeError(f"{model.name}.{key}: object arrays cannot be stored")
                self.arrays[path] = value
                entries[key] = {"array": path}
            else:
                entries[key] = {"json": value}
        return {"algorithm": model.name, "params": model.params, "state": entries}


def _decode(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Recommender:
    from recommenders.algorithms.registry import ALGORITHMS

    name = doc["algorithm"]
    if name not in ALGORITHMS:
        raise ValueError(f"artifact names unknown algorithm {name!r}")
    model = ALGORITHMS[name](**doc["params"])
    state: dict[str, Any] = {}
    for key, entry in doc["state"].items():
        if "model" in entry:
            state[key] = _decode(entry["model"], arrays)
        elif "models" in entry:
            state[key] = [_decode(sub, arrays) for sub in entry["models"]]
        elif "csr" in entry:
            path = entry["csr"]
            state[key] = sparse.csr_matrix(
                (arrays[f"{path}.data"], arrays[f"{path}.indices"], arrays[f"{path}.indptr"]),
                shape=tuple(entry["shape"]),
            )
        elif "array" in entry:
            state[key] = arrays[entry["array"]]
        else:
            state[key] = entry["json"]
    model._load_state(state)
    return model


def dump(model: Recommender) -> bytes:
    """Serialise a fitted model to bytes (a zip of .npy arrays and a JSON document; no pickle)."""
    if not model.is_fitted:
        raise RuntimeError(f"{model.name}: only a fitted model can be dumped")
    writer = _Writer()
    doc = {"format": ARTIFACT_FORMAT, "model": writer.encode(model, "")}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("model.json", json.dumps(doc))
        for path, array in writer.arrays.items():
            with archive.open(f"arrays/{path}.npy", "w", force_zip64=True) as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def load(data: bytes) -> Recommender:
    """Rebuild a model from ``dump()`` bytes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError("not a recommender artifact (expected a zip written by dump())") from exc
    with archive:
        doc = json.loads(archive.read("model.json"))
        if doc.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"artifact format {doc.get('format')!r} is not supported (expected {ARTIFACT_FORMAT})")
        arrays = {}
        for info in archive.infolist():
            if info.filename.startswith("arrays/") and info.filename.endswith(".npy"):
                with archive.open(info) as handle:
                    arrays[info.filename[len("arrays/") : -len(".npy")]] = np.load(
                        io.BytesIO(handle.read()), allow_pickle=False
                    )
    return _decode(doc["model"], arrays)
