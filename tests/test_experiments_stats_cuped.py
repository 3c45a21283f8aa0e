"""CUPED from sufficient statistics equals the regression adjustment done on raw data."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.stats import SampleStats, analyze_experiment, compare


def from_raw(y: np.ndarray, x: np.ndarray) -> SampleStats:
    return SampleStats(
        n=len(y),
        sum=float(y.sum()),
        sum_sq=float((y * y).sum()),
        cov_sum=float(x.sum()),
        cov_sum_sq=float((x * x).sum()),
        cross_sum=float((x * y).sum()),
    )


def revenue_data(seed: int, n_c: int = 3000, n_t: int = 3000, lift: float = 0.3):
    """Pre-period spend predicts post-period spend: the case CUPED is for."""
    rng = np.random.default_rng(seed)
    x_c, x_t = rng.gamma(2.0, 5.0, n_c), rng.gamma(2.0, 5.0, n_t)
    y_c = 0.8 * x_c + rng.normal(2.0, 3.0, n_c)
    y_t = 0.8 * x_t + rng.normal(2.0 + lift, 3.0, n_t)
    return (x_c, y_c), (x_t, y_t)


def _raw_adjusted(x_c, y_c, x_t, y_t):
    """θ pooled within variants, y - θ (x - x̄), by hand on the raw arrays."""
    sxy = ((x_c - x_c.mean()) * (y_c - y_c.mean())).sum() + ((x_t - x_t.mean()) * (y_t - y_t.mean())).sum()
    sxx = ((x_c - x_c.mean()) ** 2).sum() + ((x_t - x_t.mean()) ** 2).sum()
    theta = sxy / sxx
    x_bar = np.r_[x_c, x_t].mean()
    return y_c - theta * (x_c - x_bar), y_t - theta * (x_t - x_bar)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_c=st.integers(5, 800), n_t=st.integers(5, 800))
def test_cuped_equals_welch_on_raw_regression_adjusted_values(seed, n_c, n_t):
    (x_c, y_c), (x_t, y_t) = revenue_data(seed, n_c, n_t)
    result = compare(
        metric="revenue", kind="mean", control=from_raw(y_c, x_c), treatment=from_raw(y_t, x_t), variant="B", cuped=True
    )
    adj_c, adj_t = _raw_adjusted(x_c, y_c, x_t, y_t)
    reference = sps.ttest_ind(adj_t, adj_c, equal_var=False)
    assert result.cuped
    assert result.abs_uplift == pytest.approx(adj_t.mean() - adj_c.mean(), rel=1e-7, abs=1e-7)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-6)
    low, high = reference.confidence_interval()
    assert result.abs_ci == pytest.approx((low, high), rel=1e-6, abs=1e-6)
    assert result.rel_uplift == pytest.approx(adj_t.mean() / adj_c.mean() - 1, rel=1e-7, abs=1e-7)


def test_cuped_effect_is_the_ancova_treatment_coefficient_and_shrinks_the_interval():
    (x_c, y_c), (x_t, y_t) = revenue_data(3)
    frame = pd.DataFrame(
        {"y": np.r_[y_c, y_t], "x": np.r_[x_c, x_t], "treated": np.r_[np.zeros(len(y_c)), np.ones(len(y_t))]}
    )
    fit = smf.ols("y ~ treated + x", data=frame).fit()
    adjusted = compare(
        metric="revenue", kind="mean", control=from_raw(y_c, x_c), treatment=from_raw(y_t, x_t), variant="B", cuped=True
    )
    plain = compare(
        metric="revenue", kind="mean", control=from_raw(y_c, x_c), treatment=from_raw(y_t, x_t), variant="B"
    )
    assert adjusted.abs_uplift == pytest.approx(fit.params["treated"], rel=1e-9)
    # Same standard error as the regression's, up to its homoscedasticity assumption and θ's df.
    se = (adjusted.abs_ci[1] - adjusted.abs_ci[0]) / (2 * sps.t.isf(0.025, 6000))
    assert se == pytest.approx(fit.bse["treated"], rel=0.02)
    # Pre-period spend explains most of the variance: the interval is much narrower.
    corr = np.corrcoef(np.r_[x_c, x_t], np.r_[y_c, y_t])[0, 1]
    assert adjusted.variance_reduction == pytest.approx(corr**2, abs=0.03)
    assert adjusted.variance_reduction > 0.5
    width = adjusted.abs_ci[1] - adjusted.abs_ci[0]
    plain_width = plain.abs_ci[1] - plain.abs_ci[0]
    assert width == pytest.approx(plain_width * np.sqrt(1 - adjusted.variance_reduction), rel=1e-6)
    assert adjusted.p_value < plain.p_value


def test_cuped_pools_theta_over_all_variants_in_an_experiment():
    rng = np.random.default_rng(5)
    data = {}
    for name, lift in (("A", 0.0), ("B", 0.5), ("C", 1.0)):
        x = rng.gamma(2.0, 5.0, 1500)
        data[name] = (x, 0.8 * x + rng.normal(2.0 + lift, 3.0, 1500))
    analysis = analyze_experiment(
        metrics={"revenue": ("mean", {k: from_raw(y, x) for k, (x, y) in data.items()})}, control="A", cuped=True
    )
    frame = pd.DataFrame(
        {
            "y": np.concatenate([y for _, y in data.values()]),
            "x": np.concatenate([x for x, _ in data.values()]),
            "variant": np.repeat(list(data), 1500),
        }
    )
    fit = smf.ols("y ~ C(variant) + x", data=frame).fit()
    by_variant = {c.variant: c for c in analysis.comparisons}
    assert by_variant["B"].abs_uplift == pytest.approx(fit.params["C(variant)[T.B]"], rel=1e-9)
    assert by_variant["C"].abs_uplift == pytest.approx(fit.params["C(variant)[T.C]"], rel=1e-9)
    assert all(c.cuped and c.variance_reduction > 0.5 for c in analysis.comparisons)
    assert "CUPED removed" in analysis.verdict


def test_cuped_without_a_covariate_falls_back_to_the_plain_test():
    rng = np.random.default_rng(1)
    y_c, y_t = rng.normal(10, 2, 500), rng.normal(10.3, 2, 500)
    no_x = np.zeros(500)
    adjusted = compare(
        metric="m", kind="mean", control=from_raw(y_c, no_x), treatment=from_raw(y_t, no_x), variant="B", cuped=True
    )
    plain = compare(metric="m", kind="mean", control=from_raw(y_c, no_x), treatment=from_raw(y_t, no_x), variant="B")
    assert not adjusted.cuped and adjusted.variance_reduction == 0.0
    assert adjusted.p_value == plain.p_value and adjusted.abs_ci == plain.abs_ci


def test_cuped_on_conversion_uses_pre_exposure_conversion():
    rng = np.random.default_rng(9)
    n = 20000
    x_c, x_t = rng.binomial(1, 0.3, n).astype(float), rng.binomial(1, 0.3, n).astype(float)
    y_c = rng.binomial(1, np.where(x_c == 1, 0.5, 0.05)).astype(float)
    y_t = rng.binomial(1, np.where(x_t == 1, 0.53, 0.06)).astype(float)
    result = compare(
        metric="buy",
        kind="conversion",
        control=from_raw(y_c, x_c),
        treatment=from_raw(y_t, x_t),
        variant="B",
        cuped=True,
    )
    adj_c, adj_t = _raw_adjusted(x_c, y_c, x_t, y_t)
    assert result.cuped and result.variance_reduction > 0.2
    assert result.abs_uplift == pytest.approx(adj_t.mean() - adj_c.mean(), rel=1e-9)
    se = np.sqrt(adj_c.var(ddof=1) / n + adj_t.var(ddof=1) / n)
    assert result.p_value == pytest.approx(2 * sps.norm.sf(abs(adj_t.mean() - adj_c.mean()) / se), abs=1e-9)
