"""Value types of the experiment statistics: sufficient statistics in, comparisons and analyses out.

Everything here is computed from per-variant sufficient statistics (n, Σy, Σy², and for CUPED Σx,
Σx², Σxy), so results can be kept up to date incrementally: adding a unit's contribution to the
sums is all a roll-up has to do. No raw data is needed anywhere in this package.

Quantities that are mathematically undefined (a relative uplift when the control value is 0, a
confidence interval when a variant has fewer than two units) are ``math.nan``; p-values are never
NaN (no evidence means p = 1). ``to_dict()`` turns NaN and infinities into ``None`` so that the
result can go straight into a strict JSON response.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: strict renderers (DRF's) refuse them, so they become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class SampleStats:
    """One variant x one metric: sufficient statistics over its units.

    ``y`` is the unit's metric value after exposure (conversion: 0/1; count or revenue per unit:
    >= 0). ``x`` is the same metric measured before exposure, the CUPED covariate; leave the
    covariate sums at 0 when there is none.
    """

    n: int
    sum: float
    sum_sq: float
    cov_sum: float = 0.0
    cov_sum_sq: float = 0.0
    cross_sum: float = 0.0

    def __add__(self, other: SampleStats) -> SampleStats:
        """Pool two disjoint sets of units (used by roll-ups and by factorial pooling)."""
        return SampleStats(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_sq=self.sum_sq + other.sum_sq,
            cov_sum=self.cov_sum + other.cov_sum,
            cov_sum_sq=self.cov_sum_sq + other.cov_sum_sq,
            cross_sum=self.cross_sum + other.cross_sum,
        )

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Sample variance of y (ddof=1); NaN below two units. Clipped at 0 against rounding."""
        if self.n < 2:
            return math.nan
        return max((self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1), 0.0)


@dataclass(frozen=True)
class RatioStats:
    """One variant x one ratio metric (for example clicks / impressions per unit).

    Per unit: ``num`` (clicks) and ``den`` (impressions). The metric is Σnum / Σden, and its
    variance comes from the delta method, which treats the unit (not the impression) as the
    independent observation, as randomisation does.
    """

    n: int
    num_sum: float
    num_sum_sq: float
    den_sum: float
    den_sum_sq: float
    cross_sum: float  # Σ num·den

    def __add__(self, other: RatioStats) -> RatioStats:
        return RatioStats(
            n=self.n + other.n,
            num_sum=self.num_sum + other.num_sum,
            num_sum_sq=self.num_sum_sq + other.num_sum_sq,
            den_sum=self.den_sum + other.den_sum,
            den_sum_sq=self.den_sum_sq + other.den_sum_sq,
            cross_sum=self.cross_sum + other.cross_sum,
        )

    @property
    def ratio(self) -> float:
        return self.num_sum / self.den_sum if self.den_sum != 0 else math.nan


@dataclass(frozen=True)
class Comparison:
    """A treatment against control for one metric.

    ``value``/``control_value`` are the observed metric values (conversion rate, mean per unit,
    ratio). Uplifts and their CIs are CUPED-adjusted when ``cuped`` is true. ``rel_uplift`` is
    treatment / control - 1 and its CI comes from the delta method on the ratio of the two means.
    ``p_value`` is the fixed-horizon two-sided p-value; ``p_value_adjusted`` is the Holm-adjusted
    one (set by ``analyze_experiment``, None from ``compare``); ``p_value_sequential`` is the
    always-valid mixture-SPRT p-value, safe to look at any time. Recompute it as data arrives and
    keep the running minimum of what you have shown: that minimum is still always-valid and never
    goes up. ``chance_to_beat`` is the posterior probability that the treatment value is higher
    than control's; ``expected_loss`` is the expected shortfall (in metric units) if you ship the
    treatment and it is in fact worse. ``significant`` uses ``p_value_adjusted`` when set,
    otherwise ``p_value``.
    """

    variant: str
    metric: str
    kind: str
    units: int
    control_units: int
    value: float
    control_value: float
    abs_uplift: float
    abs_ci: tuple[float, float]
    rel_uplift: float
    rel_ci: tuple[float, float]
    p_value: float
    p_value_adjusted: float | None
    p_value_sequential: float
    chance_to_beat: float
    expected_loss: float
    cuped: bool
    variance_reduction: float
    significant: bool
    higher_is_better: bool = True  # direction for chance_to_beat, expected_loss and the verdict's wording

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch check: chi-square goodness of fit of units per variant to the weights."""

    chi2: float
    p_value: float
    warn: bool
    observed: dict[str, int] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class GuardrailBreach:
    """A variant moved a guardrail metric significantly (unadjusted p < alpha) the bad way."""

    metric: str
    variant: str
    direction: str  # "increase_is_bad" | "decrease_is_bad"
    abs_uplift: float
    rel_uplift: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything a results page shows: comparisons, SRM, guardrail breaches and the verdict."""

    control: str
    alpha: float
    comparisons: list[Comparison]
    srm: SRMResult
    guardrail_breaches: list[GuardrailBreach]
    verdict: str
    primary_metric: str | None = None
    guardrails: dict[str, str] = field(default_factory=dict)  # metric -> "increase_is_bad" | "decrease_is_bad"

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


@dataclass(frozen=True)
class FactorEffect:
    """The main effect of one level of a factor against the factor's first level.

    ``effect`` is the difference of the marginal means, each marginal mean being the unweighted
    average of its cells over the other factors' levels (least-squares means), so an unbalanced
    split between cells does not leak another factor's effect into this one.
    """

    factor: str
    level: str
    baseline_level: str
    kind: str
    units: int
    baseline_units: int
    value: float
    baseline_value: float
    effect: float
    ci: tuple[float, float]
    rel_effect: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))
