"""Planning: units per variant needed to detect a minimum effect (normal approximation).

For a conversion rate (the textbook formula without continuity correction, e.g. Fleiss, and what
online calculators such as Evan Miller's use), with p1 the baseline and p2 = p1 + δ:

    n = (z_{1-α/2} · sqrt(2 p̄ (1 - p̄)) + z_{power} · sqrt(p1 (1 - p1) + p2 (1 - p2)))² / δ²,  p̄ = (p1 + p2) / 2

For a mean with standard deviation σ (pass ``std``): n = (z_{1-α/2} + z_{power})² · 2σ² / δ².

With more than two variants every treatment is compared with control and the results are
Holm-corrected, so planning uses the Bonferroni level α / (variants - 1), the level Holm applies
to the smallest p-value: the plan then holds for each comparison.
"""

from __future__ import annotations

import math

from scipy import stats as sps


def _check(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and lo < value < hi):
        raise ValueError(f"{name}: must be between {lo} and {hi} (exclusive), got {value!r}")


def sample_size(
    *,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    variants: int = 2,
    std: float | None = None,
) -> int:
    """Units per variant. ``baseline`` is a rate in (0, 1), or a mean when ``std`` is given.

    ``mde`` is the minimum detectable effect: relative to the baseline (0.1 = +10%) when
    ``relative``, otherwise absolute (0.01 = one percentage point for a rate).
    """
    _check("alpha", alpha, 0.0, 1.0)
    _check("power", power, 0.0, 1.0)
    if not isinstance(variants, int) or variants < 2:
        raise ValueError(f"variants: need at least 2 (control and one treatment), got {variants!r}")
    if not (isinstance(mde, int | float) and math.isfinite(mde)) or mde == 0:
        raise ValueError(f"mde: must be a non-zero finite number, got {mde!r}")
    delta = baseline * mde if relative else mde
    z_alpha = float(sps.norm.isf(alpha / (variants - 1) / 2.0))
    z_power = float(sps.norm.ppf(power))
    if std is not None:
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"std: must be a positive number, got {std!r}")
        if not math.isfinite(baseline) or (relative and baseline == 0):
            raise ValueError(f"baseline: a relative mde needs a non-zero baseline mean, got {baseline!r}")
        return math.ceil((z_alpha + z_power) ** 2 * 2.0 * std * std / (delta * delta))
    _check("baseline", baseline, 0.0, 1.0)
    p1, p2 = baseline, baseline + delta
    if not 0.0 < p2 < 1.0:
        raise ValueError(f"mde: baseline {baseline} moved by {delta:+g} gives a rate of {p2:g}, outside (0, 1)")
    p_bar = (p1 + p2) / 2.0
    root = z_alpha * math.sqrt(2.0 * p_bar * (1.0 - p_bar)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (delta * delta))
