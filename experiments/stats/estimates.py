"""Per-variant estimates from sufficient statistics: the mean and the variance of that mean.

Three metric kinds share one shape, so the tests, intervals and Bayesian summaries downstream
need not know where a variance came from:

- conversion: the rate p = Σy / n with the binomial variance p(1 - p) / n (what the Wald
  interval of a difference of proportions uses);
- mean: Σy / n with the sample variance (ddof=1) / n, as Welch's t-test uses;
- ratio: Σnum / Σden with the delta-method variance (Deng et al., "Applying the Delta Method in
  Metric Analytics", 2018), treating the unit as the independent observation.

CUPED (Deng et al., 2013) adjusts a mean by a pre-exposure covariate x of the same metric:
y_adj = y - θ (x - x̄), θ = cov(x, y) / var(x) estimated within variants and pooled across them.
That θ is the slope an ANCOVA (y ~ variant + x) fits, so the adjusted difference of means is
exactly the regression-adjusted treatment effect; the variance of each adjusted mean is
(var y - 2 θ cov(x, y) + θ² var x) / n, all from Σx, Σx², Σxy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from experiments.stats.types import RatioStats, SampleStats

KINDS = ("conversion", "mean", "ratio")


@dataclass(frozen=True)
class Estimate:
    """A variant's metric estimate: ``mean`` with ``var_mean`` = Var(mean); ``unit_var`` = n·var_mean."""

    n: int
    mean: float
    var_mean: float

    @property
    def unit_var(self) -> float:
        return self.var_mean * self.n


def _check_numbers(stats: SampleStats | RatioStats, where: str) -> None:
    if not isinstance(stats.n, int) or stats.n < 0:
        raise ValueError(f"{where}: n must be an integer >= 0, got {stats.n!r}")
    for name, value in vars(stats).items():
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")


def _check_sample(stats: object, where: str) -> SampleStats:
    if not isinstance(stats, SampleStats):
        raise TypeError(f"{where}: expected SampleStats, got {type(stats).__name__}")
    _check_numbers(stats, where)
    return stats


def _check_ratio(stats: object, where: str) -> RatioStats:
    if not isinstance(stats, RatioStats):
        raise TypeError(f"{where}: ratio metrics need RatioStats, got {type(stats).__name__}")
    _check_numbers(stats, where)
    return stats


def check_stats(kind: str, stats: object, where: str) -> SampleStats | RatioStats:
    """Validate that ``stats`` fits ``kind``; raise with a message naming ``where`` otherwise."""
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "ratio":
        return _check_ratio(stats, where)
    checked = _check_sample(stats, where)
    if kind == "conversion":
        if not (0 <= checked.sum <= checked.n):
            raise ValueError(f"{where}: conversions ({checked.sum}) must be between 0 and units ({checked.n})")
        # y is 0 or 1 per unit, so Σy² = Σy; anything else means counts were passed as conversions.
        if abs(checked.sum_sq - checked.sum) > 1e-9 * max(1.0, checked.sum):
            raise ValueError(
                f"{where}: a conversion metric has y in {{0, 1}} per unit, so sum_sq must equal sum "
                f"(got sum={checked.sum}, sum_sq={checked.sum_sq}); use kind 'mean' for counts"
            )
    return checked


def conversion_estimate(stats: SampleStats) -> Estimate:
    if stats.n == 0:
        return Estimate(0, math.nan, math.nan)
    p = stats.sum / stats.n
    return Estimate(stats.n, p, p * (1.0 - p) / stats.n)


def mean_estimate(stats: SampleStats) -> Estimate:
    if stats.n == 0:
        return Estimate(0, math.nan, math.nan)
    return Estimate(stats.n, stats.sum / stats.n, stats.variance / stats.n if stats.n >= 2 else math.nan)


def ratio_estimate(stats: RatioStats) -> Estimate:
    """Delta method for Σnum / Σden: Var ≈ (σ²_y/μ_x² - 2 μ_y σ_xy/μ_x³ + μ_y² σ²_x/μ_x⁴) / n."""
    n = stats.n
    if n == 0 or stats.den_sum == 0:
        return Estimate(n, math.nan, math.nan)
    mu_y, mu_x = stats.num_sum / n, stats.den_sum / n
    ratio = mu_y / mu_x
    if n < 2:
        return Estimate(n, ratio, math.nan)
    var_y = (stats.num_sum_sq - n * mu_y * mu_y) / (n - 1)
    var_x = (stats.den_sum_sq - n * mu_x * mu_x) / (n - 1)
    cov_xy = (stats.cross_sum - n * mu_x * mu_y) / (n - 1)
    var = (var_y / mu_x**2 - 2.0 * mu_y * cov_xy / mu_x**3 + mu_y**2 * var_x / mu_x**4) / n
    return Estimate(n, ratio, max(var, 0.0))


def estimate(kind: str, stats: SampleStats | RatioStats) -> Estimate:
    if kind == "conversion":
        return conversion_estimate(stats)  # type: ignore[arg-type]
    if kind == "mean":
        return mean_estimate(stats)  # type: ignore[arg-type]
    return ratio_estimate(stats)  # type: ignore[arg-type]


# --- CUPED ---------------------------------------------------------------------------------------


def _centered(stats: SampleStats) -> tuple[float, float, float]:
    """(Sxx, Sxy, Syy): centered sums of squares and cross-products within one variant."""
    if stats.n == 0:
        return 0.0, 0.0, 0.0
    sxx = stats.cov_sum_sq - stats.cov_sum * stats.cov_sum / stats.n
    sxy = stats.cross_sum - stats.cov_sum * stats.sum / stats.n
    syy = stats.sum_sq - stats.sum * stats.sum / stats.n
    return sxx, sxy, syy


def cuped_theta(stats: Iterable[SampleStats]) -> float | None:
    """θ = Σ_g Sxy_g / Σ_g Sxx_g pooled within variants; None when the covariate does not vary."""
    sxx_total = sxy_total = 0.0
    for s in stats:
        sxx, sxy, _ = _centered(s)
        sxx_total += sxx
        sxy_total += sxy
    # Relative guard: Sxx of a constant covariate is 0 up to rounding of the sums.
    if sxx_total <= 1e-12 * max(1.0, abs(sxx_total)) or not math.isfinite(sxx_total):
        return None
    return sxy_total / sxx_total


def cuped_estimate(stats: SampleStats, *, theta: float, x_mean: float) -> Estimate:
    """Mean of y - θ (x - x_mean) and its variance (ddof=1), from the sufficient statistics."""
    n = stats.n
    if n == 0:
        return Estimate(0, math.nan, math.nan)
    mean = stats.sum / n - theta * (stats.cov_sum / n - x_mean)
    if n < 2:
        return Estimate(n, mean, math.nan)
    sxx, sxy, syy = _centered(stats)
    var = max((syy - 2.0 * theta * sxy + theta * theta * sxx) / (n - 1), 0.0)
    return Estimate(n, mean, var / n)


def sample_variance_of_mean(stats: SampleStats) -> float:
    """Var(ȳ) with ddof=1: the unadjusted baseline against which CUPED's reduction is measured."""
    return stats.variance / stats.n if stats.n >= 2 else math.nan
