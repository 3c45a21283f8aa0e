"""Reads of the experiments app: the compiled running-experiment list of a source, assignments, results."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import QuerySet

from experiments import cache_keys
from experiments.models import Assignment, Experiment, ResultSnapshot, Variant


@dataclass(frozen=True, slots=True)
class VariantSpec:
    id: int
    key: str
    weight: float
    payload: dict
    is_control: bool


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """What the hot path needs of a running experiment, compiled once per version."""

    id: int
    key: str
    kind: str
    salt: str
    layer: str
    slot_start: int
    slot_end: int
    variants: tuple[VariantSpec, ...]
    segments: frozenset[str] = frozenset()
    device_types: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    traffic_sources: frozenset[str] = frozenset()
    consent_purpose: str = ""
    weights: tuple[float, ...] = field(default=())

    def variant(self, variant_id: int) -> VariantSpec | None:
        for variant in self.variants:
            if variant.id == variant_id:
                return variant
        return None


def _lower_set(values) -> frozenset[str]:
    return frozenset(str(v).lower() for v in values or [])


def experiment_spec(experiment: Experiment, variants: list[Variant]) -> ExperimentSpec:
    targeting = experiment.targeting or {}
    specs = tuple(VariantSpec(v.id, v.key, v.weight, v.payload or {}, v.is_control) for v in variants)
    return ExperimentSpec(
        id=experiment.id,
        key=experiment.key,
        kind=experiment.kind,
        salt=experiment.salt,
        layer=experiment.layer,
        slot_start=experiment.slot_start,
        slot_end=experiment.slot_end,
        variants=specs,
        segments=frozenset(str(s) for s in targeting.get("segments") or []),
        device_types=_lower_set(targeting.get("device_type")),
        countries=frozenset(str(c).upper() for c in targeting.get("country") or []),
        traffic_sources=_lower_set(targeting.get("traffic_source")),
        consent_purpose=experiment.consent_purpose or settings.EXPERIMENTS_CONSENT_PURPOSE,
        weights=tuple(v.weight for v in specs),
    )


# source id -> (shared version, checked at, reload by, compiled specs)
_running: dict[int, tuple[int, float, float, tuple[ExperimentSpec, ...]]] = {}


def running_specs(*, source_id: int) -> tuple[ExperimentSpec, ...]:
    """The source's running experiments, compiled; reloaded only when the shared version moves. The version
    is read from the cache at most every VERSION_CHECK seconds per process, so a change anywhere reaches
    every process within that time, and a request costs no query and (mostly) no cache read here."""
    now = time.monotonic()
    hit = _running.get(source_id)
    if hit is not None and now - hit[1] < cache_keys.VERSION_CHECK and now < hit[2]:
        return hit[3]
    version = cache_keys.running_version_get(source_id)
    if hit is not None and hit[0] == version and now < hit[2]:
        _running[source_id] = (version, now, hit[2], hit[3])
        return hit[3]
    experiments = list(Experiment.objects.filter(source_id=source_id, status=Experiment.Status.RUNNING).order_by("id"))
    variants: dict[int, list[Variant]] = {}
    for variant in Variant.objects.filter(experiment__in=experiments).order_by("position", "id"):
        variants.setdefault(variant.experiment_id, []).append(variant)
    specs = tuple(experiment_spec(e, variants.get(e.id, [])) for e in experiments)
    if len(_running) > 1000:
        _running.clear()
    _running[source_id] = (version, now, now + cache_keys.LOCAL_TTL, specs)
    return specs


def running_forget(source_id: int | None = None) -> None:
    """Drop this process's compiled list (all sources, or one): the next request reloads it."""
    if source_id is None:
        _running.clear()
    else:
        _running.pop(source_id, None)


def experiment_list(*, source_id: int) -> QuerySet[Experiment]:
    return (
        Experiment.objects.filter(source_id=source_id)
        .select_related("primary_metric")
        .prefetch_related("variants", "secondary_metrics", "guardrail_metrics")
    )


def experiment_get(*, source_id: int, key: str) -> Experiment | None:
    return experiment_list(source_id=source_id).filter(key=key).first()


def profile_assignments(*, profile_id: int) -> dict[int, int]:
    """{experiment id: variant id} of a unit's stored (sticky) assignments."""
    return dict(Assignment.objects.filter(profile_id=profile_id).values_list("experiment_id", "variant_id"))


def running_payloads(
    *, profile_id: int, payload_key: str, source_id: int | None = None
) -> list[tuple[str, str, object]]:
    """(experiment key, variant key, payload[payload_key]) of the running experiments this unit is assigned
    to whose variant payload carries `payload_key` (e.g. "recommender_config"). Reads stored assignments
    only: call `experiment_variant_for` first to assign."""
    rows = (
        Assignment.objects.filter(profile_id=profile_id, experiment__status=Experiment.Status.RUNNING)
        .select_related("experiment", "variant")
        .order_by("experiment_id")
    )
    if source_id is not None:
        rows = rows.filter(experiment__source_id=source_id)
    return [
        (a.experiment.key, a.variant.key, a.variant.payload[payload_key])
        for a in rows
        if isinstance(a.variant.payload, dict) and payload_key in a.variant.payload
    ]


def snapshot_history(*, experiment_id: int, limit: int = 500) -> list[ResultSnapshot]:
    rows = ResultSnapshot.objects.filter(experiment_id=experiment_id).order_by("-taken_at")[:limit]
    return list(reversed(rows))


def _stats_of(kind: str, row) -> object:
    from experiments.stats import RatioStats, SampleStats

    if kind == "ratio":
        return RatioStats(
            n=row.n,
            num_sum=float(row.sum),
            num_sum_sq=float(row.sum_sq),
            den_sum=float(row.den_sum),
            den_sum_sq=float(row.den_sum_sq),
            cross_sum=float(row.num_den_sum),
        )
    return SampleStats(
        n=row.n,
        sum=float(row.sum),
        sum_sq=float(row.sum_sq),
        cov_sum=float(row.cov_sum),
        cov_sum_sq=float(row.cov_sum_sq),
        cross_sum=float(row.cov_cross_sum),
    )


STATS_KIND = {"conversion": "conversion", "count": "mean", "revenue": "mean", "ratio": "ratio"}


def experiment_results(*, experiment: Experiment) -> dict:
    """The analysis of an experiment from its stored sufficient statistics (no event is read): every
    variant against control on every metric, Holm-adjusted, SRM, guardrails, verdict, factorial main
    effects, and progress against the planned sample size."""
    from experiments.models import VariantMetricStats
    from experiments.services.rollup import experiment_metrics
    from experiments.stats import analyze_experiment, factorial_effects, tau_for_sample_size

    variants = list(experiment.variants.all())
    control = next((v for v in variants if v.is_control), None)
    metrics = experiment_metrics(experiment)
    state = getattr(experiment, "rollup_state", None) if experiment.pk else None
    base = {
        "experiment": experiment.key,
        "status": experiment.status,
        "rolled_up_at": state.rolled_up_at.isoformat() if state and state.rolled_up_at else None,
        "planned_units_per_variant": experiment.planned_units_per_variant,
        "units": {},
        "analysis": None,
        "factorial": [],
        "progress": None,
    }
    rows = list(VariantMetricStats.objects.filter(experiment=experiment).select_related("variant", "metric"))
    if control is None or not metrics or not rows:
        return base
    by_metric: dict[int, dict[str, object]] = {}
    raw: dict[int, dict[str, object]] = {}
    for row in rows:
        kind = STATS_KIND[row.metric.kind]
        by_metric.setdefault(row.metric_id, {})[row.variant.key] = _stats_of(kind, row)
        raw.setdefault(row.metric_id, {})[row.variant.key] = row
    guardrail_ids = set(experiment.guardrail_metrics.values_list("pk", flat=True))
    ordered = sorted(metrics, key=lambda m: (m.pk in guardrail_ids, m.pk != experiment.primary_metric_id))
    spec = {
        m.key: (STATS_KIND[m.kind], by_metric[m.pk])
        for m in ordered
        if m.pk in by_metric and control.key in by_metric[m.pk]
    }
    if not spec:
        return base
    guardrails = {
        m.key: ("decrease_is_bad" if m.higher_is_better else "increase_is_bad")
        for m in metrics
        if m.pk in guardrail_ids and m.key in spec and m.pk != experiment.primary_metric_id
    }
    primary_rows = raw.get(experiment.primary_metric_id, {})
    units = {v.key: int(primary_rows[v.key].n) if v.key in primary_rows else 0 for v in variants}
    bandit = experiment.kind == Experiment.Kind.BANDIT
    lower_is_better = [m.key for m in metrics if not m.higher_is_better and m.key in spec and m.key not in guardrails]
    # The sequential test's mixing scale is fixed before looking at data: from the planned sample
    # size when there is one (the stats module's default is tuned for 10,000 units per arm).
    planned = experiment.planned_units_per_variant
    tau = tau_for_sample_size(n=planned, alpha=experiment.alpha) if planned else None
    analysis = analyze_experiment(
        metrics=spec,
        control=control.key,
        alpha=experiment.alpha,
        cuped=experiment.cuped_days > 0,
        guardrails=guardrails,
        # A bandit moves its weights on purpose: its split is compared with itself, never flagged.
        weights={k: float(n) or 1.0 for k, n in units.items()} if bandit else {v.key: v.weight for v in variants},
        units=units,
        tau=tau,
        lower_is_better=lower_is_better,
    ).to_dict()
    _sequential_running_min(experiment, analysis)
    base["analysis"] = analysis
    base["units"] = units
    if experiment.planned_units_per_variant:
        base["progress"] = min(units.values()) / experiment.planned_units_per_variant if units else 0.0
    if experiment.kind == Experiment.Kind.FACTORIAL and experiment.primary_metric_id in by_metric:
        kind = STATS_KIND[experiment.primary_metric.kind]
        factors = sorted((control.factors or {}).keys())
        ordered_variants = [control, *[v for v in variants if v is not control]]
        cells = {
            tuple(str(v.factors.get(f)) for f in factors): by_metric[experiment.primary_metric_id][v.key]
            for v in ordered_variants
            if v.key in by_metric[experiment.primary_metric_id]
        }
        if kind != "ratio" and factors:
            try:
                effects = factorial_effects(cells=cells, factors=factors, kind=kind, alpha=experiment.alpha)
                base["factorial"] = [e.to_dict() for e in effects]
            except ValueError as exc:
                base["factorial_error"] = str(exc)
    return base


def _sequential_running_min(experiment: Experiment, analysis: dict) -> None:
    """Always-valid p-values stay valid only as the running minimum of what was shown before."""
    last = ResultSnapshot.objects.filter(experiment=experiment).order_by("-taken_at").first()
    if last is None or not isinstance(last.results, dict):
        return
    before = {
        (c.get("metric"), c.get("variant")): c.get("p_value_sequential")
        for c in (last.results.get("analysis") or {}).get("comparisons", [])
    }
    for comparison in analysis.get("comparisons", []):
        previous = before.get((comparison["metric"], comparison["variant"]))
        if previous is not None and comparison.get("p_value_sequential") is not None:
            comparison["p_value_sequential"] = min(previous, comparison["p_value_sequential"])


def units_per_day(*, experiment: Experiment, days: int = 7) -> float:
    """Current traffic: units first exposed per day over the last week (the experiment's own, once it has
    some; before that, the visitors the source saw, times the traffic share)."""
    from datetime import timedelta

    from django.utils import timezone

    from experiments.models import Exposure
    from tracking.models import Profile

    since = timezone.now() - timedelta(days=days)
    exposed = Exposure.objects.filter(experiment=experiment, exposed_at__gte=since).count()
    if exposed:
        return exposed / days
    seen = Profile.objects.filter(last_source_id=experiment.source_id, last_seen_at__gte=since).count()
    return seen / days * experiment.traffic
