"""RFM clusters: recency, frequency and monetary value per profile -> KMeans clusters named from their centroids.

Heavy-tailed counts and amounts are log-scaled and standardised first, so that a handful of whales
do not get a cluster each and "days since last visit" weighs as much as spend. k is either fixed or
chosen by silhouette in a small range. Clusters are then ordered (by spend, frequency, recency) and
named from where each centroid sits against the whole population on each axis, so that a marketer
reads "lapsed frequent high spenders" rather than "cluster 3", and a retrain on similar data gives
the same order and names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

RFM_FEATURES = ("recency_days", "frequency", "monetary")
DEFAULT_K_RANGE = (3, 6)
# KMeans is fitted on at most this many profiles (then every profile is assigned to the nearest
# centroid); the silhouette is estimated on a smaller sample. Both keep a 1M-profile run in seconds.
FIT_SAMPLE = 200_000
SILHOUETTE_SAMPLE = 4_000
# A centroid more than this many standard deviations (log scale) above/below the population mean on
# an axis is "high"/"low" on it; in between it is "mid". 0.5 splits a normal population in ~thirds.
LEVEL_Z = 0.5
# Below this average spend (in the currency of the events) a cluster is one of non-buyers.
NON_BUYER_SPEND = 0.5
PREDICT_CHUNK = 100_000


class NotEnoughData(ValueError):
    """Raised when there is too little (or too uniform) data to fit a model; says what is missing."""


@dataclass(frozen=True)
class RfmScaler:
    """log1p then standardise, column by column; constant columns are left centred (scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rfm: np.ndarray) -> RfmScaler:
        logged = np.log1p(np.clip(rfm, 0, None))
        scale = logged.std(axis=0)
        return cls(mean=logged.mean(axis=0), scale=np.where(scale > 1e-12, scale, 1.0))

    def transform(self, rfm: np.ndarray) -> np.ndarray:
        return (np.log1p(np.clip(rfm, 0, None)) - self.mean) / self.scale

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        return np.expm1(scaled * self.scale + self.mean)


@dataclass(frozen=True)
class RfmModel:
    """What is kept (pickled) to assign profiles to clusters later: the scaler and named centroids."""

    scaler: RfmScaler
    centroids: np.ndarray  # (k, 3), in the scaled space, in cluster-index order
    names: tuple[str, ...]

    def predict(self, rfm: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid for each row of ``rfm`` (n, 3), computed in chunks."""
        rfm = _as_matrix(rfm)
        labels = np.empty(len(rfm), dtype=np.int64)
        for start in range(0, len(rfm), PREDICT_CHUNK):
            scaled = self.scaler.transform(rfm[start : start + PREDICT_CHUNK])
            distances = ((scaled[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
            labels[start : start + PREDICT_CHUNK] = distances.argmin(axis=1)
        return labels

    def centroids_raw(self) -> np.ndarray:
        """Centroids back in the original units (days, visits, money), for display."""
        return self.scaler.inverse(self.centroids)


@dataclass(frozen=True)
class RfmResult:
    model: RfmModel
    labels: np.ndarray  # cluster index of each input row
    sizes: tuple[int, ...]
    k: int
    silhouette: float | None
    silhouettes: dict[int, float] = field(default_factory=dict)  # every k tried -> its silhouette


def rfm_fit(
    rfm: np.ndarray,
    *,
    k: int | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    seed: int = 0,
    threads: int = 1,
) -> RfmResult:
    """Cluster profiles on (recency_days, frequency, monetary) rows.

    ``k``: a fixed number of clusters; None chooses it in ``k_range`` (inclusive) by silhouette.
    ``threads``: OpenMP/BLAS threads (see ``churn_fit``).
    """
    with threadpool_limits(limits=threads):
        return _rfm_fit(rfm, k=k, k_range=k_range, seed=seed)


def _rfm_fit(rfm: np.ndarray, *, k: int | None, k_range: tuple[int, int], seed: int) -> RfmResult:
    rfm = _as_matrix(rfm)
    distinct = len(np.unique(rfm, axis=0))
    if distinct < 2:
        raise NotEnoughData(
            f"RFM clustering needs at least 2 different profiles, got {distinct} distinct of {len(rfm)}"
        )
    scaler = RfmScaler.fit(rfm)
    scaled = scaler.transform(rfm)
    rng = np.random.default_rng(seed)
    fit_rows = scaled if len(scaled) <= FIT_SAMPLE else scaled[rng.choice(len(scaled), FIT_SAMPLE, replace=False)]

    low, high = (k, k) if k else k_range
    high = min(high, distinct - 1 if distinct > 2 else 2)
    low = max(2, min(low, high))
    silhouettes: dict[int, float] = {}
    best: tuple[float, KMeans] | None = None
    for candidate in range(low, high + 1):
        kmeans = KMeans(n_clusters=candidate, n_init=4, random_state=seed).fit(fit_rows)
        if len(np.unique(kmeans.labels_)) < 2:
            continue
        score = float(
            silhouette_score(
                fit_rows, kmeans.labels_, sample_size=min(SILHOUETTE_SAMPLE, len(fit_rows)), random_state=seed
            )
        )
        silhouettes[candidate] = round(score, 4)
        if best is None or score > best[0] + 1e-9:
            best = (score, kmeans)
    if best is None:
        raise NotEnoughData("RFM clustering found no split of the profiles into 2 or more clusters")
    silhouette, kmeans = best

    centroids = _ordered(kmeans.cluster_centers_)
    names = rfm_names(centroids, spend=scaler.inverse(centroids)[:, 2])
    model = RfmModel(scaler=scaler, centroids=centroids, names=names)
    labels = model.predict(rfm)
    sizes = tuple(int(n) for n in np.bincount(labels, minlength=len(centroids)))
    return RfmResult(
        model=model,
        labels=labels,
        sizes=sizes,
        k=len(centroids),
        silhouette=round(silhouette, 4),
        silhouettes=silhouettes,
    )


def rfm_names(centroids: np.ndarray, *, spend: np.ndarray) -> tuple[str, ...]:
    """Names from standardised centroids (k, 3): recency word, frequency word, spend word.

    Recent and infrequent reads "new"; recent otherwise needs no word ("frequent high spenders");
    mid recency is "cooling", high is "lapsed". Clusters that would share a name get "(2)", "(3)" in
    cluster order, so every name is unique.
    """
    names = []
    for (recency, frequency, monetary), average_spend in zip(centroids, spend, strict=True):
        r, f, m = _level(recency), _level(frequency), _level(monetary)
        words = []
        if r == "low" and f == "low":
            words.append("new")
        else:
            words.append({"low": "", "mid": "cooling", "high": "lapsed"}[r])
            words.append({"low": "occasional", "mid": "regular", "high": "frequent"}[f])
        if average_spend < NON_BUYER_SPEND:
            words.append("browsers")
        else:
            words.append({"low": "low spenders", "mid": "mid spenders", "high": "high spenders"}[m])
        names.append(" ".join(word for word in words if word))
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return tuple(unique)


def _level(z: float) -> str:
    return "high" if z > LEVEL_Z else "low" if z < -LEVEL_Z else "mid"


def _ordered(centroids: np.ndarray) -> np.ndarray:
    """Biggest spenders first, then most frequent, then most recent: a stable order across retrains."""
    order = np.lexsort((centroids[:, 0], -centroids[:, 1], -centroids[:, 2]))
    return centroids[order]


def _as_matrix(rfm: np.ndarray) -> np.ndarray:
    rfm = np.asarray(rfm, dtype=np.float64)
    if rfm.ndim != 2 or rfm.shape[1] != len(RFM_FEATURES):
        raise ValueError(f"RFM input must have shape (n, 3) for {RFM_FEATURES}, got {rfm.shape}")
    if not np.isfinite(rfm).all():
        raise ValueError("RFM input has NaN or infinite values")
    return rfm
