"""Fixed-horizon statistics agree with statsmodels and scipy run on the expanded raw data."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats as sps
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.stats import RatioStats, SampleStats, compare, holm, srm_check


def conv(n: int, x: int) -> SampleStats:
    return SampleStats(n=n, sum=x, sum_sq=x)


def from_raw(y: np.ndarray, x: np.ndarray | None = None) -> SampleStats:
    if x is None:
        return SampleStats(n=len(y), sum=float(y.sum()), sum_sq=float((y * y).sum()))
    return SampleStats(
        n=len(y),
        sum=float(y.sum()),
        sum_sq=float((y * y).sum()),
        cov_sum=float(x.sum()),
        cov_sum_sq=float((x * x).sum()),
        cross_sum=float((x * y).sum()),
    )


def test_conversion_matches_the_issue_example_and_statsmodels():
    result = compare(
        metric="signup", kind="conversion", control=conv(2000, 200), treatment=conv(2000, 250), variant="B"
    )
    z, p = proportions_ztest([250, 200], [2000, 2000])
    assert z == pytest.approx(2.501955, abs=1e-6)
    assert result.p_value == pytest.approx(0.012351, abs=1e-6)
    assert result.p_value == pytest.approx(p, abs=1e-9)
    low, high = confint_proportions_2indep(250, 2000, 200, 2000, method="wald", compare="diff")
    assert result.abs_ci == pytest.approx((low, high), abs=1e-9)
    assert result.value == 0.125 and result.control_value == 0.1
    assert result.rel_uplift == pytest.approx(0.25)
    assert result.significant


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # statsmodels on 0 vs 0
@settings(max_examples=60, deadline=None)
@given(
    n_c=st.integers(20, 5000),
    n_t=st.integers(20, 5000),
    rate_c=st.floats(0.01, 0.99),
    rate_t=st.floats(0.01, 0.99),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_conversion_p_value_and_interval_agree_with_statsmodels(n_c, n_t, rate_c, rate_t, alpha):
    x_c, x_t = round(n_c * rate_c), round(n_t * rate_t)
    result = compare(
        metric="m", kind="conversion", control=conv(n_c, x_c), treatment=conv(n_t, x_t), variant="B", alpha=alpha
    )
    _, p = proportions_ztest([x_t, x_c], [n_t, n_c])
    p = 1.0 if math.isnan(p) else p
    assert result.p_value == pytest.approx(p, abs=1e-6)
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff", alpha=alpha)
    assert result.abs_ci == pytest.approx((low, high), abs=1e-6)


def test_welch_on_conversion_data_matches_scipy_on_the_zero_one_values():
    # The issue quotes p = 0.0123227, which is what Welch's test gives with population (ddof=0)
    # variances; the standard Welch test (scipy, statsmodels, R's t.test) uses the sample variance
    # (ddof=1) and gives 0.0123444. We follow the standard.
    a = np.r_[np.ones(200), np.zeros(1800)]
    b = np.r_[np.ones(250), np.zeros(1750)]
    result = compare(metric="m", kind="mean", control=from_raw(a), treatment=from_raw(b), variant="B")
    reference = sps.ttest_ind(b, a, equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-9)
    assert result.p_value == pytest.approx(0.0123444, abs=1e-7)
    low, high = reference.confidence_interval()
    assert result.abs_ci == pytest.approx((low, high), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_c=st.integers(2, 400), n_t=st.integers(2, 400), shift=st.floats(-2, 2))
def test_welch_t_test_agrees_with_scipy_on_revenue_like_data(seed, n_c, n_t, shift):
    rng = np.random.default_rng(seed)
    a = rng.lognormal(1.0, 1.0, n_c)
    b = rng.lognormal(1.0 + shift, 1.2, n_t)
    result = compare(metric="revenue", kind="mean", control=from_raw(a), treatment=from_raw(b), variant="B")
    reference = sps.ttest_ind(b, a, equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-6)
    low, high = reference.confidence_interval()
    assert result.abs_ci[0] == pytest.approx(low, rel=1e-6, abs=1e-6)
    assert result.abs_ci[1] == pytest.approx(high, rel=1e-6, abs=1e-6)


def _ratio_stats(num: np.ndarray, den: np.ndarray) -> RatioStats:
    return RatioStats(
        n=len(num),
        num_sum=float(num.sum()),
        num_sum_sq=float((num * num).sum()),
        den_sum=float(den.sum()),
        den_sum_sq=float((den * den).sum()),
        cross_sum=float((num * den).sum()),
    )


def test_ratio_metric_delta_method_matches_a_bootstrap_over_units():
    rng = np.random.default_rng(7)

    def units(n, ctr):
        impressions = rng.poisson(8, n) + 1
        clicks = rng.binomial(impressions, np.clip(rng.normal(ctr, 0.05, n), 0, 1))
        return clicks.astype(float), impressions.astype(float)

    num_c, den_c = units(3000, 0.10)
    num_t, den_t = units(3000, 0.11)
    result = compare(
        metric="ctr",
        kind="ratio",
        control=_ratio_stats(num_c, den_c),
        treatment=_ratio_stats(num_t, den_t),
        variant="B",
    )
    assert result.value == pytest.approx(num_t.sum() / den_t.sum())
    boot_abs, boot_rel = [], []
    for _ in range(2000):
        i = rng.integers(0, len(num_c), len(num_c))
        j = rng.integers(0, len(num_t), len(num_t))
        r_c = num_c[i].sum() / den_c[i].sum()
        r_t = num_t[j].sum() / den_t[j].sum()
        boot_abs.append(r_t - r_c)
        boot_rel.append(r_t / r_c - 1)
    z = sps.norm.isf(0.025)
    assert (result.abs_ci[1] - result.abs_ci[0]) / (2 * z) == pytest.approx(np.std(boot_abs), rel=0.08)
    assert (result.rel_ci[1] - result.rel_ci[0]) / (2 * z) == pytest.approx(np.std(boot_rel), rel=0.08)
    # The bootstrap percentile interval and the delta-method one nearly coincide.
    assert result.abs_ci == pytest.approx(tuple(np.percentile(boot_abs, [2.5, 97.5])), abs=0.003)


def test_relative_interval_of_means_matches_a_bootstrap():
    rng = np.random.default_rng(11)
    a = rng.gamma(2.0, 10.0, 4000)
    b = rng.gamma(2.0, 11.0, 4000)
    result = compare(metric="revenue", kind="mean", control=from_raw(a), treatment=from_raw(b), variant="B")
    boot = [rng.choice(b, len(b)).mean() / rng.choice(a, len(a)).mean() - 1 for _ in range(2000)]
    assert result.rel_uplift == pytest.approx(b.mean() / a.mean() - 1)
    assert (result.rel_ci[1] - result.rel_ci[0]) / (2 * 1.96) == pytest.approx(np.std(boot), rel=0.08)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_holm_matches_statsmodels(pvalues):
    assert holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]), abs=1e-12)


def test_holm_rejects_a_p_value_outside_zero_one():
    with pytest.raises(ValueError, match=r"pvalues\[1\]"):
        holm([0.1, 1.5])


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 100_000), min_size=2, max_size=6),
    raw_weights=st.lists(st.floats(0.05, 10), min_size=6, max_size=6),
)
def test_srm_chi_square_matches_scipy(counts, raw_weights):
    names = [f"v{i}" for i in range(len(counts))]
    weights = dict(zip(names, raw_weights[: len(counts)], strict=True))
    result = srm_check(dict(zip(names, counts, strict=True)), weights)
    total_w = sum(weights.values())
    expected = [sum(counts) * weights[name] / total_w for name in names]
    reference = sps.chisquare(counts, expected)
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-9, abs=1e-9)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-9)
    assert result.warn == (reference.pvalue < 0.001)


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1000, 10_000_000))
def test_srm_fires_on_a_60_40_split_of_a_planned_50_50(total):
    a = round(total * 0.6)
    result = srm_check({"A": a, "B": total - a}, {"A": 0.5, "B": 0.5})
    assert result.warn and result.p_value < 1e-9


def test_srm_stays_quiet_on_a_fair_split_and_with_no_units():
    assert not srm_check({"A": 5030, "B": 4970}, {"A": 1, "B": 1}).warn
    assert srm_check({}, {"A": 1, "B": 1}).p_value == 1.0


def test_srm_flags_units_in_a_variant_that_should_get_none():
    result = srm_check({"A": 100, "B": 90, "C": 3}, {"A": 1, "B": 1, "C": 0})
    assert result.warn and result.p_value == 0.0


def test_srm_rejects_negative_counts_with_the_variant_named():
    with pytest.raises(ValueError, match=r"observed\['B'\]"):
        srm_check({"A": 1, "B": -1}, {"A": 1, "B": 1})


def test_statistics_package_imports_no_django():
    """Pure maths: importable and testable without Django (and so usable from a notebook or a benchmark)."""
    code = "import sys, experiments.stats; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
