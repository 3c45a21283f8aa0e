"""Bayesian summaries, always-valid p-values, Thompson weights and the power calculator."""

import math

import numpy as np
import pytest
import scipy.stats as sps
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from experiments.stats import SampleStats, compare, sample_size, tau_for_sample_size, thompson_weights
from experiments.stats.bayesian import beta_chance_and_loss
from experiments.stats.sequential import msprt_p_value


def conv(n: int, x: int) -> SampleStats:
    return SampleStats(n=n, sum=x, sum_sq=x)


@pytest.mark.parametrize(
    ("control", "treatment"),
    [((2000, 200), (2000, 250)), ((50, 5), (40, 9)), ((1_000_000, 30_000), (1_000_000, 30_150)), ((10, 0), (10, 0))],
)
def test_beta_chance_to_beat_and_expected_loss_match_monte_carlo(control, treatment):
    (n_c, x_c), (n_t, x_t) = control, treatment
    result = compare(metric="m", kind="conversion", control=conv(n_c, x_c), treatment=conv(n_t, x_t), variant="B")
    rng = np.random.default_rng(0)
    draws_c = rng.beta(1 + x_c, 1 + n_c - x_c, 2_000_000)
    draws_t = rng.beta(1 + x_t, 1 + n_t - x_t, 2_000_000)
    assert result.chance_to_beat == pytest.approx((draws_t > draws_c).mean(), abs=0.002)
    mc_loss = np.maximum(draws_c - draws_t, 0).mean()
    assert result.expected_loss == pytest.approx(mc_loss, rel=0.02, abs=1e-7)


@pytest.mark.parametrize(
    "counts",
    [(200, 2000, 250, 2000), (0, 10, 0, 10), (3, 10, 3000, 100_000), (999_995, 1_000_000, 1_000_000, 1_000_000)],
)
def test_beta_summaries_match_adaptive_quadrature(counts):
    x_c, n_c, x_t, n_t = counts
    post_c, post_t, post_c_shift = (
        sps.beta(1 + x_c, 1 + n_c - x_c),
        sps.beta(1 + x_t, 1 + n_t - x_t),
        sps.beta(2 + x_c, 1 + n_c - x_c),
    )
    lo = min(post_c.ppf(1e-15), post_t.ppf(1e-15))
    hi = max(post_c.isf(1e-15), post_t.isf(1e-15))
    points = sorted([post_c.mean(), post_t.mean()])
    chance = integrate.quad(lambda t: post_t.pdf(t) * post_c.cdf(t), lo, hi, points=points, limit=500, epsabs=1e-13)[0]
    loss = integrate.quad(
        lambda t: post_t.pdf(t) * (post_c.mean() * post_c_shift.sf(t) - t * post_c.sf(t)),
        lo,
        hi,
        points=points,
        limit=500,
        epsabs=1e-15,
    )[0]
    result = beta_chance_and_loss(
        control_successes=x_c, control_trials=n_c, treatment_successes=x_t, treatment_trials=n_t
    )
    assert result[0] == pytest.approx(chance, abs=1e-8)
    assert result[1] == pytest.approx(loss, rel=1e-6, abs=1e-12)


def test_beta_summaries_are_symmetric_and_deterministic():
    a = beta_chance_and_loss(control_successes=30, control_trials=300, treatment_successes=45, treatment_trials=310)
    b = beta_chance_and_loss(control_successes=45, control_trials=310, treatment_successes=30, treatment_trials=300)
    assert a[0] + b[0] == pytest.approx(1.0, abs=1e-9)
    assert a == beta_chance_and_loss(
        control_successes=30, control_trials=300, treatment_successes=45, treatment_trials=310
    )
    # E[max(C - T, 0)] - E[max(T - C, 0)] = E[C] - E[T]
    assert a[1] - b[1] == pytest.approx(31 / 302 - 46 / 312, abs=1e-9)


def test_normal_bayesian_summaries_for_means_match_monte_carlo():
    rng = np.random.default_rng(4)
    a, b = rng.normal(10, 3, 400), rng.normal(10.4, 3, 400)
    stats = [SampleStats(n=400, sum=float(v.sum()), sum_sq=float((v * v).sum())) for v in (a, b)]
    result = compare(metric="m", kind="mean", control=stats[0], treatment=stats[1], variant="B")
    se = math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    diff = np.random.default_rng(1).normal(b.mean() - a.mean(), se, 2_000_000)
    assert result.chance_to_beat == pytest.approx((diff > 0).mean(), abs=0.002)
    assert result.expected_loss == pytest.approx(np.maximum(-diff, 0).mean(), rel=0.02)


@settings(max_examples=150, deadline=None)
@given(
    n_c=st.integers(2, 100_000),
    n_t=st.integers(2, 100_000),
    rate_c=st.floats(0, 1),
    rate_t=st.floats(0, 1),
    kind=st.sampled_from(["conversion", "mean"]),
    tau=st.one_of(st.none(), st.floats(0.001, 5)),
)
def test_p_values_are_probabilities_and_sequential_is_never_below_fixed_horizon(n_c, n_t, rate_c, rate_t, kind, tau):
    control, treatment = conv(n_c, round(n_c * rate_c)), conv(n_t, round(n_t * rate_t))
    result = compare(metric="m", kind=kind, control=control, treatment=treatment, variant="B", tau=tau)
    for p in (result.p_value, result.p_value_sequential):
        assert 0.0 <= p <= 1.0
    assert result.p_value_sequential >= result.p_value
    assert 0.0 <= result.chance_to_beat <= 1.0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 1_000_000), rate=st.floats(0, 1), kind=st.sampled_from(["conversion", "mean"]))
def test_identical_variants_are_never_significant(n, rate, kind):
    stats = conv(n, round(n * rate))
    result = compare(metric="m", kind=kind, control=stats, treatment=stats, variant="B")
    assert not result.significant
    assert result.p_value == pytest.approx(1.0) and result.p_value_sequential == 1.0
    assert result.abs_uplift == 0.0


def test_sequential_p_value_keeps_false_positives_under_alpha_when_peeking_after_every_batch():
    """A/A tests checked 20 times each: the fixed-horizon p 'finds' effects, the always-valid one doesn't."""
    rng = np.random.default_rng(2024)
    simulations, peeks, batch = 200, 20, 500
    fixed_hits = seq_hits = 0
    tau = tau_for_sample_size(n=peeks * batch)
    for _ in range(simulations):
        conv_c = rng.binomial(1, 0.1, (peeks, batch)).sum(axis=1).cumsum()
        conv_t = rng.binomial(1, 0.1, (peeks, batch)).sum(axis=1).cumsum()
        fixed_min = seq_min = 1.0
        for k in range(peeks):
            n = (k + 1) * batch
            r = compare(
                metric="m",
                kind="conversion",
                control=conv(n, int(conv_c[k])),
                treatment=conv(n, int(conv_t[k])),
                variant="B",
                tau=tau,
            )
            fixed_min, seq_min = min(fixed_min, r.p_value), min(seq_min, r.p_value_sequential)
        fixed_hits += fixed_min < 0.05
        seq_hits += seq_min < 0.05
    assert fixed_hits / simulations > 0.15  # peeking at a fixed-horizon test inflates false positives
    assert seq_hits / simulations <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / simulations)


def test_sequential_p_value_detects_a_real_effect_as_data_accumulates():
    rng = np.random.default_rng(8)
    history = []
    x_c = x_t = 0
    for k in range(1, 41):
        x_c += rng.binomial(1000, 0.10)
        x_t += rng.binomial(1000, 0.12)
        r = compare(
            metric="m", kind="conversion", control=conv(k * 1000, x_c), treatment=conv(k * 1000, x_t), variant="B"
        )
        history.append(min([r.p_value_sequential, *history[-1:]]))
    assert history == sorted(history, reverse=True)  # the running minimum a caller shows never goes up
    assert history[-1] < 0.001


def test_msprt_formula_against_the_gaussian_mixture_by_numerical_integration():
    diff, var, tau = 0.02, 0.0001, 0.03
    numerator = sps.norm(0, 1).expect(lambda theta: sps.norm.pdf(diff, theta * tau, math.sqrt(var)), lb=-12, ub=12)
    likelihood_ratio = numerator / sps.norm.pdf(diff, 0, math.sqrt(var))
    assert msprt_p_value(diff=diff, var=var, tau_abs=tau) == pytest.approx(1 / likelihood_ratio, rel=1e-6)


def test_tau_is_tuned_for_the_planned_sample_size():
    # s = τ² / V solves s = 2 ln(1/α) + ln(1 + s); at α = 0.05, s ≈ 8.2 and V = 2/n.
    tau = tau_for_sample_size(n=5000, alpha=0.05)
    s = tau**2 / (2 / 5000)
    assert s == pytest.approx(2 * math.log(20) + math.log1p(s), rel=1e-9)
    assert tau_for_sample_size(n=20000) < tau
    with pytest.raises(ValueError, match="n:"):
        tau_for_sample_size(n=0)


def test_thompson_weights_are_seeded_and_favour_the_better_arm():
    successes, trials = {"A": 100, "B": 130, "C": 90}, {"A": 1000, "B": 1000, "C": 1000}
    weights = thompson_weights(successes=successes, trials=trials, seed=42)
    assert weights == thompson_weights(successes=successes, trials=trials, seed=42)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["B"] > 0.9 and weights["C"] < weights["A"]
    # Probability that B is best, by integration over B's posterior: P(B > A and B > C).
    exact = sps.beta(131, 871).expect(lambda p: sps.beta(101, 901).cdf(p) * sps.beta(91, 911).cdf(p))
    assert weights["B"] == pytest.approx(exact, abs=0.01)


def test_thompson_weights_reject_more_successes_than_trials():
    with pytest.raises(ValueError, match=r"successes\['A'\]"):
        thompson_weights(successes={"A": 5}, trials={"A": 4})


def test_sample_size_matches_the_textbook_formula_and_online_calculators():
    # 10% baseline, +20% relative, alpha 0.05, power 0.8: 3,841 per variant (Evan Miller's calculator).
    assert sample_size(baseline=0.10, mde=0.20) == 3841
    assert sample_size(baseline=0.10, mde=0.02, relative=False) == 3841
    # statsmodels' arcsine effect size gives nearly the same n (a different approximation).
    h = proportion_effectsize(0.12, 0.10)
    reference = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0)
    assert sample_size(baseline=0.10, mde=0.20) == pytest.approx(reference, rel=0.01)


@settings(max_examples=60, deadline=None)
@given(baseline=st.floats(0.01, 0.5), mde=st.floats(0.05, 0.5), power=st.floats(0.5, 0.95))
def test_sample_size_achieves_the_requested_power(baseline, mde, power):
    n = sample_size(baseline=baseline, mde=mde, power=power)
    p1, p2 = baseline, baseline * (1 + mde)
    p_bar = (p1 + p2) / 2

    def achieved(units):
        z = sps.norm.isf(0.025)
        se0, se1 = math.sqrt(2 * p_bar * (1 - p_bar) / units), math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / units)
        return sps.norm.sf((z * se0 - (p2 - p1)) / se1)

    assert achieved(n) >= power - 1e-9
    assert achieved(n - 1) < power + 1e-9


def test_sample_size_for_means_and_for_more_variants():
    assert sample_size(baseline=50.0, mde=0.05, std=40.0) == math.ceil((1.959964 + 0.841621) ** 2 * 2 * 1600 / 6.25)
    assert sample_size(baseline=0.1, mde=0.2, variants=3) > sample_size(baseline=0.1, mde=0.2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 1.5, "mde": 0.1}, "baseline"),
        ({"baseline": 0.9, "mde": 0.2}, "mde"),
        ({"baseline": 0.1, "mde": 0}, "mde"),
        ({"baseline": 0.1, "mde": 0.1, "alpha": 0}, "alpha"),
        ({"baseline": 0.1, "mde": 0.1, "power": 1}, "power"),
        ({"baseline": 0.1, "mde": 0.1, "variants": 1}, "variants"),
    ],
)
def test_sample_size_explains_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_size(**kwargs)
