"""ML scores of profiles: train the RFM clusters and the churn-risk model, store versions, write scores.

Features are computed set-based in the database (one aggregate query per feature set); the maths is
in ``segments.ml`` (pure). Scores go to ``ProfileScore`` (``churn_risk``: value 0..1;
``rfm_segment``: value = cluster index, label = cluster name), and each trained model to
``ScoreModel`` with its held-out metrics and a pickled artifact in Django's default storage.

Only profiles whose personalization consent allows it are scored (profiling is personalization);
scores of anyone else, or of a profile no longer scored, are deleted when the new version goes live.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from privacy.models import ConsentState
from privacy.services.consent import purposes
from segments.ml import churn, rfm
from segments.ml.rfm import NotEnoughData
from segments.models import ProfileScore, ScoreModel, Segment
from tracking.models import Event, Profile

logger = logging.getLogger(__name__)

CHURN = "churn_risk"
RFM = "rfm_segment"
SCORE_NAMES = (CHURN, RFM)
WRITE_BATCH = 5_000
PG_WRITE_BATCH = 50_000
ARTIFACTS_KEPT = 10  # newest versions per model whose artifact file is kept
READ_CHUNK = 20_000
# Held for the whole run on Postgres, so two concurrent runs never interleave their versions' writes.
TRAIN_LOCK = 0x5E6_5C0E
DAY = 86_400.0


@dataclass
class TrainResult:
    """What one training run did, per model: the version made live, or why it was skipped."""

    versions: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    scored: dict[str, int] = field(default_factory=dict)
    recompute: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"versions": self.versions, "skipped": self.skipped, "scored": self.scored, "recompute": self.recompute}


def scores_train(*, now: datetime | None = None) -> TrainResult:
    """Train both models on the current data, store them as new live versions and rewrite the scores.

    Safe to rerun (a rerun stores the same scores under a new version) and to run concurrently: on
    Postgres a second run meanwhile skips, saying so, rather than interleave its writes."""
    now = now or timezone.now()
    result = TrainResult()
    with _train_lock() as acquired:
        if not acquired:
            result.skipped = dict.fromkeys(SCORE_NAMES, "another training run is in progress")
            return result
        allowed = scorable_profiles()
        for name, train in ((RFM, _rfm_train), (CHURN, _churn_train)):
            try:
                version, scored = train(now=now, allowed=allowed)
            except NotEnoughData as exc:
                logger.info("score %s not trained: %s", name, exc)
                result.skipped[name] = str(exc)
                # The live version's scores stay, but never for someone who has withdrawn consent since.
                ProfileScore.objects.filter(name=name).exclude(profile__in=allowed.values("pk")).delete()
                continue
            result.versions[name] = version
            result.scored[name] = scored
        if result.versions:
            result.recompute = _recompute_score_segments(set(result.versions))
    return result


def scorable_profiles() -> QuerySet[Profile]:
    """Profiles whose consent allows personalization: under an opt-in regime a grant at the source's
    current policy version, under opt-out no refusal (the regime and policy of their last source; a
    profile whose source is gone is not scored)."""
    purpose = purposes().get("personalization")
    profiles = Profile.objects.all()
    if purpose is None or purpose.required:
        return profiles
    states = ConsentState.objects.filter(profile=OuterRef("pk"), purpose_id=purpose.id)
    refused = states.filter(granted=False)
    granted = states.filter(granted=True, policy_version__gte=OuterRef("last_source__consent_policy_version"))
    opt_out = Q(~Exists(refused), last_source__consent_regime="opt_out")
    opt_in = Q(Exists(granted), last_source__consent_regime="opt_in")
    return profiles.filter(opt_out | opt_in)


# --- RFM ---------------------------------------------------------------------------------------


def rfm_features(*, now: datetime, allowed: QuerySet[Profile]) -> tuple[np.ndarray, np.ndarray]:
    """(profile ids, rows of days since last visit, visits, revenue) of every profile with activity."""
    rows = allowed.filter(event_count__gt=0).order_by().values_list("id", "last_seen_at", "session_count", "revenue")
    ids, features = [], []
    for pk, last_seen, sessions, revenue in rows.iterator(chunk_size=READ_CHUNK):
        ids.append(pk)
        features.append((max((now - last_seen).total_seconds(), 0.0) / DAY, max(sessions, 1), float(revenue)))
    return np.asarray(ids, dtype=np.int64), np.asarray(features, dtype=np.float64).reshape(-1, 3)


def _rfm_train(*, now: datetime, allowed: QuerySet[Profile]) -> tuple[int, int]:
    ids, features = rfm_features(now=now, allowed=allowed)
    k = settings.SEGMENTS_RFM_CLUSTERS or None
    fitted = rfm.rfm_fit(features, k=k, seed=settings.SEGMENTS_SCORE_SEED, threads=settings.SEGMENTS_SCORE_THREADS)
    raw = fitted.model.centroids_raw()
    clusters = [
        {
            "index": index,
            "name": name,
            "size": fitted.sizes[index],
            "recency_days": round(float(raw[index, 0]), 1),
            "visits": round(float(raw[index, 1]), 1),
            "revenue": round(float(raw[index, 2]), 2) + 0.0,  # + 0.0: no "-0.0" for non-buyers
        }
        for index, name in enumerate(fitted.model.names)
    ]
    params = {
        "features": list(rfm.RFM_FEATURES),
        "frequency": "sessions",
        "monetary": "lifetime revenue",
        "k": k or f"auto {rfm.DEFAULT_K_RANGE[0]}-{rfm.DEFAULT_K_RANGE[1]} by silhouette",
        "seed": settings.SEGMENTS_SCORE_SEED,
    }
    metrics = {
        "k": fitted.k,
        "silhouette": fitted.silhouette,
        "silhouettes": {str(k): v for k, v in fitted.silhouettes.items()},
        "profiles": len(ids),
        "clusters": clusters,
    }
    names = np.asarray(fitted.model.names, dtype=object)
    return _publish(
        name=RFM,
        now=now,
        artifact=fitted.model,
        params=params,
        metrics=metrics,
        ids=ids,
        values=fitted.labels.astype(np.float64),
        labels=names[fitted.labels],
    )


# --- Churn -------------------------------------------------------------------------------------


def churn_columns(
    *, cutoff: datetime, horizon_days: int | None = None, active_since: datetime | None = None, allowed=None
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """Per-profile churn features at ``cutoff``, in one aggregate query over the event table.

    With ``horizon_days`` also the label (1 = no event in [cutoff, cutoff + horizon)); with
    ``active_since`` only profiles with an event in [active_since, cutoff). Returns (profile ids,
    columns for ``churn.churn_matrix``, labels or None).
    """
    before = Q(timestamp__lt=cutoff)

    def since(days: int) -> Q:
        return before & Q(timestamp__gte=cutoff - timedelta(days=days))

    purchase = Q(type=churn.PURCHASE)
    events = Event.objects.order_by()
    end = cutoff + timedelta(days=horizon_days) if horizon_days else cutoff
    events = events.filter(timestamp__lt=end)
    if allowed is not None:
        events = events.filter(profile__in=allowed.values("pk"))
    aggregates = {
        "last": Max("timestamp", filter=before),
        "first": Min("timestamp", filter=before),
        "events_ever": Count("id", filter=before),
        **{f"events_{w}d": Count("id", filter=since(w)) for w in churn.WINDOWS},
        "active_days_30d": Count(TruncDate("timestamp"), filter=since(30), distinct=True),
        "active_days_90d": Count(TruncDate("timestamp"), filter=since(90), distinct=True),
        "purchases_ever": Count("id", filter=before & purchase),
        "purchases_90d": Count("id", filter=since(90) & purchase),
        "revenue_ever": Coalesce(Sum("value", filter=before & purchase), Value(Decimal(0))),
        **{f"{t}_90d": Count("id", filter=since(90) & Q(type=t)) for t in churn.MIX_TYPES},
    }
    if horizon_days:
        aggregates["later"] = Count("id", filter=Q(timestamp__gte=cutoff))
    rows = events.values("profile_id").annotate(**aggregates).filter(events_ever__gt=0)
    if active_since is not None:
        rows = rows.filter(last__gte=active_since)
    names = [name for name in aggregates if name not in ("last", "first", "later")]
    ids, recency, tenure, labels = [], [], [], []
    values: dict[str, list] = {name: [] for name in names}
    stamp = cutoff.timestamp()
    for row in rows.order_by("profile_id").iterator(chunk_size=READ_CHUNK):
        ids.append(row["profile_id"])
        recency.append((stamp - row["last"].timestamp()) / DAY)
        tenure.append((stamp - row["first"].timestamp()) / DAY)
        for name in names:
            values[name].append(float(row[name]))
        if horizon_days:
            labels.append(0 if row["later"] else 1)
    columns = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}
    columns["recency_days"] = np.asarray(recency, dtype=np.float64)
    columns["tenure_days"] = np.asarray(tenure, dtype=np.float64)
    return np.asarray(ids, dtype=np.int64), columns, (np.asarray(labels, dtype=np.int8) if horizon_days else None)


def _churn_train(*, now: datetime, allowed: QuerySet[Profile]) -> tuple[int, int]:
    horizon = settings.SEGMENTS_CHURN_HORIZON_DAYS
    lookback = settings.SEGMENTS_CHURN_LOOKBACK_DAYS
    seed = settings.SEGMENTS_SCORE_SEED
    cutoff = now - timedelta(days=horizon)
    # Learnt from the same consenting profiles it scores, and only from those active in the lookback
    # before the cutoff: long-gone profiles would make the task look easier than it is.
    _, columns, labels = churn_columns(
        cutoff=cutoff, horizon_days=horizon, active_since=cutoff - timedelta(days=lookback), allowed=allowed
    )
    threads = settings.SEGMENTS_SCORE_THREADS
    fitted = churn.churn_fit(churn.churn_matrix(columns), labels, seed=seed, threads=threads)
    ids, today, _ = churn_columns(cutoff=now, allowed=allowed)
    risk = fitted.model.predict(churn.churn_matrix(today), threads=threads) if len(ids) else np.empty(0)
    params = {
        "features": list(churn.CHURN_FEATURES),
        "horizon_days": horizon,
        "lookback_days": lookback,
        "classifier": "HistGradientBoostingClassifier",
        "seed": seed,
    }
    metrics = {
        "auc": fitted.auc,
        "n_train": fitted.n_train,
        "n_test": fitted.n_test,
        "churn_rate": fitted.churn_rate,
        "cutoff": cutoff.isoformat(),
        "profiles": len(ids),
        "mean_risk": round(float(risk.mean()), 4) if len(risk) else None,
    }
    return _publish(
        name=CHURN,
        now=now,
        artifact=fitted.model,
        params=params,
        metrics=metrics,
        ids=ids,
        values=np.round(risk, 6),
        labels=None,
    )


# --- Storing -----------------------------------------------------------------------------------


def _publish(
    *,
    name: str,
    now: datetime,
    artifact: object,
    params: dict,
    metrics: dict,
    ids: np.ndarray,
    values: np.ndarray,
    labels: np.ndarray | None,
) -> tuple[int, int]:
    """Store a new version (artifact, params, metrics), write its scores in bulk, drop the older
    version's leftovers and make it live, all in one transaction: readers see old or new, never a mix."""
    last = ScoreModel.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0
    version = last + 1
    path = f"segments/models/{name}/{version}.pkl"
    if default_storage.exists(path):
        default_storage.delete(path)  # left by a run that failed before committing its version
    stored = default_storage.save(path, ContentFile(pickle.dumps(artifact, protocol=pickle.HIGHEST_PROTOCOL)))
    with transaction.atomic():
        model = ScoreModel.objects.create(
            name=name, version=version, trained_at=now, params=params, metrics=metrics, artifact=stored
        )
        _scores_write(name=name, version=version, now=now, ids=ids, values=values, labels=labels)
        ProfileScore.objects.filter(name=name).exclude(model_version=version).delete()
        ScoreModel.objects.filter(name=name, is_live=True).update(is_live=False)
        ScoreModel.objects.filter(pk=model.pk).update(is_live=True)
    _artifacts_prune(name=name, keep_from=version - ARTIFACTS_KEPT + 1)
    return version, len(ids)


def _artifacts_prune(*, name: str, keep_from: int) -> None:
    """Old versions keep their row (metrics history) but lose their artifact file, so a daily retrain
    does not fill the storage."""
    old = ScoreModel.objects.filter(name=name, version__lt=keep_from, is_live=False).exclude(artifact="")
    for model in old:
        if default_storage.exists(model.artifact):
            default_storage.delete(model.artifact)
    old.update(artifact="")


def _scores_write(
    *, name: str, version: int, now: datetime, ids: np.ndarray, values: np.ndarray, labels: np.ndarray | None
) -> None:
    """Upsert the scores in chunks. Profiles erased or merged away since the features were read are
    skipped (joined against the profile table), never an error."""
    labels_list = [""] * len(ids) if labels is None else [str(label) for label in labels]
    if connection.vendor == "postgresql":
        # One statement per chunk from arrays: the ORM's per-object bulk_create costs 10x more here.
        table, profiles = ProfileScore._meta.db_table, Profile._meta.db_table
        sql = (
            f"INSERT INTO {table} (profile_id, name, value, label, model_version, computed_at) "
            f"SELECT t.profile_id, %s, t.value, t.label, %s, %s "
            f"FROM unnest(%s::bigint[], %s::float8[], %s::text[]) AS t(profile_id, value, label) "
            f"JOIN {profiles} p ON p.id = t.profile_id "
            "ON CONFLICT (profile_id, name) DO UPDATE SET value = excluded.value, label = excluded.label, "
            "model_version = excluded.model_version, computed_at = excluded.computed_at"
        )
        with connection.cursor() as cursor:
            for start in range(0, len(ids), PG_WRITE_BATCH):
                end = start + PG_WRITE_BATCH
                cursor.execute(
                    sql,
                    [name, version, now, ids[start:end].tolist(), values[start:end].tolist(), labels_list[start:end]],
                )
        return
    for start in range(0, len(ids), WRITE_BATCH):
        chunk = [int(pk) for pk in ids[start : start + WRITE_BATCH]]
        existing = set(Profile.objects.filter(pk__in=chunk).values_list("pk", flat=True))
        ProfileScore.objects.bulk_create(
            [
                ProfileScore(
                    profile_id=pk,
                    name=name,
                    value=float(values[i]),
                    label=labels_list[i],
                    model_version=version,
                    computed_at=now,
                )
                for i, pk in enumerate(chunk, start=start)
                if pk in existing
            ],
            update_conflicts=True,
            unique_fields=["profile", "name"],
            update_fields=["value", "label", "model_version", "computed_at"],
        )


def score_model_load(*, name: str, version: int | None = None) -> object:
    """The unpickled artifact of a model version (default: the live one). Our own files only: the
    storage is the platform's, never user-supplied."""
    found = ScoreModel.objects.filter(name=name)
    model = found.get(version=version) if version else found.get(is_live=True)
    with default_storage.open(model.artifact, "rb") as handle:
        return pickle.load(handle)


def _recompute_score_segments(names: set[str]) -> list[int]:
    """Queue a recompute of the active segments that read a score that just changed (directly or
    through a segment they refer to), at their current version, once the scores are committed."""
    from segments.services.membership import active_segments
    from segments.tasks import segment_recompute_task

    ids = [segment.id for segment in active_segments() if segment.deps.scores & names]
    versions = dict(Segment.objects.filter(pk__in=ids).values_list("pk", "version"))
    for segment_id, version in versions.items():
        transaction.on_commit(lambda s=segment_id, v=version: segment_recompute_task.delay(s, v))
    return sorted(versions)


class _train_lock:
    """Postgres session advisory lock (try, never wait); other databases run one process (embedded)."""

    def __enter__(self) -> bool:
        self.held = False
        if connection.vendor != "postgresql":
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [TRAIN_LOCK])
            self.held = bool(cursor.fetchone()[0])
        return self.held

    def __exit__(self, *exc) -> None:
        if self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [TRAIN_LOCK])
