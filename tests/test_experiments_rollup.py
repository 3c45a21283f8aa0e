"""Incremental results: the roll-up agrees with a full recompute, results match statsmodels, the task runs."""

import itertools
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.models import Exposure, Metric, RollupState, UnitMetricValue, Variant, VariantMetricStats
from experiments.services.experiments import VariantIn
from experiments.services.rollup import STAT_FIELDS, experiment_recompute, experiment_rollup
from personalization.celery import app as celery_app
from tests.experiments_support import assignments, ev, experiment, metric, send
from tests.factories import SourceFactory
from tracking.models import Event, Profile

_ids = itertools.count()


def _profile(at):
    return Profile.objects.create(first_seen_at=at, last_seen_at=at)


def _event(source, profile, event_type, at, *, value=None, properties=None):
    n = next(_ids)
    return Event.objects.create(
        source=source,
        profile=profile,
        message_id=f"m{n}",
        type=event_type,
        timestamp=at,
        received_at=timezone.now() - timedelta(seconds=1),
        value=value,
        properties=properties or {},
    )


def _snapshot(experiment) -> dict:
    stats = {
        (row.variant.key, row.metric.key): tuple(getattr(row, f) for f in STAT_FIELDS)
        for row in VariantMetricStats.objects.filter(experiment=experiment).select_related("variant", "metric")
    }
    units = {
        (row.exposure_id, row.metric_id): (row.value, row.den, row.covariate)
        for row in UnitMetricValue.objects.filter(exposure__experiment=experiment)
    }
    return {"stats": stats, "units": units}


def _full_metrics(source):
    """One metric of each kind, with windows, a numeric property and a ratio."""
    metric(source, "purchase", kind="conversion", window_days=7)
    metric(source, "revenue", kind="revenue", event_types=["purchase"], window_days=10)
    metric(source, "qty", kind="count", event_types=["purchase"], property="qty", window_days=14)
    metric(source, "views", kind="count", event_types=["view"], window_days=3)
    metric(source, "ctr", kind="ratio", event_types=["click"], denominator_event_types=["view"], window_days=5)
    return dict(secondary_metrics=["revenue", "qty", "views"], guardrail_metrics=["ctr"])


step = st.one_of(
    st.tuples(st.just("expose"), st.integers(0, 5), st.integers(0, 1), st.integers(-30 * 24, -1)),
    st.tuples(
        st.just("event"),
        st.integers(0, 5),
        st.sampled_from(["purchase", "view", "click", "other"]),
        st.integers(-45 * 24, 0),
        st.one_of(st.none(), st.decimals(min_value=0, max_value=500, places=2)),
        st.one_of(st.none(), st.integers(-3, 9), st.floats(0, 10, allow_nan=False), st.text("ab1.", max_size=3)),
    ),
    st.tuples(st.just("rollup")),
)


@pytest.mark.django_db
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_incremental_rollup_equals_a_full_recompute(steps, settings):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    source = SourceFactory()
    extra = _full_metrics(source)
    exp = experiment(source, f"exp{next(_ids)}", cuped_days=7, **extra)
    variants = list(Variant.objects.filter(experiment=exp).order_by("position"))
    now = timezone.now()
    profiles = [_profile(now - timedelta(days=60)) for _ in range(6)]
    for action in steps:
        if action[0] == "expose":
            _, who, variant, hours = action
            Exposure.objects.get_or_create(
                experiment=exp,
                profile=profiles[who],
                defaults={"variant": variants[variant], "exposed_at": now + timedelta(hours=hours)},
            )
        elif action[0] == "event":
            _, who, event_type, hours, value, qty = action
            _event(
                source, profiles[who], event_type, now + timedelta(hours=hours), value=value, properties={"qty": qty}
            )
        else:
            experiment_rollup(experiment_id=exp.pk, now=timezone.now())
    experiment_rollup(experiment_id=exp.pk, now=timezone.now())
    incremental = _snapshot(exp)
    experiment_recompute(experiment_id=exp.pk, now=timezone.now())
    assert _snapshot(exp) == incremental
    exposed = Exposure.objects.filter(experiment=exp).count()
    assert sum(n[0] for (variant, m), n in incremental["stats"].items() if m == "purchase") == exposed


@pytest.mark.django_db
def test_values_count_only_events_inside_the_window_after_exposure(settings, source):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    metric(source, "purchase", kind="conversion", window_days=7)
    metric(source, "revenue", kind="revenue", event_types=["purchase"], window_days=7)
    exp = experiment(source, "w", secondary_metrics=["revenue"], cuped_days=14)
    now = timezone.now()
    profile = _profile(now)
    control = Variant.objects.get(experiment=exp, is_control=True)
    Exposure.objects.create(experiment=exp, profile=profile, variant=control, exposed_at=now - timedelta(days=10))
    _event(source, profile, "purchase", now - timedelta(days=12), value=Decimal("5"))  # before: the covariate
    _event(source, profile, "purchase", now - timedelta(days=9), value=Decimal("20"))  # inside the window
    _event(source, profile, "purchase", now - timedelta(days=1), value=Decimal("300"))  # after the window
    _event(SourceFactory(), profile, "purchase", now - timedelta(days=9), value=Decimal("7"))  # another site
    experiment_rollup(experiment_id=exp.pk)
    revenue = VariantMetricStats.objects.get(experiment=exp, metric__key="revenue", variant=control)
    assert (revenue.n, revenue.sum, revenue.sum_sq, revenue.cov_sum, revenue.cov_cross_sum) == (
        1,
        Decimal("20"),
        Decimal("400"),
        Decimal("5"),
        Decimal("100"),
    )
    conversion = VariantMetricStats.objects.get(experiment=exp, metric__key="purchase", variant=control)
    assert (conversion.n, conversion.sum, conversion.cov_sum) == (1, 1, 1)


@pytest.mark.django_db
def test_a_second_rollup_reads_only_new_events_and_changes_nothing_without_them(settings, source):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    exp = experiment(source, "idem")
    now = timezone.now()
    profile = _profile(now)
    Exposure.objects.create(
        experiment=exp, profile=profile, variant=exp.variants.get(is_control=True), exposed_at=now - timedelta(hours=1)
    )
    _event(source, profile, "purchase", now)
    first = experiment_rollup(experiment_id=exp.pk)
    before = _snapshot(exp)
    second = experiment_rollup(experiment_id=exp.pk)
    assert second.units_touched == 0 and _snapshot(exp) == before
    assert RollupState.objects.get(experiment=exp).event_id == first.event_id


@pytest.mark.django_db
def test_events_still_committing_are_left_for_the_next_run(settings, source):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 60
    exp = experiment(source, "lag")
    now = timezone.now()
    profile = _profile(now)
    Exposure.objects.create(
        experiment=exp, profile=profile, variant=exp.variants.get(is_control=True), exposed_at=now - timedelta(hours=1)
    )
    Event.objects.create(
        source=source, profile=profile, message_id="late", type="purchase", timestamp=now, received_at=now
    )
    experiment_rollup(experiment_id=exp.pk, now=now)
    row = VariantMetricStats.objects.get(experiment=exp, variant__is_control=True)
    assert (row.n, row.sum) == (1, 0)  # the unit is in; its purchase, stored just now, is not yet
    experiment_rollup(experiment_id=exp.pk, now=now + timedelta(minutes=2))
    row = VariantMetricStats.objects.get(experiment=exp, variant__is_control=True)
    assert (row.n, row.sum) == (1, 1)


def _raw_experiment(source, *, control_units, treatment_units, conversions, revenue, cuped_days=0):
    """Exposed units and their purchases, written directly; returns the experiment."""
    metric(source, "revenue", kind="revenue", event_types=["purchase"])
    exp = experiment(source, "raw", secondary_metrics=["revenue"], cuped_days=cuped_days)
    now = timezone.now()
    variants = {v.key: v for v in exp.variants.all()}
    for key, units in (("control", control_units), ("treatment", treatment_units)):
        profiles = Profile.objects.bulk_create([Profile(first_seen_at=now, last_seen_at=now) for _ in range(units)])
        Exposure.objects.bulk_create(
            [
                Exposure(experiment=exp, profile=p, variant=variants[key], exposed_at=now - timedelta(days=2))
                for p in profiles
            ]
        )
        Event.objects.bulk_create(
            [
                Event(
                    source=source,
                    profile=p,
                    message_id=f"{key}-{i}",
                    type="purchase",
                    timestamp=now - timedelta(days=1),
                    received_at=now - timedelta(minutes=5),
                    value=revenue[key][i],
                )
                for i, p in enumerate(profiles[: conversions[key]])
            ]
        )
    return exp


@pytest.mark.django_db
def test_results_endpoint_matches_statsmodels_on_the_same_raw_data(client_secret, source, settings):
    from statsmodels.stats.proportion import proportions_ztest
    from statsmodels.stats.weightstats import ttest_ind

    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    rng = np.random.default_rng(7)
    conversions = {"control": 200, "treatment": 250}
    revenue = {k: [Decimal(str(round(x, 2))) for x in rng.gamma(2.0, 20.0, n)] for k, n in conversions.items()}
    exp = _raw_experiment(source, control_units=2000, treatment_units=2000, conversions=conversions, revenue=revenue)
    experiment_rollup(experiment_id=exp.pk)
    response = client_secret.get("/api/v1/experiments/raw/results")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["units"] == {"control": 2000, "treatment": 2000}
    by_metric = {c["metric"]: c for c in body["analysis"]["comparisons"]}

    z, p = proportions_ztest([250, 200], [2000, 2000])
    assert z == pytest.approx(2.501955, abs=1e-6)
    assert by_metric["purchase"]["p_value"] == pytest.approx(p, abs=1e-6)
    assert p == pytest.approx(0.012351, abs=1e-6)  # the reference case
    assert by_metric["purchase"]["abs_uplift"] == pytest.approx(0.025, abs=1e-9)

    values = {k: np.zeros(2000) for k in conversions}
    for key in values:
        values[key][: conversions[key]] = [float(v) for v in revenue[key]]
    _, p_welch, _ = ttest_ind(values["treatment"], values["control"], usevar="unequal")
    assert by_metric["revenue"]["p_value"] == pytest.approx(p_welch, abs=1e-6)
    assert by_metric["revenue"]["abs_uplift"] == pytest.approx(values["treatment"].mean() - values["control"].mean())
    assert body["analysis"]["srm"]["warn"] is False
    assert body["analysis"]["verdict"]


@pytest.mark.django_db
def test_sample_ratio_mismatch_is_flagged(client_secret, source, settings):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    conversions = {"control": 10, "treatment": 10}
    revenue = {k: [Decimal("1")] * 10 for k in conversions}
    exp = _raw_experiment(source, control_units=500, treatment_units=380, conversions=conversions, revenue=revenue)
    experiment_rollup(experiment_id=exp.pk)
    srm = client_secret.get("/api/v1/experiments/raw/results").json()["analysis"]["srm"]
    assert srm["warn"] is True and srm["p_value"] < 0.001


@pytest.mark.django_db
def test_merging_two_exposed_units_takes_the_dropped_one_out_of_the_sums(client, source, settings):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    exp = experiment(source, "button")
    now = timezone.now()
    send(client, source, ev("identify", "laptop", 1, now, user_id="u1"))
    assignments(client, source, "laptop")
    assignments(client, source, "phone")
    send(client, source, ev("purchase", "phone", 2, now + timedelta(seconds=1)))
    experiment_rollup(experiment_id=exp.pk, now=now + timedelta(seconds=5))
    assert sum(VariantMetricStats.objects.filter(experiment=exp).values_list("n", flat=True)) == 2
    send(client, source, ev("identify", "phone", 3, now + timedelta(seconds=2), user_id="u1"))
    experiment_rollup(experiment_id=exp.pk, now=now + timedelta(seconds=10))
    rolled = _snapshot(exp)
    assert sum(n[0] for n in rolled["stats"].values()) == 1
    # The merged unit now owns the phone's purchase.
    assert sum(n[1] for n in rolled["stats"].values()) == 1
    experiment_recompute(experiment_id=exp.pk, now=now + timedelta(seconds=10))
    assert _snapshot(exp)["stats"] == rolled["stats"]


@pytest.mark.django_db
def test_erasure_takes_the_unit_out_of_the_results(client, source, settings):
    from privacy.services.subjects import subject_erase

    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    exp = experiment(source, "button")
    now = timezone.now()
    for visitor in ("a", "b"):
        assignments(client, source, visitor)
        send(client, source, ev("purchase", visitor, 1, now + timedelta(seconds=1)))
    experiment_rollup(experiment_id=exp.pk, now=now + timedelta(seconds=5))
    subject_erase(profile=Profile.objects.get(identities__value="a"))
    stats = _snapshot(exp)["stats"]
    assert sum(n[0] for n in stats.values()) == 1 and sum(n[1] for n in stats.values()) == 1
    assert not Exposure.objects.filter(profile__identities__value="a").exists()


@pytest.mark.django_db
def test_bandit_moves_traffic_to_the_arm_that_converts(client, source, settings):
    from experiments.services.experiments import bandit_reweigh

    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    exp = experiment(
        source,
        "bandit",
        kind="bandit",
        variants=[VariantIn("a", is_control=True), VariantIn("b"), VariantIn("c")],
    )
    now = timezone.now()
    for i in range(90):
        got = assignments(client, source, f"v{i}")["bandit"]
        if got == "c" or (got == "b" and i % 5 == 0):
            send(client, source, ev("purchase", f"v{i}", i, now + timedelta(seconds=1)))
    experiment_rollup(experiment_id=exp.pk, now=now + timedelta(seconds=5))
    weights = bandit_reweigh(experiment=exp)
    assert max(weights, key=weights.get) == "c"
    assert Variant.objects.get(experiment=exp, key="c").weight == pytest.approx(weights["c"])
    new = [assignments(client, source, f"new{i}")["bandit"] for i in range(60)]
    assert new.count("c") > 40


@pytest.mark.django_db(transaction=True)
def test_the_minutely_task_rolls_up_in_a_real_worker(client, settings):
    from celery.contrib.testing.worker import start_worker

    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    source = SourceFactory()
    exp = experiment(source, "button")
    now = timezone.now()
    for visitor in ("a", "b", "c"):
        assignments(client, source, visitor)
    send(client, source, ev("purchase", "a", 1, now + timedelta(seconds=1)))
    with start_worker(celery_app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
        result = celery_app.send_task("experiments.rollup").get(timeout=30)
    assert result == {f"{source.pk}:button": 3}
    rows = VariantMetricStats.objects.filter(experiment=exp, metric=Metric.objects.get(key="purchase"))
    assert sum(r.n for r in rows) == 3 and sum(r.sum for r in rows) == 1
    assert exp.snapshots.count() == 1


def test_rollup_is_on_the_beat_schedule(settings):
    assert settings.CELERY_BEAT_SCHEDULE["experiments-rollup"]["task"] == "experiments.rollup"


@pytest.mark.django_db
def test_factorial_results_give_each_cell_and_each_factors_main_effect(client_secret, source, settings):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    cells = {("old", "no"): 40, ("new", "no"): 80, ("old", "yes"): 40, ("new", "yes"): 80}  # conversions of 400
    exp = experiment(
        source,
        "ranking",
        kind="factorial",
        variants=[
            VariantIn(
                f"{order}-{fresh}", is_control=(order, fresh) == ("old", "no"), factors={"order": order, "fresh": fresh}
            )
            for order, fresh in cells
        ],
    )
    now = timezone.now()
    for variant in exp.variants.all():
        profiles = Profile.objects.bulk_create([Profile(first_seen_at=now, last_seen_at=now) for _ in range(400)])
        Exposure.objects.bulk_create(
            [Exposure(experiment=exp, profile=p, variant=variant, exposed_at=now - timedelta(days=1)) for p in profiles]
        )
        buyers = cells[(variant.factors["order"], variant.factors["fresh"])]
        for p in profiles[:buyers]:
            _event(source, p, "purchase", now - timedelta(hours=1))
    experiment_rollup(experiment_id=exp.pk)
    body = client_secret.get("/api/v1/experiments/ranking/results").json()
    assert body["units"] == {key: 400 for key in ("old-no", "new-no", "old-yes", "new-yes")}
    by_variant = {c["variant"]: c for c in body["analysis"]["comparisons"]}
    assert by_variant["new-no"]["value"] == pytest.approx(0.2) and by_variant["old-yes"]["value"] == pytest.approx(0.1)
    effects = {(e["factor"], e["level"]): e for e in body["factorial"]}
    assert effects[("order", "new")]["effect"] == pytest.approx(0.1)
    assert effects[("order", "new")]["p_value"] < 0.001
    assert effects[("fresh", "yes")]["effect"] == pytest.approx(0.0)


@pytest.mark.django_db
def test_a_metric_where_lower_is_better_reads_an_increase_as_a_loss(client_secret, source, settings):
    from experiments.models import Metric

    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    conversions = {"control": 200, "treatment": 250}
    revenue = {k: [Decimal("10")] * n for k, n in conversions.items()}
    exp = _raw_experiment(source, control_units=2000, treatment_units=2000, conversions=conversions, revenue=revenue)
    experiment_rollup(experiment_id=exp.pk)
    before = client_secret.get("/api/v1/experiments/raw/results").json()["analysis"]["comparisons"]
    Metric.objects.filter(key="purchase").update(higher_is_better=False)  # say, a "refund requested" event
    after = client_secret.get("/api/v1/experiments/raw/results").json()["analysis"]["comparisons"]
    chance = {c["metric"]: c["chance_to_beat"] for c in before}, {c["metric"]: c["chance_to_beat"] for c in after}
    assert chance[0]["purchase"] > 0.99
    assert chance[1]["purchase"] < 0.01


@pytest.mark.django_db
def test_the_sequential_test_is_tuned_to_the_planned_sample_size(client_secret, source, settings):
    """Always-valid p-values are most sensitive around the planned size: a large planned experiment
    whose data shows a real effect is not stuck at p = 1."""
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    conversions = {"control": 200, "treatment": 270}
    revenue = {k: [Decimal("10")] * n for k, n in conversions.items()}
    exp = _raw_experiment(source, control_units=2000, treatment_units=2000, conversions=conversions, revenue=revenue)
    experiment_rollup(experiment_id=exp.pk)
    # Tuned for the default 10,000 units per arm this data gives a sequential p of 0.041; for 2,000, 0.015.
    exp.planned_units_per_variant = 2000
    exp.save(update_fields=["planned_units_per_variant"])
    tuned = client_secret.get("/api/v1/experiments/raw/results").json()["analysis"]["comparisons"]
    purchase = next(c for c in tuned if c["metric"] == "purchase")
    assert purchase["p_value"] <= purchase["p_value_sequential"] < 0.03
