"""Incremental metric roll-up: per-unit values and per-variant sufficient statistics, moved by deltas.

Each run reads the events stored since its high-water mark (events table id) and the exposures
logged since its own, finds the units they touch, recomputes just those units' values from their
own events (a handful of rows each, through the profile/time index), and moves the variant sums by
the difference to what was stored for them: Σy by y' - y, Σy² by y'² - y², the CUPED sums alike.
A unit is recomputed whole rather than patched, so a run may touch a unit twice, see an event
late or a profile merged, and still land on exactly what a full recompute gives (the tests hold it
to that). Nothing ever rescans all events to show results; `experiment_recompute` does, for repair
and as the benchmark's baseline.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone

from experiments.models import (
    Experiment,
    Exposure,
    Metric,
    RollupState,
    UnitMetricValue,
    Variant,
    VariantMetricStats,
)
from tracking.models import Event

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
STAT_FIELDS = (
    "n",
    "sum",
    "sum_sq",
    "den_sum",
    "den_sum_sq",
    "num_den_sum",
    "cov_sum",
    "cov_sum_sq",
    "cov_cross_sum",
)


@dataclass
class RollupResult:
    experiment_id: int
    event_id: int
    exposure_id: int
    units_touched: int


def experiment_metrics(experiment: Experiment) -> list[Metric]:
    """Primary, secondary and guardrail metrics, each once."""
    seen: dict[int, Metric] = {}
    if experiment.primary_metric_id:
        seen[experiment.primary_metric_id] = experiment.primary_metric
    for metric in [*experiment.secondary_metrics.all(), *experiment.guardrail_metrics.all()]:
        seen.setdefault(metric.pk, metric)
    return list(seen.values())


def stats_rows_ensure(*, experiment: Experiment) -> None:
    metrics = experiment_metrics(experiment)
    VariantMetricStats.objects.bulk_create(
        [
            VariantMetricStats(experiment=experiment, variant=variant, metric=metric)
            for variant in Variant.objects.filter(experiment=experiment)
            for metric in metrics
        ],
        ignore_conflicts=True,
    )


# --- the per-unit value, as SQL --------------------------------------------------------------------


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _in(column: str, values: list[str], params: list) -> str:
    if not values:
        return "FALSE" if _postgres() else "0"
    params.extend(values)
    return f"{column} IN ({', '.join(['%s'] * len(values))})"


def _since(ts: str, base: str, days: int) -> str:
    """`ts >= base + days` (days may be negative or 0)."""
    if days == 0:
        return f"{ts} >= {base}"
    if _postgres():
        return f"{ts} >= {base} + interval '{int(days)} days'"
    return f"julianday({ts}) >= julianday({base}) + {int(days)}"


def _before(ts: str, base: str, days: int) -> str:
    if days == 0:
        return f"{ts} < {base}"
    if _postgres():
        return f"{ts} < {base} + interval '{int(days)} days'"
    return f"julianday({ts}) < julianday({base}) + {int(days)}"


def _amount(metric: Metric, params: list) -> str:
    """What one numerator event adds to the unit's value."""
    if metric.kind == Metric.Kind.REVENUE and not metric.property:
        return "COALESCE(e.value, 0)"
    if metric.property and metric.kind in (Metric.Kind.REVENUE, Metric.Kind.COUNT, Metric.Kind.RATIO):
        if _postgres():
            params.extend([metric.property, metric.property])
            return (
                "(CASE WHEN jsonb_typeof(e.properties -> %s) = 'number' THEN (e.properties ->> %s)::numeric ELSE 0 END)"
            )
        path = '$."' + metric.property.replace('"', "") + '"'
        params.extend([path, path])
        return (
            "(CASE WHEN json_type(e.properties, %s) IN ('integer', 'real') "
            "THEN json_extract(e.properties, %s) ELSE 0 END)"
        )
    return "1"


def _plan(experiment: Experiment, metrics: list[Metric]) -> tuple[int, int]:
    """Days before exposure (CUPED covariate) and after it (longest window) that any metric reads."""
    cov_days = experiment.cuped_days if any(m.kind != Metric.Kind.RATIO for m in metrics) else 0
    return cov_days, max((m.window_days for m in metrics), default=0)


def _unit_values_sql(
    *,
    experiment: Experiment,
    metrics: list[Metric],
    event_hi: int,
    exposure_lo: int,
    exposure_hi: int,
    units_sql: str,
    units_params: list,
) -> tuple[str, list]:
    """SELECT exposure id, variant id, is_new, then value, den, covariate of every metric, for the exposures
    `units_sql` selects, from their events with id <= event_hi, in one pass over those events."""
    cov_days, max_window = _plan(experiment, metrics)
    x_table, e_table = Exposure._meta.db_table, Event._meta.db_table
    params: list = [exposure_lo, exposure_hi]
    columns: list[str] = []
    all_types: set[str] = set()
    for i, metric in enumerate(metrics):
        num_types = [str(t) for t in metric.event_types or []]
        ratio = metric.kind == Metric.Kind.RATIO
        den_types = [str(t) for t in metric.denominator_event_types or []] if ratio else []
        all_types.update(num_types, den_types)
        post = f"e.timestamp >= x.exposed_at AND {_before('e.timestamp', 'x.exposed_at', metric.window_days)}"
        amount = _amount(metric, params)
        value = f"SUM(CASE WHEN {post} AND {_in('e.type', num_types, params)} THEN {amount} ELSE 0 END)"
        if metric.kind == Metric.Kind.CONVERSION:
            value = f"(CASE WHEN {value} > 0 THEN 1 ELSE 0 END)"
        den = f"SUM(CASE WHEN {post} AND {_in('e.type', den_types, params)} THEN 1 ELSE 0 END)" if den_types else "0"
        if cov_days and not ratio:
            cov_amount = _amount(metric, params)
            cov_in = _in("e.type", num_types, params)
            cov = f"SUM(CASE WHEN e.timestamp < x.exposed_at AND {cov_in} THEN {cov_amount} ELSE 0 END)"
            if metric.kind == Metric.Kind.CONVERSION:
                cov = f"(CASE WHEN {cov} > 0 THEN 1 ELSE 0 END)"
        else:
            cov = "0"
        columns.append(f"COALESCE({value}, 0) AS v{i}, COALESCE({den}, 0) AS d{i}, COALESCE({cov}, 0) AS c{i}")
    join_params: list = [experiment.source_id, event_hi]
    join_types = _in("e.type", sorted(all_types), join_params)
    sql = (
        "SELECT x.id AS exposure_id, x.variant_id AS variant_id, "
        f"CASE WHEN x.id > %s AND x.id <= %s THEN 1 ELSE 0 END AS is_new, {', '.join(columns)} "
        f"FROM {x_table} x LEFT JOIN {e_table} e ON e.profile_id = x.profile_id AND e.source_id = %s "
        f"AND e.id <= %s AND {join_types} AND {_since('e.timestamp', 'x.exposed_at', -cov_days)} "
        f"AND {_before('e.timestamp', 'x.exposed_at', max_window)} "
        f"WHERE x.id IN ({units_sql}) GROUP BY x.id, x.variant_id"
    )
    # Placeholders appear in the order: select list (params), join (join_params), where (units_params).
    return sql, params + join_params + units_params


def _touched_sql(
    *, experiment: Experiment, metrics: list[Metric], event_lo: int, event_hi: int, exposure_lo: int, exposure_hi: int
) -> tuple[str, list]:
    """Exposure ids whose values may have changed: those with new events near their exposure, new ones,
    and those a profile merge marked."""
    cov_days, max_window = _plan(experiment, metrics)
    x_table, e_table = Exposure._meta.db_table, Event._meta.db_table
    types = sorted({str(t) for m in metrics for t in [*(m.event_types or []), *(m.denominator_event_types or [])]})
    params: list = [experiment.pk, event_lo, event_hi, experiment.source_id]
    type_in = _in("e.type", types, params)
    params.extend([exposure_hi, experiment.pk, exposure_lo, exposure_hi, experiment.pk, exposure_hi])
    flagged = "needs_rollup" if _postgres() else "needs_rollup = 1"
    sql = (
        f"SELECT x.id FROM {e_table} e JOIN {x_table} x ON x.profile_id = e.profile_id AND x.experiment_id = %s "
        f"WHERE e.id > %s AND e.id <= %s AND e.source_id = %s AND {type_in} "
        f"AND {_since('e.timestamp', 'x.exposed_at', -cov_days)} "
        f"AND {_before('e.timestamp', 'x.exposed_at', max_window)} AND x.id <= %s "
        f"UNION SELECT id FROM {x_table} WHERE experiment_id = %s AND id > %s AND id <= %s "
        f"UNION SELECT id FROM {x_table} WHERE experiment_id = %s AND {flagged} AND id <= %s"
    )
    return sql, params


UNIT_QUANTUM = Decimal("0.001")


def _dec(value) -> Decimal:
    """A unit value as stored (3 decimals, halves away from zero as Postgres rounds numeric)."""
    if value is None:
        return ZERO
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    return value.quantize(UNIT_QUANTUM, rounding=ROUND_HALF_UP)


def _apply(*, experiment: Experiment, metrics: list[Metric], rows: list[tuple]) -> int:
    """Fold fresh unit values into the stored ones and the variant sums by their differences. A unit
    with nothing to count keeps no row: its values are 0."""
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    old: dict[tuple[int, int], tuple[Decimal, Decimal, Decimal]] = {}
    for start in range(0, len(ids), 5000):
        for exposure_id, metric_id, value, den, cov in UnitMetricValue.objects.filter(
            exposure_id__in=ids[start : start + 5000]
        ).values_list("exposure_id", "metric_id", "value", "den", "covariate"):
            old[(exposure_id, metric_id)] = (value, den, cov)
    delta: dict[tuple[int, int], dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(STAT_FIELDS, ZERO))
    upsert: list[UnitMetricValue] = []
    emptied: dict[int, list[int]] = defaultdict(list)
    touched = 0
    for row in rows:
        exposure_id, variant_id, is_new = row[0], row[1], bool(row[2])
        touched += 1
        for i, metric in enumerate(metrics):
            y, d, x = _dec(row[3 + 3 * i]), _dec(row[4 + 3 * i]), _dec(row[5 + 3 * i])
            before = old.get((exposure_id, metric.pk))
            y0, d0, x0 = before or (ZERO, ZERO, ZERO)
            acc = delta[(variant_id, metric.pk)]
            if is_new:
                acc["n"] += 1
            if (y, d, x) == (y0, d0, x0):
                continue
            acc["sum"] += y - y0
            acc["sum_sq"] += y * y - y0 * y0
            acc["den_sum"] += d - d0
            acc["den_sum_sq"] += d * d - d0 * d0
            acc["num_den_sum"] += y * d - y0 * d0
            acc["cov_sum"] += x - x0
            acc["cov_sum_sq"] += x * x - x0 * x0
            acc["cov_cross_sum"] += y * x - y0 * x0
            if y or d or x:
                upsert.append(UnitMetricValue(exposure_id=exposure_id, metric=metric, value=y, den=d, covariate=x))
            elif before is not None:
                emptied[metric.pk].append(exposure_id)
    UnitMetricValue.objects.bulk_create(
        upsert,
        update_conflicts=True,
        unique_fields=["exposure", "metric"],
        update_fields=["value", "den", "covariate"],
        batch_size=2000,
    )
    for metric_id, exposure_ids in emptied.items():
        UnitMetricValue.objects.filter(metric_id=metric_id, exposure_id__in=exposure_ids).delete()
    for (variant_id, metric_id), acc in delta.items():
        changes = {name: F(name) + acc[name] for name in STAT_FIELDS if acc[name]}
        if changes:
            VariantMetricStats.objects.filter(experiment=experiment, variant_id=variant_id, metric_id=metric_id).update(
                **changes
            )
    return touched


def _marks(*, experiment: Experiment, state: RollupState, now) -> tuple[int, int]:
    """The event and exposure ids this run reads up to: stored at least the lag ago, so a transaction
    still committing a lower id is not skipped for good."""
    cutoff = now - timedelta(seconds=settings.EXPERIMENTS_ROLLUP_LAG_SECONDS)
    event_hi = (
        Event.objects.filter(id__gt=state.event_id, received_at__lte=cutoff).aggregate(m=Max("id"))["m"]
        or state.event_id
    )
    exposure_hi = (
        Exposure.objects.filter(experiment=experiment, id__gt=state.exposure_id, exposed_at__lte=cutoff).aggregate(
            m=Max("id")
        )["m"]
        or state.exposure_id
    )
    return event_hi, exposure_hi


def _locked_state(experiment_id: int) -> tuple[Experiment, RollupState]:
    experiment = Experiment.objects.select_related("primary_metric").get(pk=experiment_id)
    RollupState.objects.get_or_create(experiment=experiment)
    return experiment, RollupState.objects.select_for_update().get(experiment=experiment)


def experiment_rollup(*, experiment_id: int, now=None) -> RollupResult:
    """Bring one experiment's statistics up to date with the events stored since the last run."""
    now = now or timezone.now()
    with transaction.atomic():
        experiment, state = _locked_state(experiment_id)
        stats_rows_ensure(experiment=experiment)
        metrics = experiment_metrics(experiment)
        event_hi, exposure_hi = _marks(experiment=experiment, state=state, now=now)
        dirty = list(Exposure.objects.filter(experiment=experiment, needs_rollup=True).values_list("id", flat=True))
        touched = 0
        if metrics:
            units_sql, units_params = _touched_sql(
                experiment=experiment,
                metrics=metrics,
                event_lo=state.event_id,
                event_hi=event_hi,
                exposure_lo=state.exposure_id,
                exposure_hi=exposure_hi,
            )
            sql, params = _unit_values_sql(
                experiment=experiment,
                metrics=metrics,
                event_hi=event_hi,
                exposure_lo=state.exposure_id,
                exposure_hi=exposure_hi,
                units_sql=units_sql,
                units_params=units_params,
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            touched = _apply(experiment=experiment, metrics=metrics, rows=rows)
        if dirty:
            Exposure.objects.filter(id__in=dirty, id__lte=exposure_hi).update(needs_rollup=False)
        state.event_id, state.exposure_id, state.rolled_up_at = event_hi, exposure_hi, now
        state.save()
    return RollupResult(experiment.pk, event_hi, exposure_hi, touched)


def experiment_recompute(*, experiment_id: int, now=None) -> RollupResult:
    """Recompute every unit's values and the variant sums from all events, set-based (repair; baseline)."""
    now = now or timezone.now()
    u_table, s_table, x_table = (
        UnitMetricValue._meta.db_table,
        VariantMetricStats._meta.db_table,
        Exposure._meta.db_table,
    )
    with transaction.atomic():
        experiment, state = _locked_state(experiment_id)
        if _postgres():
            with connection.cursor() as cursor:  # room to hash and sort every unit in memory, for this run only
                cursor.execute("SET LOCAL work_mem = '256MB'")
        event_hi, exposure_hi = _marks(experiment=experiment, state=RollupState(event_id=0, exposure_id=0), now=now)
        metrics = experiment_metrics(experiment)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {u_table} WHERE exposure_id IN (SELECT id FROM {x_table} WHERE experiment_id = %s)",
                [experiment.pk],
            )
        VariantMetricStats.objects.filter(experiment=experiment).delete()
        stats_rows_ensure(experiment=experiment)
        if metrics:
            sql, params = _unit_values_sql(
                experiment=experiment,
                metrics=metrics,
                event_hi=event_hi,
                exposure_lo=0,
                exposure_hi=exposure_hi,
                units_sql=f"SELECT id FROM {x_table} WHERE experiment_id = %s AND id <= %s",
                units_params=[experiment.pk, exposure_hi],
            )
            columns = f"INSERT INTO {u_table} (exposure_id, metric_id, value, den, covariate) "
            if _postgres():
                # One pass: each unit's row of all metrics is unpivoted into a row per metric.
                rows = ", ".join(
                    f"(%s::bigint, ROUND(f.v{i}::numeric, 3), ROUND(f.d{i}::numeric, 3), ROUND(f.c{i}::numeric, 3))"
                    for i in range(len(metrics))
                )
                insert = (
                    f"{columns}SELECT f.exposure_id, m.metric_id, m.v, m.d, m.c FROM ({sql}) AS f "
                    f"CROSS JOIN LATERAL (VALUES {rows}) AS m(metric_id, v, d, c) "
                    "WHERE m.v <> 0 OR m.d <> 0 OR m.c <> 0"
                )
                insert_params = params + [m.pk for m in metrics]
            else:
                parts = []
                for i in range(len(metrics)):
                    rounded = [f"ROUND(CAST({c}{i} AS NUMERIC), 3)" for c in ("v", "d", "c")]
                    parts.append(
                        f"SELECT exposure_id, %s, {', '.join(rounded)} FROM fresh "
                        f"WHERE {' OR '.join(f'{r} <> 0' for r in rounded)}"
                    )
                insert = f"WITH fresh AS ({sql}) {columns}" + " UNION ALL ".join(parts)
                insert_params = params + [m.pk for m in metrics]
            with connection.cursor() as cursor:
                cursor.execute(insert, insert_params)
                cursor.execute(
                    f"UPDATE {s_table} SET n = c.n FROM (SELECT variant_id, COUNT(*) AS n FROM {x_table} "
                    "WHERE experiment_id = %s AND id <= %s GROUP BY variant_id) AS c "
                    f"WHERE {s_table}.experiment_id = %s AND {s_table}.variant_id = c.variant_id",
                    [experiment.pk, exposure_hi, experiment.pk],
                )
                cursor.execute(
                    f"UPDATE {s_table} SET sum = a.s, sum_sq = a.ss, den_sum = a.d, den_sum_sq = a.dd, "
                    "num_den_sum = a.yd, cov_sum = a.c, cov_sum_sq = a.cc, cov_cross_sum = a.yc "
                    "FROM (SELECT x.variant_id AS variant_id, u.metric_id AS metric_id, SUM(u.value) AS s, "
                    "SUM(u.value * u.value) AS ss, SUM(u.den) AS d, SUM(u.den * u.den) AS dd, "
                    "SUM(u.value * u.den) AS yd, SUM(u.covariate) AS c, SUM(u.covariate * u.covariate) AS cc, "
                    f"SUM(u.value * u.covariate) AS yc FROM {u_table} u JOIN {x_table} x ON x.id = u.exposure_id "
                    "WHERE x.experiment_id = %s GROUP BY x.variant_id, u.metric_id) AS a "
                    f"WHERE {s_table}.experiment_id = %s AND {s_table}.variant_id = a.variant_id "
                    f"AND {s_table}.metric_id = a.metric_id",
                    [experiment.pk, experiment.pk],
                )
        Exposure.objects.filter(experiment=experiment, needs_rollup=True, id__lte=exposure_hi).update(
            needs_rollup=False
        )
        state.event_id, state.exposure_id, state.rolled_up_at = event_hi, exposure_hi, now
        state.save()
    return RollupResult(experiment.pk, event_hi, exposure_hi, Exposure.objects.filter(experiment=experiment).count())


def exposures_discard(*, exposure_ids: list[int]) -> None:
    """Take units out of the statistics and delete their exposures (a merged-away duplicate unit)."""
    if not exposure_ids:
        return
    Exposure.objects.filter(pk__in=exposure_ids).delete()  # the pre_delete receiver subtracts them


@receiver(pre_delete, sender=Exposure, dispatch_uid="experiments.exposure_subtract")
def exposure_subtract(sender, instance: Exposure, **kwargs) -> None:
    """Whatever deletes an exposure (a merge, an erasure), its unit leaves the variant sums with it: its
    values, and its count once the roll-up had counted it."""
    counted_up_to = (
        RollupState.objects.filter(experiment_id=instance.experiment_id).values_list("exposure_id", flat=True).first()
    )
    counted = counted_up_to is not None and instance.pk <= counted_up_to
    values = {row.metric_id: row for row in UnitMetricValue.objects.filter(exposure=instance)}
    metric_ids = VariantMetricStats.objects.filter(
        experiment_id=instance.experiment_id, variant_id=instance.variant_id
    ).values_list("metric_id", flat=True)
    for metric_id in list(metric_ids):
        row = values.get(metric_id)
        if row is None and not counted:
            continue
        y, d, x = (row.value, row.den, row.covariate) if row else (ZERO, ZERO, ZERO)
        VariantMetricStats.objects.filter(
            experiment_id=instance.experiment_id, variant_id=instance.variant_id, metric_id=metric_id
        ).update(
            n=F("n") - (1 if counted else 0),
            sum=F("sum") - y,
            sum_sq=F("sum_sq") - y * y,
            den_sum=F("den_sum") - d,
            den_sum_sq=F("den_sum_sq") - d * d,
            num_den_sum=F("num_den_sum") - y * d,
            cov_sum=F("cov_sum") - x,
            cov_sum_sq=F("cov_sum_sq") - x * x,
            cov_cross_sum=F("cov_cross_sum") - y * x,
        )


def experiments_rollup_all(*, now=None) -> dict[str, int]:
    """Roll up every experiment whose statistics can still move: running or paused ones, and stopped ones
    while the longest metric window after their stop is open."""
    now = now or timezone.now()
    done: dict[str, int] = {}
    horizon = now - timedelta(days=366)
    candidates = Experiment.objects.filter(status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED]) | (
        Experiment.objects.filter(status=Experiment.Status.STOPPED, stopped_at__gte=horizon)
    )
    for experiment in candidates.select_related("primary_metric").order_by("id"):
        if experiment.status == Experiment.Status.STOPPED:
            windows = [m.window_days for m in experiment_metrics(experiment)] or [0]
            if experiment.stopped_at + timedelta(days=max(windows) + 1) < now:
                continue
        try:
            result = experiment_rollup(experiment_id=experiment.pk, now=now)
        except Exception:  # one broken experiment must not hold up the others
            logger.exception("roll-up of experiment %s failed", experiment.pk)
            continue
        done[f"{experiment.source_id}:{experiment.key}"] = result.units_touched
    return done


def snapshot_take(*, experiment: Experiment, now=None, force: bool = False):
    """Keep the analysis as it stands (at most every EXPERIMENTS_SNAPSHOT_MINUTES): the uplift-over-time
    chart reads these, and the sequential p-values' running minimum carries over through them."""
    from experiments.models import ResultSnapshot
    from experiments.selectors import experiment_results

    now = now or timezone.now()
    last = ResultSnapshot.objects.filter(experiment=experiment).order_by("-taken_at").first()
    if (
        not force
        and last is not None
        and last.taken_at > now - timedelta(minutes=settings.EXPERIMENTS_SNAPSHOT_MINUTES)
    ):
        return None
    results = experiment_results(experiment=experiment)
    if results["analysis"] is None:
        return None
    return ResultSnapshot.objects.create(experiment=experiment, taken_at=now, results=results)


def experiments_refresh(*, now=None) -> dict[str, int]:
    """The minute's work: roll up every live experiment, re-weigh bandits, keep snapshots."""
    from experiments.services.experiments import bandit_reweigh

    now = now or timezone.now()
    done = experiments_rollup_all(now=now)
    live = Experiment.objects.filter(status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED])
    for experiment in live.select_related("primary_metric"):
        try:
            bandit_reweigh(experiment=experiment)
            snapshot_take(experiment=experiment, now=now)
        except Exception:
            logger.exception("refresh of experiment %s failed", experiment.pk)
    return done


def experiment_catch_up(*, experiment: Experiment) -> None:
    """Embedded mode runs no Celery beat: roll up (incrementally, cheaply) before results are shown."""
    if settings.CELERY_TASK_ALWAYS_EAGER and experiment.status != Experiment.Status.DRAFT:
        experiment_rollup(experiment_id=experiment.pk)
