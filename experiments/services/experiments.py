"""Experiments and metrics: create, change, start, pause and stop, with the rules that keep them sound."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments import cache_keys
from experiments.bucketing import SLOTS, slot_range_allocate
from experiments.models import Experiment, Metric, Variant
from tracking.models import Source

TARGETING_KEYS = {"segments", "device_type", "country", "traffic_source"}


class ExperimentError(Exception):
    """A request the experiment's rules refuse; `field` names where, `status` is the HTTP answer."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid", status: int = 400):
        super().__init__(message)
        self.message, self.field, self.code, self.status = message, field, code, status


@dataclass
class VariantIn:
    """A variant as a client describes it; a field left None keeps the stored value (or its default)."""

    key: str
    name: str | None = None
    weight: float | None = None
    payload: dict | None = None
    is_control: bool | None = None
    factors: dict | None = None


def _variants_complete(experiment: Experiment, variants: list[VariantIn]) -> list[VariantIn]:
    """Fill what a change leaves out from the stored variant of the same key, else the defaults: changing
    a weight must not wipe a payload."""
    stored = {v.key: v for v in experiment.variants.all()} if experiment.pk else {}
    complete = []
    for spec in variants:
        old = stored.get(spec.key)

        def pick(name: str, default, spec=spec, old=old):
            value = getattr(spec, name)
            if value is not None:
                return value
            return getattr(old, name) if old is not None else default

        complete.append(
            VariantIn(
                key=spec.key,
                name=pick("name", ""),
                weight=pick("weight", 1.0),
                payload=pick("payload", {}),
                is_control=pick("is_control", False),
                factors=pick("factors", {}),
            )
        )
    return complete


def metric_create(*, source: Source, key: str, **fields) -> Metric:
    metric = Metric(source=source, key=key, **fields)
    metric_check(metric)
    try:
        with transaction.atomic():
            metric.save()
    except IntegrityError:
        raise ExperimentError(f"a metric {key!r} exists already", field="key", code="conflict", status=409) from None
    return metric


def metric_check(metric: Metric) -> None:
    def type_list(name: str, value) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
            raise ExperimentError('must be a list of event types, e.g. ["purchase"]', field=name)
        return value

    if not type_list("event_types", metric.event_types):
        raise ExperimentError("name at least one event type", field="event_types")
    type_list("denominator_event_types", metric.denominator_event_types or [])
    if metric.kind == Metric.Kind.RATIO and not metric.denominator_event_types:
        raise ExperimentError("a ratio metric needs denominator event types", field="denominator_event_types")
    if metric.kind != Metric.Kind.RATIO and metric.denominator_event_types:
        raise ExperimentError("only ratio metrics have a denominator", field="denominator_event_types")
    if metric.window_days < 1 or metric.window_days > 365:
        raise ExperimentError("must be between 1 and 365 days", field="window_days")


def targeting_check(targeting) -> dict:
    if not isinstance(targeting, dict):
        raise ExperimentError('must be an object, e.g. {"device_type": ["mobile"]}', field="targeting")
    for key, value in targeting.items():
        if key not in TARGETING_KEYS:
            raise ExperimentError(
                f"unknown condition; use {', '.join(sorted(TARGETING_KEYS))}", field=f"targeting.{key}"
            )
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ExperimentError("must be a list of strings", field=f"targeting.{key}")
    return targeting


def _variants_check(kind: str, variants: list[VariantIn]) -> None:
    if len(variants) < 2:
        raise ExperimentError("an experiment needs at least two variants", field="variants")
    keys = [v.key for v in variants]
    if len(set(keys)) != len(keys):
        raise ExperimentError("variant keys must be unique", field="variants")
    controls = [i for i, v in enumerate(variants) if v.is_control]
    if len(controls) != 1:
        raise ExperimentError("exactly one variant must be the control (is_control: true)", field="variants")
    for i, variant in enumerate(variants):
        if not (isinstance(variant.weight, int | float) and math.isfinite(variant.weight) and variant.weight >= 0):
            raise ExperimentError("weight must be a number >= 0", field=f"variants[{i}].weight")
        if variant.payload is not None and not isinstance(variant.payload, dict):
            raise ExperimentError("payload must be a JSON object", field=f"variants[{i}].payload")
    if not any(v.weight > 0 for v in variants):
        raise ExperimentError("at least one variant needs a weight above 0", field="variants")
    if kind == Experiment.Kind.FACTORIAL:
        factor_sets = [set((v.factors or {}).keys()) for v in variants]
        if not factor_sets[0] or any(s != factor_sets[0] for s in factor_sets):
            raise ExperimentError(
                'every variant of a factorial experiment names a level of the same factors, e.g. {"order": "new"}',
                field="variants",
            )
        cells = [tuple(str(v.factors[f]) for f in sorted(factor_sets[0])) for v in variants]
        if len(set(cells)) != len(cells):
            raise ExperimentError("two variants are the same factorial cell", field="variants")


def _metrics_resolve(source: Source, keys: list[str], field: str) -> list[Metric]:
    found = {m.key: m for m in Metric.objects.filter(source=source, key__in=keys)}
    for i, key in enumerate(keys):
        if key not in found:
            raise ExperimentError(f"no metric {key!r}; create it at /api/v1/experiment-metrics", field=f"{field}[{i}]")
    return [found[k] for k in keys]


def _planned_units(experiment: Experiment, variants: int) -> int | None:
    """Units per variant the power inputs call for (None without baseline and MDE)."""
    from experiments.stats import sample_size

    if experiment.baseline is None or experiment.mde is None:
        return None
    try:
        return sample_size(
            baseline=experiment.baseline,
            mde=experiment.mde,
            alpha=experiment.alpha,
            power=experiment.power,
            variants=max(variants, 2),
        )
    except ValueError as exc:
        raise ExperimentError(str(exc), field="mde") from None


def experiment_save(
    *,
    source: Source,
    experiment: Experiment | None,
    data: dict,
    variants: list[VariantIn] | None,
) -> Experiment:
    """Create (experiment None) or change an experiment. Once started, what units were assigned under
    cannot change (kind, layer, salt, the set of variants); weights, traffic, payloads, targeting and
    metrics can, and affect new units only."""
    creating = experiment is None
    experiment = experiment or Experiment(source=source)
    started = not creating and experiment.status != Experiment.Status.DRAFT
    metric_keys = {
        name: data.pop(name) for name in ("primary_metric", "secondary_metrics", "guardrail_metrics") if name in data
    }
    if started:
        for name in ("kind", "layer", "key"):
            if name in data and data[name] != getattr(experiment, name):
                raise ExperimentError(
                    f"cannot change {name} once the experiment has started", field=name, code="conflict", status=409
                )
    for name, value in data.items():
        setattr(experiment, name, value)
    if "targeting" in data:
        targeting_check(experiment.targeting)
    if not (0 < experiment.traffic <= 1):
        raise ExperimentError("must be in (0, 1]", field="traffic")
    if not (0 < experiment.alpha < 1):
        raise ExperimentError("must be in (0, 1)", field="alpha")
    if not (0 < experiment.power < 1):
        raise ExperimentError("must be in (0, 1)", field="power")

    with transaction.atomic():
        if variants is not None:
            variants = _variants_complete(experiment, variants)
            existing = {v.key: v for v in experiment.variants.all()} if experiment.pk else {}
            if started and set(existing) != {v.key for v in variants}:
                raise ExperimentError(
                    "the variants of a started experiment cannot be added or removed (weights and payloads can change)",
                    field="variants",
                    code="conflict",
                    status=409,
                )
            _variants_check(experiment.kind, variants)
            if started and any(existing[v.key].is_control != v.is_control for v in variants):
                raise ExperimentError("the control of a started experiment cannot change", field="variants", status=409)
        experiment.planned_units_per_variant = _planned_units(
            experiment, len(variants) if variants is not None else experiment.variants.count() if experiment.pk else 2
        )
        try:
            with transaction.atomic():
                experiment.save()
        except IntegrityError:
            raise ExperimentError(
                f"an experiment {experiment.key!r} exists already", field="key", code="conflict", status=409
            ) from None
        if variants is not None:
            _variants_write(experiment, variants)
        metrics_changed = False
        if "primary_metric" in metric_keys:
            key = metric_keys["primary_metric"]
            new = _metrics_resolve(source, [key], "primary_metric")[0] if key else None
            metrics_changed |= (new.pk if new else None) != experiment.primary_metric_id
            experiment.primary_metric = new
            experiment.save(update_fields=["primary_metric"])
        for name in ("secondary_metrics", "guardrail_metrics"):
            if name in metric_keys:
                chosen = _metrics_resolve(source, list(metric_keys[name]), name)
                before = set(getattr(experiment, name).values_list("pk", flat=True))
                metrics_changed |= before != {m.pk for m in chosen}
                getattr(experiment, name).set(chosen)
        if experiment.status == Experiment.Status.RUNNING and experiment.traffic is not None:
            _slots_allocate(experiment)
        if started and metrics_changed:
            # A metric added after start has no unit values yet: recompute it from the events.
            from experiments.tasks import experiment_recompute_task

            experiment_id = experiment.pk
            transaction.on_commit(lambda: experiment_recompute_task.delay(experiment_id))
        _version_bump(experiment)
    return experiment


def _variants_write(experiment: Experiment, variants: list[VariantIn]) -> None:
    existing = {v.key: v for v in experiment.variants.all()}
    for position, spec in enumerate(variants):
        variant = existing.pop(spec.key, None) or Variant(experiment=experiment, key=spec.key)
        variant.name = spec.name
        variant.weight = float(spec.weight)
        variant.payload = spec.payload or {}
        variant.is_control = spec.is_control
        variant.factors = spec.factors or {}
        variant.position = position
        if variant.is_control:  # one control: clear the old one first so the constraint never trips
            Variant.objects.filter(experiment=experiment, is_control=True).exclude(key=spec.key).update(
                is_control=False
            )
        variant.save()
    Variant.objects.filter(pk__in=[v.pk for v in existing.values()]).delete()


def _slots_allocate(experiment: Experiment) -> None:
    """Give the experiment a range of layer slots as wide as its traffic share, disjoint from the other
    live experiments of its layer (a layer of its own: always from 0)."""
    size = max(1, round(experiment.traffic * SLOTS))
    if not experiment.layer:
        start = 0
    else:
        taken = list(
            Experiment.objects.filter(
                source=experiment.source,
                layer=experiment.layer,
                status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED],
            )
            .exclude(pk=experiment.pk)
            .select_for_update()
            .values_list("slot_start", "slot_end")
        )
        current = experiment.slot_start if experiment.slot_end > experiment.slot_start else None
        start = slot_range_allocate(size=size, taken=taken, prefer=current)
        if start is None:
            free = SLOTS - sum(hi - lo for lo, hi in taken)
            raise ExperimentError(
                f"layer {experiment.layer!r} has {free / SLOTS:.0%} of its traffic free in one piece at most; "
                f"this experiment asks for {experiment.traffic:.0%}",
                field="traffic",
                code="layer_full",
                status=409,
            )
    Experiment.objects.filter(pk=experiment.pk).update(slot_start=start, slot_end=start + size)
    experiment.slot_start, experiment.slot_end = start, start + size


def _version_bump(experiment: Experiment) -> None:
    """Bump now (this process and tests see the change at once) and again after commit, so a process that
    reloaded in between, still seeing the old rows, reloads once more."""
    source_id = experiment.source_id
    cache_keys.running_version_bump(source_id)
    transaction.on_commit(lambda: cache_keys.running_version_bump(source_id))


def experiment_start(*, experiment: Experiment) -> Experiment:
    """Start (or resume) an experiment: checks it can be analysed, takes its layer slots, opens it to units."""
    from experiments.services.rollup import stats_rows_ensure

    if experiment.status == Experiment.Status.RUNNING:
        return experiment
    if experiment.status == Experiment.Status.STOPPED:
        raise ExperimentError("a stopped experiment cannot start again; create a new one", code="conflict", status=409)
    variants = list(experiment.variants.all())
    _variants_check(
        experiment.kind,
        [VariantIn(v.key, v.name, v.weight, v.payload, v.is_control, v.factors) for v in variants],
    )
    if experiment.primary_metric_id is None:
        raise ExperimentError("choose a primary metric before starting", field="primary_metric", status=409)
    if experiment.kind == Experiment.Kind.BANDIT and experiment.primary_metric.kind != Metric.Kind.CONVERSION:
        raise ExperimentError("a bandit allocates on a conversion primary metric", field="primary_metric", status=409)
    with transaction.atomic():
        experiment.status = Experiment.Status.RUNNING
        experiment.started_at = experiment.started_at or timezone.now()
        experiment.save(update_fields=["status", "started_at"])
        _slots_allocate(experiment)
        stats_rows_ensure(experiment=experiment)
        _version_bump(experiment)
    return experiment


def experiment_pause(*, experiment: Experiment) -> Experiment:
    """Stop handing out the experiment (units see the default experience); statistics keep rolling up."""
    if experiment.status != Experiment.Status.RUNNING:
        raise ExperimentError(f"only a running experiment can pause (it is {experiment.status})", status=409)
    with transaction.atomic():
        experiment.status = Experiment.Status.PAUSED
        experiment.save(update_fields=["status"])
        _version_bump(experiment)
    return experiment


def experiment_stop(*, experiment: Experiment) -> Experiment:
    """Stop for good: no more units or exposures; metrics of exposed units keep counting until their window ends."""
    if experiment.status == Experiment.Status.STOPPED:
        return experiment
    if experiment.status == Experiment.Status.DRAFT:
        raise ExperimentError("a draft has not started; delete it instead", code="conflict", status=409)
    with transaction.atomic():
        experiment.status = Experiment.Status.STOPPED
        experiment.stopped_at = timezone.now()
        experiment.save(update_fields=["status", "stopped_at"])
        _version_bump(experiment)
    return experiment


def experiment_delete(*, experiment: Experiment) -> None:
    if experiment.status != Experiment.Status.DRAFT:
        raise ExperimentError("only drafts can be deleted; stop the experiment instead", code="conflict", status=409)
    experiment.delete()


def bandit_reweigh(*, experiment: Experiment) -> dict[str, float] | None:
    """Thompson sampling: set the variants' weights to each one's chance of being best on the primary
    (conversion) metric, from the rolled-up statistics. New units follow the new weights."""
    from experiments.models import VariantMetricStats
    from experiments.stats import thompson_weights

    if experiment.kind != Experiment.Kind.BANDIT or experiment.status != Experiment.Status.RUNNING:
        return None
    rows = VariantMetricStats.objects.filter(
        experiment=experiment, metric_id=experiment.primary_metric_id
    ).select_related("variant")
    successes = {row.variant.key: int(row.sum) for row in rows}
    trials = {row.variant.key: int(row.n) for row in rows}
    if not trials:
        return None
    # A floor keeps every arm learning a little (and keeps SRM checks meaningful).
    weights = thompson_weights(successes=successes, trials=trials, seed=experiment.pk)
    floor = 0.05 / len(weights)
    weights = {k: max(w, floor) for k, w in weights.items()}
    with transaction.atomic():
        for variant in experiment.variants.all():
            if variant.key in weights:
                Variant.objects.filter(pk=variant.pk).update(weight=weights[variant.key])
        _version_bump(experiment)
    return weights


def experiment_touched(*, experiment: Experiment) -> None:
    """After an edit outside `experiment_save` (the admin's forms): keep the layer slots in step with
    the traffic share and let every process reload the running list."""
    with transaction.atomic():
        if experiment.status in (Experiment.Status.RUNNING, Experiment.Status.PAUSED):
            _slots_allocate(experiment)
        experiment.planned_units_per_variant = _planned_units(experiment, experiment.variants.count())
        Experiment.objects.filter(pk=experiment.pk).update(
            planned_units_per_variant=experiment.planned_units_per_variant
        )
        _version_bump(experiment)


def power_plan(*, baseline: float, mde: float, alpha: float, power: float, variants: int, units_per_day: float) -> dict:
    """The power calculator: units per variant for these inputs, and days at the given traffic."""
    from experiments.stats import sample_size

    per_variant = sample_size(baseline=baseline, mde=mde, alpha=alpha, power=power, variants=max(variants, 2))
    total = per_variant * max(variants, 2)
    days = math.ceil(total / units_per_day) if units_per_day > 0 else None
    return {"units_per_variant": per_variant, "units_total": total, "days": days, "units_per_day": units_per_day}
