"""The placement's ordering rules through the algorithms' re-ranker (`algorithms/rerank.py`):
serving's candidates come from several sources (model, session, trending, collections), so they
are given local columns 0..k-1, with the catalogue facts the re-ranker needs, and mapped back."""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
from scipy import sparse

from recommenders.algorithms import rerank
from recommenders.models import Item
from recommenders.serving.personal import Candidate
from recommenders.serving.rules import Rules


def _seed(key: str) -> int:
    """Exploration is reproducible per visitor and day: a list does not reshuffle on each view."""
    return int.from_bytes(hashlib.blake2b(f"{key}:{date.today().isoformat()}".encode(), digest_size=8).digest(), "big")


def _category_vectors(items: list[Item]) -> sparse.csr_matrix:
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for row, item in enumerate(items):
        labels = [f"c:{c}".lower() for c in item.categories or []] + [f"t:{t}".lower() for t in item.tags or []]
        for label in dict.fromkeys(labels):
            rows.append(row)
            cols.append(vocabulary.setdefault(label, len(vocabulary)))
    shape = (len(items), max(len(vocabulary), 1))
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)


def reorders(rules: Rules) -> bool:
    """Whether the placement has rules that change the order (else the list is kept as found)."""
    return bool(
        rules.pins or rules.boosts or rules.buries or rules.category_cap or rules.mmr_lambda is not None
    ) or bool(rules.exploration)


def merchandise(
    kept: list[Candidate],
    items: dict[str, Item],
    rules: Rules,
    n: int,
    *,
    exploration_pool: list[Candidate] = (),
    seed_key: str = "",
) -> list[Candidate]:
    """Final order of at most `n` candidates. Candidates keep the order they were found in (the
    best source first); boosts and buries, caps, MMR, exploration and pins then apply."""
    pool = [c for c in exploration_pool if c.item in items and c.item not in {k.item for k in kept}]
    everything = kept + pool
    if not everything:
        return []
    column = {c.item: i for i, c in enumerate(everything)}
    rows = [items[c.item] for c in everything]
    catalogue = rerank.Catalogue(
        in_stock=np.asarray([bool(i.in_stock) for i in rows]),
        prices=np.asarray([float(i.price) if i.price is not None else np.nan for i in rows]),
        categories=[[str(c) for c in i.categories or []] for i in rows],
    )
    plan = rerank.Rules(
        exclude_seen=False,  # seen / purchased were left out before (they need the visitor's history)
        exclude_purchased=False,
        in_stock_only=rules.in_stock_only,
        pins={column[i]: p for i, p in rules.pins.items() if i in column},
        boosts={column[i]: f for i, f in rules.boosts.items() if i in column},
        buries={column[i]: f for i, f in rules.buries.items() if i in column},
        category_cap=rules.category_cap,
        mmr_lambda=rules.mmr_lambda,
        exploration=rules.exploration if pool else 0.0,
    )
    # Sources score on different scales: rank is what they agree on, so it is the score here.
    ranks = np.arange(len(kept), 0, -1, dtype=np.float64)
    ranked = rerank.rerank(
        np.arange(len(kept), dtype=np.int64),
        ranks,
        n=n,
        rules=plan,
        catalogue=catalogue,
        n_items=len(everything),
        similarity=rerank.cosine_similarity_fn(_category_vectors(rows)) if rules.mmr_lambda is not None else None,
        exploration_pool=np.arange(len(kept), len(everything), dtype=np.int64),
        seed=_seed(seed_key),
    )
    out = []
    for col, origin in zip(ranked.ids.tolist(), ranked.origins, strict=True):
        candidate = everything[col]
        if origin == "exploration":
            candidate = Candidate(candidate.item, candidate.score, "exploration", reason="something new to discover")
        out.append(candidate)
    return out
