"""Content-based recommendations: TF-IDF over title/description/tags plus one-hot categories and
tags (scikit-learn), so items nobody has interacted with yet can be recommended.

A user's profile is the weighted mean of the vectors of the items they interacted with (a negative
weight, e.g. a thumbs-down, pushes the profile away from that item), plus the vector of their
stated preferences (onboarding categories/tags), which alone is enough for a visitor with no events.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from recommenders.algorithms.base import ItemFeatures, Preferences, Recommender, UserContext, as_user_items


def normalize(matrix, norm: str = "l2") -> sparse.csr_matrix:
    """Rows scaled to unit length (`l2`) or unit sum of absolute values (`l1`); all-zero rows stay
    zero. What `sklearn.preprocessing.normalize` does for CSR input, without its argument
    validation, which cost more than the arithmetic when serving one visitor (a recompute-on-read
    normalizes three times)."""
    out = matrix.tocsr(copy=True) if sparse.issparse(matrix) else sparse.csr_matrix(matrix)
    if out.dtype not in (np.float32, np.float64):
        out = out.astype(np.float64)
    counts = np.diff(out.indptr)
    per = np.abs(out.data) if norm == "l1" else out.data * out.data
    sums = np.bincount(np.repeat(np.arange(out.shape[0]), counts), weights=per, minlength=out.shape[0])
    norms = sums if norm == "l1" else np.sqrt(sums)
    norms[norms == 0] = 1.0
    out.data /= np.repeat(norms, counts).astype(out.dtype, copy=False)
    return out


def _norm_label(value: str) -> str:
    return str(value).strip().lower()


def _one_hot(labels: list[list[str]], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    rows, cols = [], []
    for row, values in enumerate(labels):
        for col in sorted({vocabulary[v] for v in map(_norm_label, values) if v in vocabulary}):
            rows.append(row)
            cols.append(col)
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(labels), len(vocabulary)))


class Content(Recommender):
    name = "content"
    defaults = {
        "max_features": 50_000,
        "min_df": 1,
        "max_df": 0.9,
        "text_weight": 1.0,
        "category_weight": 1.0,
        "tag_weight": 0.5,
        "preference_weight": 1.0,
    }

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
        if item_features is None:
            raise ValueError("content: needs item_features (texts and categories of every item)")
        if item_features.n_items != X.shape[1]:
            raise ValueError(f"content: item_features has {item_features.n_items} items, user_items {X.shape[1]}")
        p = self._params
        texts = [t or "" for t in item_features.texts]
        self.terms: list[str] = []
        self.idf = np.zeros(0, dtype=np.float32)
        text_block = sparse.csr_matrix((len(texts), 0), dtype=np.float32)
        if any(t.strip() for t in texts):
            vectorizer = TfidfVectorizer(
                max_features=int(p["max_features"]),
                min_df=p["min_df"],
                max_df=p["max_df"] if len(texts) > 2 else 1.0,
                sublinear_tf=True,
                dtype=np.float32,
            )
            try:
                text_block = vectorizer.fit_transform(texts)
                self.terms = [str(t) for t in vectorizer.get_feature_names_out()]
                self.idf = vectorizer.idf_.astype(np.float32)
            except ValueError:  # every word was pruned (tiny or uniform catalogue): no text signal
                pass
        self.category_names = sorted({_norm_label(c) for cats in item_features.categories for c in cats})
        self.tag_names = sorted({_norm_label(t) for tags in (item_features.tags or []) for t in tags})
        categories = _one_hot(list(item_features.categories), self._category_index)
        tags = _one_hot(list(item_features.tags or [[]] * len(texts)), self._tag_index)
        self.item_vectors = self._combine(text_block, categories, tags)
        self._fitted(X)
        return self

    @property
    def _category_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.category_names)}

    @property
    def _tag_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tag_names)}

    def _combine(self, text: sparse.spmatrix, categories: sparse.spmatrix, tags: sparse.spmatrix) -> sparse.csr_matrix:
        p = self._params
        # Each block is unit-length before weighting, so the weights mean what they say.
        blocks = [
            float(weight) * normalize(block)
            for weight, block in (
                (p["text_weight"], text),
                (p["category_weight"], categories),
                (p["tag_weight"], tags),
            )
            if block.shape[1]  # a catalogue without tags (or text) has an empty block
        ]
        if not blocks:
            return sparse.csr_matrix((text.shape[0], 1), dtype=np.float32)
        return normalize(sparse.hstack(blocks, format="csr", dtype=np.float32)).astype(np.float32)

    def preference_vectors(self, preferences: list[Preferences | None]) -> sparse.csr_matrix:
        """Vectors of stated preferences in item space: the category and tag one-hots, plus the
        stated words where they are terms of the text vocabulary (for catalogues without tags)."""
        term_index = {t: i for i, t in enumerate(self.terms)}
        words = [[] if pref is None else [*pref.tags, *pref.categories] for pref in preferences]
        rows, cols, vals = [], [], []
        for row, values in enumerate(words):
            for word in {_norm_label(w) for w in values}:
                for token in word.split():
                    if token in term_index:
                        rows.append(row)
                        cols.append(term_index[token])
                        vals.append(float(self.idf[term_index[token]]))
        text = sparse.csr_matrix((vals, (rows, cols)), shape=(len(preferences), len(self.terms)), dtype=np.float32)
        categories = _one_hot([[] if p is None else list(p.categories) for p in preferences], self._category_index)
        tags = _one_hot([[] if p is None else list(p.tags) for p in preferences], self._tag_index)
        return self._combine(text, categories, tags)

    def profiles(self, rows: sparse.csr_matrix, preferences: list[Preferences | None] | None) -> sparse.csr_matrix:
        """Unit profile per user: normalised weighted mean of their items, plus stated preferences."""
        profile = normalize(normalize(rows, norm="l1") @ self.item_vectors)
        if preferences is not None:
            profile = profile + float(self._params["preference_weight"]) * self.preference_vectors(list(preferences))
        return normalize(sparse.csr_matrix(profile, dtype=np.float32))

    def _score(
        self, userids: np.ndarray, rows: sparse.csr_matrix, *, context: UserContext | None, recalculate_user: bool
    ) -> np.ndarray:
        prefs = None if context is None else context.preferences
        return (self.profiles(rows, prefs) @ self.item_vectors.T).toarray()

    def _similar(self, itemids: np.ndarray) -> np.ndarray:
        return (self.item_vectors[itemids] @ self.item_vectors.T).toarray()

    def similarity_between(self, itemids: np.ndarray, others: np.ndarray) -> np.ndarray:
        return (self.item_vectors[itemids] @ self.item_vectors[others].T).toarray()

    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "item_vectors": self.item_vectors,
            "terms": self.terms,
            "idf": self.idf,
            "category_names": self.category_names,
            "tag_names": self.tag_names,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.item_vectors = sparse.csr_matrix(state["item_vectors"], dtype=np.float32)
        self.terms = list(state["terms"])
        self.idf = np.asarray(state["idf"], dtype=np.float32)
        self.category_names = list(state["category_names"])
        self.tag_names = list(state["tag_names"])
