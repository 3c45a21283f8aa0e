"""Factorial main effects from cell statistics equal the OLS estimates on the raw data."""

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.stats import SampleStats, factorial_effects

RANKING = ["popular", "personal", "trending"]
FRESHNESS = ["off", "on"]


def simulate(seed: int, sizes: dict[tuple[str, str], int], kind: str = "mean") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    effect_r = {"popular": 0.0, "personal": 0.6, "trending": 0.2}
    effect_f = {"off": 0.0, "on": 0.3}
    rows = []
    for (r, f), n in sizes.items():
        mu = 5.0 + effect_r[r] + effect_f[f] + (0.4 if (r, f) == ("personal", "on") else 0.0)
        if kind == "mean":
            y = rng.gamma(2.0, mu / 2.0, n)
        else:
            y = rng.binomial(1, mu / 20.0, n).astype(float)
        rows.append(pd.DataFrame({"ranking": r, "freshness": f, "y": y}))
    return pd.concat(rows, ignore_index=True)


def cells_of(frame: pd.DataFrame) -> dict[tuple[str, str], SampleStats]:
    cells = {}
    for r, f in itertools.product(RANKING, FRESHNESS):
        y = frame.loc[(frame.ranking == r) & (frame.freshness == f), "y"].to_numpy()
        cells[(r, f)] = SampleStats(n=len(y), sum=float(y.sum()), sum_sq=float((y * y).sum()))
    return cells


def ols_effect(frame: pd.DataFrame, factor: str, level: str) -> tuple[float, float]:
    """Coefficient and HC2 standard error of ``level`` in the saturated model, others sum-coded."""
    if factor == "ranking":
        formula = "y ~ C(ranking, Treatment('popular')) * C(freshness, Sum)"
        name = f"C(ranking, Treatment('popular'))[T.{level}]"
    else:
        formula = "y ~ C(freshness, Treatment('off')) * C(ranking, Sum)"
        name = f"C(freshness, Treatment('off'))[T.{level}]"
    fit = smf.ols(formula, data=frame).fit(cov_type="HC2")
    return fit.params[name], fit.bse[name]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(20, 600), min_size=6, max_size=6))
def test_main_effects_equal_saturated_ols_with_robust_errors_even_when_cells_are_unbalanced(seed, sizes):
    frame = simulate(seed, dict(zip(itertools.product(RANKING, FRESHNESS), sizes, strict=True)))
    effects = factorial_effects(cells=cells_of(frame), factors=["ranking", "freshness"], kind="mean")
    assert [(e.factor, e.level, e.baseline_level) for e in effects] == [
        ("ranking", "personal", "popular"),
        ("ranking", "trending", "popular"),
        ("freshness", "on", "off"),
    ]
    for e in effects:
        coef, se = ols_effect(frame, e.factor, e.level)
        assert e.effect == pytest.approx(coef, rel=1e-9, abs=1e-9)
        # The interval is symmetric and uses t with Welch–Satterthwaite df: its half-width over the HC2 se
        # is a t quantile between the normal one and the one with the smallest cell's df.
        assert e.ci[1] - e.effect == pytest.approx(e.effect - e.ci[0], rel=1e-9)
        assert sps.norm.isf(0.025) - 1e-9 < (e.ci[1] - e.effect) / se < sps.t.isf(0.025, min(sizes) - 1)


def test_balanced_design_main_effect_equals_pooling_over_the_other_factor():
    frame = simulate(3, dict.fromkeys(itertools.product(RANKING, FRESHNESS), 500))
    effects = factorial_effects(cells=cells_of(frame), factors=["ranking", "freshness"], kind="mean")
    fresh = next(e for e in effects if e.factor == "freshness")
    pooled_on = frame.loc[frame.freshness == "on", "y"].mean()
    pooled_off = frame.loc[frame.freshness == "off", "y"].mean()
    assert fresh.effect == pytest.approx(pooled_on - pooled_off, rel=1e-9)
    assert fresh.units == 1500 and fresh.baseline_units == 1500
    assert fresh.rel_effect == pytest.approx(pooled_on / pooled_off - 1, rel=1e-9)
    personal = next(e for e in effects if e.level == "personal")
    assert personal.p_value < 0.05 and personal.effect > 0


def test_conversion_factorial_uses_normal_intervals():
    frame = simulate(5, dict.fromkeys(itertools.product(RANKING, FRESHNESS), 3000), kind="conversion")
    effects = factorial_effects(cells=cells_of(frame), factors=["ranking", "freshness"], kind="conversion")
    for e in effects:
        coef, se = ols_effect(frame, e.factor, e.level)
        assert e.effect == pytest.approx(coef, rel=1e-9, abs=1e-12)
        assert e.ci == pytest.approx((coef - 1.959964 * se, coef + 1.959964 * se), rel=1e-5)


def test_levels_argument_sets_the_baseline_and_an_empty_cell_falls_back_to_pooling():
    frame = simulate(8, dict.fromkeys(itertools.product(RANKING, FRESHNESS), 300))
    cells = cells_of(frame)
    effects = factorial_effects(
        cells=cells,
        factors=["ranking", "freshness"],
        kind="mean",
        levels={"ranking": ["trending", "popular", "personal"]},
    )
    assert {e.baseline_level for e in effects if e.factor == "ranking"} == {"trending"}
    cells[("trending", "on")] = SampleStats(n=0, sum=0.0, sum_sq=0.0)
    effects = factorial_effects(cells=cells, factors=["ranking", "freshness"], kind="mean")
    fresh = next(e for e in effects if e.factor == "freshness")
    kept = frame[~((frame.ranking == "trending") & (frame.freshness == "on"))]
    pooled = kept.loc[kept.freshness == "on", "y"].mean() - kept.loc[kept.freshness == "off", "y"].mean()
    assert fresh.effect == pytest.approx(pooled, rel=1e-9)


def test_bad_cells_are_rejected_with_the_cell_named():
    with pytest.raises(ValueError, match=r"cells\[\('a',\)\]"):
        factorial_effects(cells={("a",): SampleStats(n=1, sum=1, sum_sq=1)}, factors=["x", "y"], kind="mean")
    with pytest.raises(ValueError, match="kind"):
        factorial_effects(cells={}, factors=["x"], kind="ratio")
