"""Fixed-horizon tests and confidence intervals for a treatment against control.

- Conversion: two-proportion z-test with the pooled standard error for the p-value (the test
  under H0: p_t = p_c) and the unpooled (Wald) standard error for the interval of the difference,
  as ``statsmodels``' ``proportions_ztest`` and ``confint_proportions_2indep(method="wald")`` do.
- Mean: Welch's t-test, with Welch–Satterthwaite degrees of freedom for both the p-value and the
  interval (``scipy.stats.ttest_ind(equal_var=False)``).
- Ratio and CUPED-adjusted metrics: a z-test on the difference with the delta-method / adjusted
  standard errors (the normal approximation these estimators rest on anyway).

Relative uplift r = m_t / m_c - 1 gets its interval from the delta method on the ratio of two
independent means: Var(m_t / m_c) ≈ Var(m_t) / m_c² + m_t² Var(m_c) / m_c⁴, with the same
critical value as the absolute interval. It is undefined (NaN) when the control value is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

from experiments.stats.estimates import Estimate


@dataclass(frozen=True)
class TestResult:
    diff: float
    se: float  # unpooled standard error of the difference (for the interval)
    p_value: float
    df: float  # math.inf for z-tests
    abs_ci: tuple[float, float]
    rel: float
    rel_ci: tuple[float, float]


_NAN_CI = (math.nan, math.nan)


def _two_sided_p(stat: float, df: float) -> float:
    if math.isinf(df):
        return float(2.0 * sps.norm.sf(abs(stat)))
    return float(2.0 * sps.t.sf(abs(stat), df))


def _critical(alpha: float, df: float) -> float:
    if math.isinf(df):
        return float(sps.norm.isf(alpha / 2.0))
    return float(sps.t.isf(alpha / 2.0, df))


def _p_from(diff: float, se: float, df: float) -> float:
    """Two-sided p of diff / se; a zero standard error means certainty either way."""
    if not math.isfinite(diff) or not math.isfinite(se):
        return 1.0
    if se == 0.0:
        return 1.0 if diff == 0.0 else 0.0
    return min(1.0, max(0.0, _two_sided_p(diff / se, df)))


def welch_df(control: Estimate, treatment: Estimate) -> float:
    """Welch–Satterthwaite degrees of freedom from the two variances of the mean."""
    a, b = treatment.var_mean, control.var_mean
    denom = 0.0
    if treatment.n > 1:
        denom += a * a / (treatment.n - 1)
    if control.n > 1:
        denom += b * b / (control.n - 1)
    if not math.isfinite(denom) or denom == 0.0:
        # Both variances zero: the t statistic is infinite or 0/0 and df does not matter.
        return math.inf
    return (a + b) ** 2 / denom


def relative_interval(control: Estimate, treatment: Estimate, crit: float) -> tuple[float, tuple[float, float]]:
    """r = m_t / m_c - 1 and its delta-method interval."""
    if not math.isfinite(control.mean) or control.mean == 0.0 or not math.isfinite(treatment.mean):
        return math.nan, _NAN_CI
    ratio = treatment.mean / control.mean
    var = treatment.var_mean / control.mean**2 + treatment.mean**2 * control.var_mean / control.mean**4
    if not math.isfinite(var):
        return ratio - 1.0, _NAN_CI
    half = crit * math.sqrt(var)
    return ratio - 1.0, (ratio - 1.0 - half, ratio - 1.0 + half)


def _finish(control: Estimate, treatment: Estimate, *, p_value: float, df: float, alpha: float) -> TestResult:
    diff = treatment.mean - control.mean
    se = math.sqrt(treatment.var_mean + control.var_mean)
    crit = _critical(alpha, df)
    abs_ci = (diff - crit * se, diff + crit * se) if math.isfinite(se) and math.isfinite(diff) else _NAN_CI
    rel, rel_ci = relative_interval(control, treatment, crit)
    return TestResult(diff=diff, se=se, p_value=p_value, df=df, abs_ci=abs_ci, rel=rel, rel_ci=rel_ci)


def two_proportion_test(control: Estimate, treatment: Estimate, *, alpha: float) -> TestResult:
    """Pooled-SE z-test p-value, unpooled (Wald) interval."""
    n_c, n_t = control.n, treatment.n
    if n_c == 0 or n_t == 0:
        return _finish(control, treatment, p_value=1.0, df=math.inf, alpha=alpha)
    pooled = (control.mean * n_c + treatment.mean * n_t) / (n_c + n_t)
    se_pooled = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_t))
    p = _p_from(treatment.mean - control.mean, se_pooled, math.inf)
    return _finish(control, treatment, p_value=p, df=math.inf, alpha=alpha)


def welch_test(control: Estimate, treatment: Estimate, *, alpha: float) -> TestResult:
    if control.n < 2 or treatment.n < 2:
        return _finish(control, treatment, p_value=1.0, df=math.nan, alpha=alpha)
    df = welch_df(control, treatment)
    diff = treatment.mean - control.mean
    p = _p_from(diff, math.sqrt(treatment.var_mean + control.var_mean), df)
    return _finish(control, treatment, p_value=p, df=df, alpha=alpha)


def z_test(control: Estimate, treatment: Estimate, *, alpha: float) -> TestResult:
    diff = treatment.mean - control.mean
    p = _p_from(diff, math.sqrt(treatment.var_mean + control.var_mean), math.inf)
    return _finish(control, treatment, p_value=p, df=math.inf, alpha=alpha)
