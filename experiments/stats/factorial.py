"""Main effects of a factorial (multivariate) experiment from per-cell sufficient statistics.

A cell is one combination of factor levels, e.g. ("popularity", "fresh") for factors
["ranking", "freshness"]. The main effect of level ℓ of factor F is the difference between the
marginal means of ℓ and of F's first level, where a marginal mean averages its cells equally over
the other factors' level combinations (least-squares means). With equal cell sizes this is the
same as pooling the units of the other factors; with unequal ones it keeps another factor's
effect from leaking into F's. It is exactly the coefficient of F in the saturated regression
``y ~ C(F) * C(G, Sum) * ...`` and, with each cell's own variance (ddof=1), its standard error is
that regression's HC2 (heteroscedasticity-robust) one; Welch–Satterthwaite degrees of freedom for
means, the normal distribution for conversions.

If a cell of a factor's comparison has fewer than two units, that factor falls back to plain
pooling over the other factors (a Welch / two-proportion comparison of the pooled levels).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from experiments.stats.estimates import Estimate, check_stats, conversion_estimate, mean_estimate
from experiments.stats.frequentist import _critical, _p_from, relative_interval, two_proportion_test, welch_test
from experiments.stats.types import FactorEffect, SampleStats


def _levels(cells: Mapping[tuple[str, ...], SampleStats], index: int) -> list[str]:
    seen: list[str] = []
    for key in cells:
        if key[index] not in seen:
            seen.append(key[index])
    return seen


def _marginal(
    cells: Mapping[tuple[str, ...], SampleStats], index: int, level: str, others: list[tuple[str, ...]]
) -> tuple[float, float, list[tuple[float, int]]] | None:
    """(least-squares mean, its variance, [(weight, n)] for Satterthwaite) or None if a cell is thin."""
    k = len(others)
    mean = var = 0.0
    parts: list[tuple[float, int]] = []
    for combo in others:
        key = (*combo[:index], level, *combo[index:])
        stats = cells.get(key)
        if stats is None or stats.n < 2:
            return None
        w = stats.variance / stats.n / (k * k)
        mean += stats.mean / k
        var += w
        parts.append((w, stats.n))
    return mean, var, parts


def _pooled(cells: Mapping[tuple[str, ...], SampleStats], index: int, level: str) -> SampleStats:
    total = SampleStats(n=0, sum=0.0, sum_sq=0.0)
    for key, stats in cells.items():
        if key[index] == level:
            total = total + stats
    return total


def factorial_effects(
    *,
    cells: Mapping[tuple[str, ...], SampleStats],
    factors: Sequence[str],
    kind: str,
    alpha: float = 0.05,
    levels: Mapping[str, Sequence[str]] | None = None,
) -> list[FactorEffect]:
    """Main effect of every non-baseline level of every factor, with CI and two-sided p-value.

    Level order (and so the baseline, the first level) comes from ``levels`` when given, otherwise
    from the order in which levels first appear in ``cells``: put the control cell first.
    """
    if kind not in ("conversion", "mean"):
        raise ValueError(f"kind: factorial effects support 'conversion' and 'mean', got {kind!r}")
    if not factors:
        raise ValueError("factors: need at least one factor")
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: must be in (0, 1), got {alpha!r}")
    for key, stats in cells.items():
        if not isinstance(key, tuple) or len(key) != len(factors):
            raise ValueError(f"cells[{key!r}]: key must be a tuple with one level per factor {list(factors)}")
        check_stats(kind, stats, f"cells[{key!r}]")

    effects: list[FactorEffect] = []
    for index, factor in enumerate(factors):
        factor_levels = list(levels[factor]) if levels and factor in levels else _levels(cells, index)
        if len(factor_levels) < 2:
            continue
        other_levels = [_levels(cells, j) for j in range(len(factors)) if j != index]
        others = list(itertools.product(*other_levels))
        base_level = factor_levels[0]
        base_pooled = _pooled(cells, index, base_level)
        base_marginal = _marginal(cells, index, base_level, others)
        for level in factor_levels[1:]:
            pooled = _pooled(cells, index, level)
            marginal = _marginal(cells, index, level, others)
            if base_marginal is not None and marginal is not None:
                effect = _from_marginals(base_marginal, marginal, kind=kind, alpha=alpha)
            else:
                effect = _from_pooled(base_pooled, pooled, kind=kind, alpha=alpha)
            value, base_value, diff, ci, rel, p = effect
            effects.append(
                FactorEffect(
                    factor=factor,
                    level=level,
                    baseline_level=base_level,
                    kind=kind,
                    units=pooled.n,
                    baseline_units=base_pooled.n,
                    value=value,
                    baseline_value=base_value,
                    effect=diff,
                    ci=ci,
                    rel_effect=rel,
                    p_value=p,
                )
            )
    return effects


_Result = tuple[float, float, float, tuple[float, float], float, float]


def _from_marginals(base: tuple, level: tuple, *, kind: str, alpha: float) -> _Result:
    base_mean, base_var, base_parts = base
    mean, var, parts = level
    diff = mean - base_mean
    se = math.sqrt(var + base_var)
    if kind == "conversion":
        df = math.inf
    else:
        denom = sum(w * w / (n - 1) for w, n in parts + base_parts)
        df = (var + base_var) ** 2 / denom if denom > 0 else math.inf
    crit = _critical(alpha, df)
    p = _p_from(diff, se, df)
    # Relative effect: the delta method needs a mean's count only through var_mean, so n=1 will do.
    rel, _ = relative_interval(Estimate(1, base_mean, base_var), Estimate(1, mean, var), crit)
    return mean, base_mean, diff, (diff - crit * se, diff + crit * se), rel, p


def _from_pooled(base: SampleStats, level: SampleStats, *, kind: str, alpha: float) -> _Result:
    if kind == "conversion":
        result = two_proportion_test(conversion_estimate(base), conversion_estimate(level), alpha=alpha)
    else:
        result = welch_test(mean_estimate(base), mean_estimate(level), alpha=alpha)
    return level.mean, base.mean, result.diff, result.abs_ci, result.rel, result.p_value
