"""Multiple-testing correction: Holm's step-down procedure (controls the family-wise error rate).

Holm is uniformly more powerful than Bonferroni and needs no assumption about how the tests depend
on each other, which matters here: comparisons share the control arm, and metrics share units.
"""

from __future__ import annotations

import math


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values in the input order: sorted ascending, p_(i) · (m - i), running max, cap 1."""
    m = len(pvalues)
    checked = []
    for i, p in enumerate(pvalues):
        try:
            value = float(p)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"pvalues[{i}]: must be a number in [0, 1], got {p!r}")
        checked.append(value)
    pvalues = checked
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
