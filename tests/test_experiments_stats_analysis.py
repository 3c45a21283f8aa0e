"""analyze_experiment: Holm across variants x metrics, SRM, guardrails and the plain-language verdict."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from experiments.stats import (
    RatioStats,
    SampleStats,
    analyze_experiment,
    compare,
)


def conv(n: int, x: int) -> SampleStats:
    return SampleStats(n=n, sum=x, sum_sq=x)


def mean_stats(n: int, mean: float, sd: float) -> SampleStats:
    """Sufficient statistics of n values with the given mean and sample sd."""
    return SampleStats(n=n, sum=n * mean, sum_sq=(n - 1) * sd * sd + n * mean * mean)


def example_metrics():
    return {
        "purchase": ("conversion", {"A": conv(2000, 200), "B": conv(2000, 250), "C": conv(2000, 205)}),
        "revenue": (
            "mean",
            {"A": mean_stats(2000, 10.0, 20.0), "B": mean_stats(2000, 10.5, 20.0), "C": mean_stats(2000, 10.1, 20.0)},
        ),
        "ctr": (
            "ratio",
            {
                "A": RatioStats(n=2000, num_sum=800, num_sum_sq=1500, den_sum=8000, den_sum_sq=40000, cross_sum=4500),
                "B": RatioStats(n=2000, num_sum=880, num_sum_sq=1650, den_sum=8000, den_sum_sq=40000, cross_sum=4900),
                "C": RatioStats(n=2000, num_sum=790, num_sum_sq=1480, den_sum=8000, den_sum_sq=40000, cross_sum=4450),
            },
        ),
    }


def test_holm_runs_across_every_variant_and_metric():
    analysis = analyze_experiment(metrics=example_metrics(), control="A")
    assert [(c.metric, c.variant) for c in analysis.comparisons] == [
        ("purchase", "B"),
        ("purchase", "C"),
        ("revenue", "B"),
        ("revenue", "C"),
        ("ctr", "B"),
        ("ctr", "C"),
    ]
    raw = [c.p_value for c in analysis.comparisons]
    expected = multipletests(raw, method="holm")[1]
    assert [c.p_value_adjusted for c in analysis.comparisons] == pytest.approx(list(expected), abs=1e-12)
    assert [c.significant for c in analysis.comparisons] == [p < 0.05 for p in expected]
    # The unadjusted comparison of the same pair is unchanged by the analysis.
    alone = compare(
        metric="purchase", kind="conversion", control=conv(2000, 200), treatment=conv(2000, 250), variant="B"
    )
    assert alone.p_value == analysis.comparisons[0].p_value and alone.p_value_adjusted is None


def test_verdict_names_the_winner_with_uplift_interval_and_adjusted_p():
    analysis = analyze_experiment(
        metrics={"purchase": ("conversion", {"A": conv(2000, 200), "B": conv(2000, 250)})}, control="A"
    )
    assert analysis.primary_metric == "purchase"
    assert analysis.verdict == ("B beats A on purchase by +25.0% (95% CI +3.1% to +46.9%, Holm-adjusted p = 0.012).")


def test_verdict_reports_no_difference_and_losers_honestly():
    analysis = analyze_experiment(
        metrics={"purchase": ("conversion", {"A": conv(5000, 500), "B": conv(5000, 505), "C": conv(5000, 380)})},
        control="A",
    )
    assert "B shows no significant difference from A on purchase (+1.0%" in analysis.verdict
    assert "C is worse than A on purchase by -24.0%" in analysis.verdict


def test_srm_warning_leads_the_verdict():
    analysis = analyze_experiment(
        metrics={"purchase": ("conversion", {"A": conv(6000, 600), "B": conv(4000, 500)})},
        control="A",
        weights={"A": 50, "B": 50},
    )
    assert analysis.srm.warn
    assert analysis.verdict.startswith("Sample ratio mismatch (p < 0.001): units split A 6000, B 4000")


def test_srm_uses_exposed_units_and_planned_weights_when_given():
    analysis = analyze_experiment(
        metrics={"purchase": ("conversion", {"A": conv(2000, 200), "B": conv(2000, 230)})},
        control="A",
        weights={"A": 0.8, "B": 0.2},
        units={"A": 8030, "B": 1970},
    )
    assert not analysis.srm.warn
    assert analysis.srm.expected == {"A": 8000.0, "B": 2000.0}


def test_guardrail_breach_is_reported_unadjusted_and_kept_out_of_the_holm_family():
    metrics = {
        "purchase": ("conversion", {"A": conv(2000, 200), "B": conv(2000, 250)}),
        "refund": ("conversion", {"A": conv(2000, 40), "B": conv(2000, 62)}),
        "latency": ("mean", {"A": mean_stats(2000, 300.0, 50.0), "B": mean_stats(2000, 299.0, 50.0)}),
    }
    analysis = analyze_experiment(
        metrics=metrics, control="A", guardrails={"refund": "increase_is_bad", "latency": "increase_is_bad"}
    )
    by_metric = {c.metric: c for c in analysis.comparisons}
    assert by_metric["purchase"].p_value_adjusted == by_metric["purchase"].p_value  # a family of one
    assert by_metric["refund"].p_value_adjusted is None
    assert [(b.metric, b.variant) for b in analysis.guardrail_breaches] == [("refund", "B")]
    breach = analysis.guardrail_breaches[0]
    assert breach.p_value < 0.05 and breach.rel_uplift == pytest.approx(0.55)
    assert analysis.verdict.endswith("Guardrail breached: B increases refund by +55.0% (p = 0.027).")


def test_guardrail_in_the_good_direction_is_not_a_breach():
    analysis = analyze_experiment(
        metrics={
            "purchase": ("conversion", {"A": conv(2000, 200), "B": conv(2000, 250)}),
            "refund": ("conversion", {"A": conv(2000, 62), "B": conv(2000, 40)}),
        },
        control="A",
        guardrails={"refund": "increase_is_bad"},
    )
    assert analysis.guardrail_breaches == []


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1000, 1_000_000), rate=st.floats(0.01, 0.5), variants=st.integers(2, 5))
def test_identical_variants_give_no_winner_and_no_srm(n, rate, variants):
    names = [chr(ord("A") + i) for i in range(variants)]
    stats = conv(n, round(n * rate))
    analysis = analyze_experiment(
        metrics={"purchase": ("conversion", dict.fromkeys(names, stats))}, control="A", cuped=True
    )
    assert not any(c.significant for c in analysis.comparisons)
    assert not analysis.srm.warn
    assert "beats" not in analysis.verdict and "worse" not in analysis.verdict


def test_a_variant_with_no_units_yet_gives_a_readable_verdict_and_strict_json():
    analysis = analyze_experiment(
        metrics={
            "purchase": ("conversion", {"A": conv(100, 0), "B": conv(0, 0)}),
            "revenue": ("mean", {"A": mean_stats(100, 0.0, 0.0), "B": SampleStats(n=1, sum=5.0, sum_sq=25.0)}),
        },
        control="A",
        weights={"A": 1, "B": 0},
    )
    assert "B vs A on purchase: not enough data yet" in analysis.verdict
    payload = analysis.to_dict()
    text = json.dumps(payload, allow_nan=False)  # what a strict JSON renderer requires
    assert json.loads(text)["comparisons"][0]["rel_uplift"] is None
    assert all(0.0 <= c.p_value <= 1.0 for c in analysis.comparisons)


def test_relative_uplift_is_undefined_but_absolute_is_reported_when_control_is_zero():
    result = compare(metric="purchase", kind="conversion", control=conv(5000, 0), treatment=conv(5000, 20), variant="B")
    assert math.isnan(result.rel_uplift)
    assert result.abs_uplift == pytest.approx(0.004) and result.p_value < 0.001
    assert result.to_dict()["rel_ci"] == [None, None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metrics": {}}, "metrics: need at least one metric"),
        ({"metrics": {"m": ("median", {"A": conv(1, 1)})}}, r"metrics\['m'\]: kind must be one of"),
        ({"metrics": {"m": ("conversion", {"B": conv(1, 1)})}}, r"metrics\['m'\]: no statistics for the control"),
        ({"metrics": {"m": ("conversion", {"A": conv(10, 11)})}}, r"metrics\['m'\]\['A'\]: conversions"),
        (
            {"metrics": {"m": ("ratio", {"A": conv(10, 1)})}},
            r"metrics\['m'\]\['A'\]: ratio metrics need RatioStats",
        ),
        ({"metrics": {"m": ("conversion", {"A": conv(1, 1)})}, "guardrails": {"x": "increase_is_bad"}}, "guardrails"),
        ({"metrics": {"m": ("conversion", {"A": conv(1, 1)})}, "guardrails": {"m": "up"}}, r"guardrails\['m'\]"),
        ({"metrics": {"m": ("conversion", {"A": conv(1, 1)})}, "alpha": 1.5}, "alpha"),
    ],
)
def test_bad_input_is_rejected_with_what_and_where(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        analyze_experiment(control="A", **kwargs)


def test_analysis_of_many_variants_and_metrics_is_fast():
    """Sufficient statistics only: a 10-variant x 20-metric experiment refreshes in well under a second."""
    import time

    metrics = {}
    for m in range(20):
        kind = ("conversion", "mean", "ratio")[m % 3]
        by_variant = {}
        for v in range(10):
            if kind == "conversion":
                by_variant[f"v{v}"] = conv(100_000, 10_000 + 7 * v)
            elif kind == "mean":
                by_variant[f"v{v}"] = mean_stats(100_000, 10.0 + 0.01 * v, 20.0)
            else:
                by_variant[f"v{v}"] = RatioStats(
                    n=100_000, num_sum=40_000 + v, num_sum_sq=75_000, den_sum=400_000, den_sum_sq=2e6, cross_sum=225_000
                )
        metrics[f"m{m}"] = (kind, by_variant)
    started = time.perf_counter()
    analysis = analyze_experiment(metrics=metrics, control="v0", cuped=True)
    assert len(analysis.comparisons) == 180
    assert time.perf_counter() - started < 1.0


def test_verdict_says_guardrails_hold_when_none_is_breached():
    analysis = analyze_experiment(
        metrics={
            "purchase": ("conversion", {"A": conv(2000, 200), "B": conv(2000, 210)}),
            "refund": ("conversion", {"A": conv(2000, 40), "B": conv(2000, 41)}),
        },
        control="A",
        guardrails={"refund": "increase_is_bad"},
    )
    assert analysis.verdict.endswith("; Guardrails hold (refund).")
    assert "on refund" not in analysis.verdict


def test_counts_passed_as_conversions_are_rejected():
    with pytest.raises(ValueError, match=r"metrics\['orders'\]\['B'\]: a conversion metric has y in \{0, 1\}"):
        analyze_experiment(
            metrics={"orders": ("conversion", {"A": conv(10, 3), "B": SampleStats(n=10, sum=3, sum_sq=9)})},
            control="A",
        )


def test_lower_is_better_metric_flips_the_verdict_and_the_bayesian_summaries():
    bounce = {"A": conv(4000, 1600), "B": conv(4000, 1400)}
    analysis = analyze_experiment(metrics={"bounce": ("conversion", bounce)}, control="A", lower_is_better={"bounce"})
    assert analysis.verdict.startswith("B beats A on bounce by -12.5%")
    c = analysis.comparisons[0]
    higher = compare(metric="bounce", kind="conversion", control=bounce["A"], treatment=bounce["B"], variant="B")
    assert not c.higher_is_better and c.chance_to_beat > 0.99
    assert c.chance_to_beat == pytest.approx(1 - higher.chance_to_beat, abs=1e-9)
    # E[max(T - C, 0)] = E[max(C - T, 0)] + E[T] - E[C] (posterior means of Beta(1 + x, 1 + n - x))
    assert c.expected_loss == pytest.approx(higher.expected_loss + 1401 / 4002 - 1601 / 4002, abs=1e-11)
    assert c.p_value == higher.p_value


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(2, 50_000), st.floats(0, 1)), min_size=2, max_size=5),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_analysis_and_single_comparisons_agree_before_correction(counts, alpha):
    stats = {f"v{i}": conv(n, round(n * rate)) for i, (n, rate) in enumerate(counts)}
    analysis = analyze_experiment(metrics={"m": ("conversion", stats)}, control="v0", alpha=alpha)
    for c in analysis.comparisons:
        alone = compare(
            metric="m",
            kind="conversion",
            control=stats["v0"],
            treatment=stats[c.variant],
            variant=c.variant,
            alpha=alpha,
        )
        assert (c.p_value, c.abs_ci, c.chance_to_beat) == (alone.p_value, alone.abs_ci, alone.chance_to_beat)
        assert c.rel_uplift == alone.rel_uplift or (math.isnan(c.rel_uplift) and math.isnan(alone.rel_uplift))
        assert c.p_value_adjusted >= c.p_value


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=1, max_size=40), st.integers(0, 40))
def test_pooling_two_roll_ups_equals_rolling_up_all_units(pairs, cut):
    def roll_up(rows):
        return SampleStats(
            n=len(rows),
            sum=sum(y for y, _ in rows),
            sum_sq=sum(y * y for y, _ in rows),
            cov_sum=sum(x for _, x in rows),
            cov_sum_sq=sum(x * x for _, x in rows),
            cross_sum=sum(x * y for y, x in rows),
        )

    whole = roll_up(pairs)
    pooled = roll_up(pairs[:cut]) + roll_up(pairs[cut:])
    assert pooled.n == whole.n
    for name in ("sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum"):
        assert getattr(pooled, name) == pytest.approx(getattr(whole, name), rel=1e-9, abs=1e-6)
