"""The training pipeline of one configuration: extract -> build matrix -> (tune) -> fit ->
evaluate -> register version -> promote -> publish.

Idempotent: the inputs (configuration and the latest event and feedback it would read) are
fingerprinted first, and a version already built from equal inputs makes the run a no-op. A cache
lock keeps two trainings of one configuration from running at once (a second one returns at
once). Each stage's wall time is stored with the version. The lists to publish are computed on
another thread from the moment the final model is fitted, while it is evaluated and registered;
they are written only if it passes the promotion gate.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from scipy import sparse

from recommenders import cache_keys
from recommenders.algorithms.base import Recommender, dump
from recommenders.algorithms.registry import build
from recommenders.artifacts import Bundle, artifact_save
from recommenders.models import ModelVersion, RecommenderConfig
from recommenders.registry import LoadedModel
from recommenders.services import evaluation
from recommenders.services.matrix import Interactions, input_fingerprint, interactions_build
from recommenders.services.promotion import ListsBuild, lists_build, version_promote
from recommenders.services.tuning import tune

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    config_key: str
    version: int | None
    status: str  # a ModelVersion status, or "skipped"
    reason: str

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"


class TrainingBusy(Exception):
    """Another training of the configuration holds the lock."""


@contextmanager
def training_lock(config_key: str):
    """Cache-based mutex (atomic `add`); the holder refreshes it between stages."""
    key = cache_keys.train_lock(config_key)
    token = uuid.uuid4().hex
    if not cache.add(key, token, cache_keys.TRAIN_LOCK_TTL):
        raise TrainingBusy(f"a training of {config_key!r} is already running")
    try:
        yield lambda: cache.touch(key, cache_keys.TRAIN_LOCK_TTL)
    finally:
        if cache.get(key) == token:
            cache.delete(key)


class _Timer:
    def __init__(self, touch) -> None:
        self.timings: dict[str, float] = {}
        self._touch = touch

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)
        self._touch()


def model_train(*, config_id: int, force: bool = False) -> TrainResult:
    """Run the whole pipeline for one configuration. `force` trains even when the inputs equal
    those of an existing version (e.g. to re-run the evaluation with a new algorithm release)."""
    config = RecommenderConfig.objects.get(pk=config_id)
    try:
        with training_lock(config.key) as touch:
            return _train(config, force=force, timer=_Timer(touch))
    except TrainingBusy as busy:
        return TrainResult(config.key, None, "skipped", str(busy))


def _train(config: RecommenderConfig, *, force: bool, timer: _Timer) -> TrainResult:
    now = timezone.now()
    total_start = time.perf_counter()
    fingerprint, _ = input_fingerprint(config=config, now=now)
    existing = ModelVersion.objects.filter(config=config, fingerprint=fingerprint).order_by("-version").first()
    if existing is not None and not force:
        return TrainResult(
            config.key, existing.version, "skipped", f"no new events since v{existing.version}: nothing to train"
        )

    with timer.stage("extract"):
        interactions = interactions_build(config=config, now=now)
    if not len(interactions.weights) or not (interactions.weights > 0).any():
        return TrainResult(config.key, None, "skipped", "no interactions to learn from (events, weights, consent)")

    with timer.stage("matrix"):
        full = interactions.matrix()
        timestamps = interactions.timestamp_matrix()
        split = evaluation.holdout_split(interactions)
        features = evaluation.item_features(interactions.item_ids)
        vectors = evaluation.category_vectors(features)
    k = evaluation.metric_k(config.promotion_metric)

    with _ListsAhead(config=config, interactions=interactions, full=full) as ahead:
        try:
            model, params, trials, model_metrics, baseline, live, live_metrics = _fit_and_evaluate(
                config,
                interactions,
                full,
                timestamps,
                split,
                features,
                vectors,
                k=k,
                now_epoch=now.timestamp(),
                timer=timer,
                final=ahead.start,
            )
        except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError, MemoryError) as exc:
            # A configuration that cannot train (unknown algorithm or parameter, catalogue too large
            # for the algorithm...) leaves a rejected version saying why, visible in the admin; equal
            # inputs then make later runs no-ops instead of failing again every night.
            logger.warning("training %s failed: %s", config.key, exc)
            reason = f"training failed: {type(exc).__name__}: {exc}"
            number = _rejected(config, interactions=interactions, fingerprint=fingerprint, now=now, reason=reason)
            return TrainResult(config.key, number, ModelVersion.Status.REJECTED, reason)

        metrics = {"k": k, "model": model_metrics, "popularity": baseline}
        if live_metrics is not None:
            metrics["live"] = live_metrics
            metrics["live_version"] = live.version
        with timer.stage("register"):
            version = _register(
                config,
                model=model,
                interactions=interactions,
                full=full,
                features=features,
                params=params,
                metrics=metrics,
                trials=trials,
                fingerprint=fingerprint,
                now=now,
                timings=timer.timings,
            )
        loaded = LoadedModel(
            config_key=config.key,
            version=version.version,
            model_version_id=version.pk,
            algorithm=model.name,
            recommender=model,
            item_ids=interactions.item_ids,
            profile_ids=interactions.profile_ids,
            user_items=full,
            item_features=features,
            trained_through=interactions.trained_through,
            published_at=None,
        )
        outcome = version_promote(version=version, timer=timer, loaded=loaded, build=ahead.build)
        if ahead.build is not None:
            # Computed alongside evaluate and register, so not part of the stages' sum.
            timer.timings["lists_alongside"] = round(ahead.build.seconds, 4)
    timer.timings["total"] = round(time.perf_counter() - total_start, 4)
    ModelVersion.objects.filter(pk=version.pk).update(timings=timer.timings)
    return TrainResult(config.key, version.version, outcome.status, outcome.reason)


class _ListsAhead:
    """The lists of the model to publish, computed on another thread (`lists_build`) from the moment
    it is fitted, while this one evaluates and registers it. They reach the cache only if the
    version passes the gate (`version_promote`); leaving the block stops whatever still runs."""

    def __init__(self, *, config: RecommenderConfig, interactions: Interactions, full: sparse.csr_matrix) -> None:
        self.config, self.interactions, self.full = config, interactions, full
        self.build: ListsBuild | None = None

    def start(self, model: Recommender) -> None:
        if self.build is not None:
            self.build.cancel()
        self.build = lists_build(
            recommender=model,
            user_items=self.full,
            profile_ids=self.interactions.profile_ids,
            item_ids=self.interactions.item_ids,
            top_n=self.config.top_n,
            active_days=self.config.active_days,
        )

    def __enter__(self) -> _ListsAhead:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.build is not None:
            self.build.cancel()


def _fit_and_evaluate(config, interactions, full, timestamps, split, features, vectors, *, k, now_epoch, timer, final):
    """Fit, evaluate on the holdout and, when it is small, refit on everything; `final` is called
    with the model to publish as soon as it is fitted."""
    params = dict(config.params or {})
    refit = bool(split.test.nnz) and len(full.data) <= settings.RECOMMENDERS_REFIT_MAX_NNZ
    trials: list[dict] = []
    if config.tuning_budget_seconds:
        with timer.stage("tune"):
            params, trials = tune(
                config=config,
                split=split,
                timestamps=timestamps,
                features=features,
                k=k,
                budget_seconds=config.tuning_budget_seconds,
            )
    with timer.stage("fit"):
        model = _fit(config.algorithm, params, split.train, features, timestamps, now_epoch)
    if not refit:
        final(model)
    with timer.stage("evaluate"):
        model_metrics = evaluation.evaluate_model(model, split, k=k, item_vectors=vectors)
        baseline = evaluation.evaluate_popularity(split, k=k, item_vectors=vectors)
        live = ModelVersion.objects.filter(config=config, status=ModelVersion.Status.LIVE).first()
        live_metrics = _live_metrics(live, split, interactions, k=k, vectors=vectors)
    if refit:
        # Small enough to fit twice: the published model learns from the held-out interactions too.
        with timer.stage("refit"):
            model = _fit(config.algorithm, params, full, features, timestamps, now_epoch)
        final(model)
    return model, params, trials, model_metrics, baseline, live, live_metrics


def _rejected(config: RecommenderConfig, *, interactions: Interactions, fingerprint: str, now, reason: str) -> int:
    for _ in range(3):
        with transaction.atomic():
            RecommenderConfig.objects.select_for_update().filter(pk=config.pk).first()
            number = (ModelVersion.objects.filter(config=config).aggregate(n=Max("version"))["n"] or 0) + 1
            try:
                with transaction.atomic():
                    ModelVersion.objects.create(
                        config=config,
                        version=number,
                        status=ModelVersion.Status.REJECTED,
                        reason=reason,
                        algorithm=config.algorithm,
                        trained_at=now,
                        trained_through=interactions.trained_through,
                        params=dict(config.params or {}),
                        matrix_stats=interactions.stats(),
                        fingerprint=fingerprint,
                    )
                    return number
            except IntegrityError:
                continue
    raise RuntimeError(f"could not number a new version of {config.key!r}")


def _fit(
    algorithm: str,
    params: dict,
    train: sparse.csr_matrix,
    features,
    timestamps: sparse.csr_matrix,
    now_epoch: float,
) -> Recommender:
    # Timestamps of the cells the model sees (same sparsity as its matrix), for time-decayed models.
    cell_times = timestamps.multiply(train.astype(bool)).tocsr()
    return build(algorithm, **params).fit(train, item_features=features, timestamps=cell_times, now=now_epoch)


def _live_metrics(
    live: ModelVersion | None, split: evaluation.Split, interactions: Interactions, *, k: int, vectors
) -> dict | None:
    """The live version scored on this training's holdout, for a like-for-like promotion gate."""
    if live is None or not live.artifact:
        return None
    from recommenders.registry import model_load

    try:
        loaded = model_load(live)
        return evaluation.evaluate_other(
            loaded.recommender,
            model_item_ids=loaded.item_ids,
            split=split,
            item_ids=interactions.item_ids,
            k=k,
            item_vectors=vectors,
        )
    except Exception:
        logger.warning("live v%s could not be evaluated on the new holdout", live.version, exc_info=True)
        return None


def _register(
    config: RecommenderConfig,
    *,
    model: Recommender,
    interactions: Interactions,
    full: sparse.csr_matrix,
    features,
    params: dict,
    metrics: dict,
    trials: list[dict],
    fingerprint: str,
    now,
    timings: dict,
) -> ModelVersion:
    """Store the artifact, then the version row (numbered under a row lock of the configuration)."""
    blob = dump(model)  # once, and before the lock: it takes a while for a large model
    for _ in range(3):
        with transaction.atomic():
            RecommenderConfig.objects.select_for_update().filter(pk=config.pk).first()
            number = (ModelVersion.objects.filter(config=config).aggregate(n=Max("version"))["n"] or 0) + 1
            bundle = Bundle(
                model=blob,
                item_ids=interactions.item_ids,
                profile_ids=interactions.profile_ids,
                user_items=full,
                item_features=features,
                meta={
                    "config_key": config.key,
                    "version": number,
                    "algorithm": model.name,
                    "trained_through": interactions.trained_through.isoformat()
                    if interactions.trained_through
                    else None,
                },
            )
            path = artifact_save(config_key=config.key, version=number, bundle=bundle)
            try:
                with transaction.atomic():
                    return ModelVersion.objects.create(
                        config=config,
                        version=number,
                        status=ModelVersion.Status.CANDIDATE,
                        algorithm=model.name,
                        trained_at=now,
                        trained_through=interactions.trained_through,
                        params=model.params,
                        metrics=metrics,
                        tuning=trials,
                        matrix_stats={**interactions.stats(), "evaluated_users": int(metrics["model"].get("users", 0))},
                        artifact=path,
                        timings=timings,
                        fingerprint=fingerprint,
                    )
            except IntegrityError:
                continue
    raise RuntimeError(f"could not number a new version of {config.key!r}")


def training_enqueue(*, config: RecommenderConfig, force: bool = False) -> None:
    """Queue a training once the caller's transaction commits (inline in the embedded mode)."""
    from recommenders.tasks import train_task

    config_id = config.pk
    transaction.on_commit(lambda: train_task.delay(config_id, force))
