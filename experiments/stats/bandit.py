"""Thompson-sampling allocation for a conversion bandit.

Each arm's conversion rate gets a Beta(1 + successes, 1 + failures) posterior; an arm's weight is
the probability that it is the best arm, estimated from ``draws`` joint posterior samples. Serving
traffic in proportion to these weights is Thompson sampling. Pass ``seed`` for weights that do
not change between two refreshes of the same data.
"""

from __future__ import annotations

import numpy as np


def thompson_weights(
    *, successes: dict[str, int], trials: dict[str, int], draws: int = 10000, seed: int | None = None
) -> dict[str, float]:
    if set(successes) != set(trials):
        raise ValueError(f"successes and trials must name the same arms, got {sorted(successes)} and {sorted(trials)}")
    if not successes:
        raise ValueError("successes: need at least one arm")
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws: must be a positive integer, got {draws!r}")
    arms = list(trials)
    for arm in arms:
        s, n = successes[arm], trials[arm]
        if not (0 <= s <= n):
            raise ValueError(f"successes[{arm!r}]: must be between 0 and trials ({n}), got {s}")
    a = np.array([1.0 + successes[arm] for arm in arms])
    b = np.array([1.0 + trials[arm] - successes[arm] for arm in arms])
    rng = np.random.default_rng(seed)
    samples = rng.beta(a[:, None], b[:, None], size=(len(arms), draws))
    wins = np.bincount(np.argmax(samples, axis=0), minlength=len(arms))
    return {arm: float(wins[i]) / draws for i, arm in enumerate(arms)}
