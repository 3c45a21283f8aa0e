"""Sample-ratio mismatch: do the units per variant fit the planned weights?

A chi-square goodness-of-fit test. A mismatch means assignment or exposure logging is broken
(bots, redirects that lose a variant's visitors, a caching layer), and then every other number of
the experiment is suspect. The usual threshold is strict (p < 0.001) because the check runs on
every refresh and a false alarm stops an experiment.
"""

from __future__ import annotations

import math

from scipy import stats as sps

from experiments.stats.types import SRMResult

DEFAULT_THRESHOLD = 0.001


def srm_check(observed: dict[str, int], weights: dict[str, float], threshold: float = DEFAULT_THRESHOLD) -> SRMResult:
    """Chi-square test of ``observed`` units per variant against ``weights`` (any positive scale).

    A variant missing from ``observed`` has 0 units. Units in a variant with weight 0 (or one that
    is not in ``weights``) are an outright mismatch: chi2 = inf, p = 0.
    """
    for name, w in weights.items():
        if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
            raise ValueError(f"weights[{name!r}]: must be a finite number >= 0, got {w!r}")
    for name, count in observed.items():
        if not (isinstance(count, int) and count >= 0):
            raise ValueError(f"observed[{name!r}]: must be an integer >= 0, got {count!r}")
    total_weight = float(sum(weights.values()))
    if total_weight <= 0:
        raise ValueError("weights: at least one variant needs a positive weight")
    names = list(weights) + [name for name in observed if name not in weights]
    counts = {name: int(observed.get(name, 0)) for name in names}
    total = sum(counts.values())
    expected = {name: total * weights.get(name, 0.0) / total_weight for name in names}
    if total == 0:
        return SRMResult(chi2=0.0, p_value=1.0, warn=False, observed=counts, expected=expected)
    if any(expected[name] == 0 and counts[name] > 0 for name in names):
        return SRMResult(chi2=math.inf, p_value=0.0, warn=True, observed=counts, expected=expected)
    tested = [name for name in names if expected[name] > 0]
    if len(tested) < 2:
        return SRMResult(chi2=0.0, p_value=1.0, warn=False, observed=counts, expected=expected)
    chi2 = sum((counts[name] - expected[name]) ** 2 / expected[name] for name in tested)
    p_value = float(sps.chi2.sf(chi2, len(tested) - 1))
    return SRMResult(chi2=float(chi2), p_value=p_value, warn=p_value < threshold, observed=counts, expected=expected)
