"""Compare variants against control and summarise an experiment: the entry points of the package.

``compare`` is one treatment x one metric; ``analyze_experiment`` runs every comparison, applies
Holm's correction across variants x metrics, checks the sample ratio and the guardrails, and writes
the verdict. Both work from sufficient statistics only: O(variants x metrics), no raw data.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import replace

from experiments.stats.bayesian import beta_chance_and_loss, normal_chance_and_loss
from experiments.stats.corrections import holm
from experiments.stats.estimates import (
    KINDS,
    Estimate,
    check_stats,
    cuped_estimate,
    cuped_theta,
    estimate,
    sample_variance_of_mean,
)
from experiments.stats.frequentist import TestResult, two_proportion_test, welch_test, z_test
from experiments.stats.sequential import DEFAULT_TUNING_UNITS, msprt_p_value, tau_for_sample_size
from experiments.stats.srm import DEFAULT_THRESHOLD, srm_check
from experiments.stats.types import (
    Comparison,
    ExperimentAnalysis,
    GuardrailBreach,
    RatioStats,
    SampleStats,
)

GUARDRAIL_DIRECTIONS = ("increase_is_bad", "decrease_is_bad")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: must be in (0, 1), got {alpha!r}")


def _compare(
    *,
    metric: str,
    kind: str,
    control: SampleStats | RatioStats,
    treatment: SampleStats | RatioStats,
    variant: str,
    alpha: float,
    theta: float | None,
    x_mean: float,
    tau: float | None,
    higher_is_better: bool = True,
) -> Comparison:
    """One comparison; ``theta`` (CUPED slope, None = no adjustment) is decided by the caller."""
    est_c, est_t = estimate(kind, control), estimate(kind, treatment)
    use_cuped = theta is not None and kind != "ratio"
    variance_reduction = 0.0
    if use_cuped:
        adj_c = cuped_estimate(control, theta=theta, x_mean=x_mean)  # type: ignore[arg-type]
        adj_t = cuped_estimate(treatment, theta=theta, x_mean=x_mean)  # type: ignore[arg-type]
        raw = sample_variance_of_mean(control) + sample_variance_of_mean(treatment)  # type: ignore[arg-type]
        adjusted = adj_c.var_mean + adj_t.var_mean
        if math.isfinite(raw) and raw > 0 and math.isfinite(adjusted):
            variance_reduction = 1.0 - adjusted / raw
        result: TestResult = (
            welch_test(adj_c, adj_t, alpha=alpha) if kind == "mean" else z_test(adj_c, adj_t, alpha=alpha)
        )
        test_c, test_t = adj_c, adj_t
    else:
        if kind == "conversion":
            result = two_proportion_test(est_c, est_t, alpha=alpha)
        elif kind == "mean":
            result = welch_test(est_c, est_t, alpha=alpha)
        else:
            result = z_test(est_c, est_t, alpha=alpha)
        test_c, test_t = est_c, est_t

    p_seq = max(_sequential_p(test_c, test_t, alpha=alpha, tau=tau), result.p_value)

    # "Better" is higher unless told otherwise; for lower-is-better the roles of the two arms swap:
    # P(T < C) = P(C > T) and the loss of shipping T is E[max(T - C, 0)].
    if kind == "conversion" and not use_cuped and control.n > 0 and treatment.n > 0:  # type: ignore[union-attr]
        arms = [(control.sum, control.n), (treatment.sum, treatment.n)]  # type: ignore[union-attr]
        (worse_x, worse_n), (better_x, better_n) = arms if higher_is_better else arms[::-1]
        chance, loss = beta_chance_and_loss(
            control_successes=worse_x,
            control_trials=worse_n,
            treatment_successes=better_x,
            treatment_trials=better_n,
        )
    else:
        chance, loss = normal_chance_and_loss(result.diff if higher_is_better else -result.diff, result.se)

    return Comparison(
        variant=variant,
        metric=metric,
        kind=kind,
        units=treatment.n,
        control_units=control.n,
        value=est_t.mean,
        control_value=est_c.mean,
        abs_uplift=result.diff,
        abs_ci=result.abs_ci,
        rel_uplift=result.rel,
        rel_ci=result.rel_ci,
        p_value=result.p_value,
        p_value_adjusted=None,
        p_value_sequential=p_seq,
        chance_to_beat=chance,
        expected_loss=loss,
        cuped=use_cuped,
        variance_reduction=variance_reduction,
        significant=result.p_value < alpha,
        higher_is_better=higher_is_better,
    )


def _sequential_p(control: Estimate, treatment: Estimate, *, alpha: float, tau: float | None) -> float:
    std_tau = tau if tau is not None else tau_for_sample_size(n=DEFAULT_TUNING_UNITS, alpha=alpha)
    if std_tau <= 0 or not math.isfinite(std_tau):
        raise ValueError(f"tau: must be a positive standardised effect size, got {tau!r}")
    unit_var = (control.unit_var + treatment.unit_var) / 2.0
    return msprt_p_value(
        diff=treatment.mean - control.mean,
        var=control.var_mean + treatment.var_mean,
        tau_abs=std_tau * math.sqrt(unit_var) if math.isfinite(unit_var) else math.nan,
    )


def _theta_for(kind: str, stats: list[SampleStats | RatioStats], cuped: bool) -> tuple[float | None, float]:
    """Pooled CUPED slope over the given variants and the pooled covariate mean they centre on."""
    if not cuped or kind == "ratio":
        return None, 0.0
    samples = [s for s in stats if isinstance(s, SampleStats)]
    theta = cuped_theta(samples)
    n = sum(s.n for s in samples)
    x_mean = sum(s.cov_sum for s in samples) / n if n else 0.0
    return theta, x_mean


def compare(
    *,
    metric: str,
    kind: str,
    control: SampleStats | RatioStats,
    treatment: SampleStats | RatioStats,
    variant: str,
    alpha: float = 0.05,
    cuped: bool = False,
    tau: float | None = None,
    higher_is_better: bool = True,
) -> Comparison:
    """Compare ``treatment`` (named ``variant``) with ``control`` on one metric.

    ``kind`` is "conversion" (SampleStats with y in {0, 1}), "mean" (SampleStats) or "ratio"
    (RatioStats). With ``cuped`` the CUPED slope is pooled over these two variants (ratio metrics
    carry no covariate and are never adjusted). ``tau`` is the sequential test's standardised
    mixing sd (see ``experiments.stats.sequential``). ``higher_is_better=False`` (bounce rate,
    latency) makes ``chance_to_beat`` the chance of being lower and ``expected_loss`` the expected
    excess; p-values and intervals are two-sided and do not depend on it.
    """
    _check_alpha(alpha)
    check_stats(kind, control, f"metrics[{metric!r}] control")
    check_stats(kind, treatment, f"metrics[{metric!r}][{variant!r}]")
    theta, x_mean = _theta_for(kind, [control, treatment], cuped)
    return _compare(
        metric=metric,
        kind=kind,
        control=control,
        treatment=treatment,
        variant=variant,
        alpha=alpha,
        theta=theta,
        x_mean=x_mean,
        tau=tau,
        higher_is_better=higher_is_better,
    )


def analyze_experiment(
    *,
    metrics: Mapping[str, tuple[str, Mapping[str, SampleStats | RatioStats]]],
    control: str,
    alpha: float = 0.05,
    cuped: bool = False,
    guardrails: Mapping[str, str] | None = None,
    weights: Mapping[str, float] | None = None,
    units: Mapping[str, int] | None = None,
    srm_threshold: float = DEFAULT_THRESHOLD,
    tau: float | None = None,
    lower_is_better: Collection[str] = (),
) -> ExperimentAnalysis:
    """Analyse an experiment: every non-control variant against ``control`` on every metric.

    ``metrics``: name -> (kind, {variant: stats}); the first metric that is not a guardrail is the
    primary one (the verdict leads with it). ``guardrails``: metric name -> "increase_is_bad" or
    "decrease_is_bad". Holm's correction runs over the goal metrics (all but guardrails) x
    variants; guardrail comparisons are judged unadjusted (p < alpha in the bad direction), because
    for a safety check a missed harm costs more than a false alarm. ``weights`` are the planned
    variant weights (equal if omitted) and ``units`` the exposed units per variant (by default the
    units of the first metric) for the SRM check. ``lower_is_better`` names goal metrics where a
    decrease is the improvement (a guardrail's direction already says which way is bad).
    """
    _check_alpha(alpha)
    guardrails = dict(guardrails or {})
    if not metrics:
        raise ValueError("metrics: need at least one metric")
    for name, direction in guardrails.items():
        if name not in metrics:
            raise ValueError(f"guardrails[{name!r}]: no metric of that name in metrics")
        if direction not in GUARDRAIL_DIRECTIONS:
            allowed = ", ".join(GUARDRAIL_DIRECTIONS)
            raise ValueError(f"guardrails[{name!r}]: must be one of {allowed}, got {direction!r}")

    variants: list[str] = []
    comparisons: list[Comparison] = []
    for name, spec in metrics.items():
        if not (isinstance(spec, tuple | list) and len(spec) == 2):
            raise ValueError(f"metrics[{name!r}]: must be a (kind, {{variant: stats}}) pair")
        kind, by_variant = spec
        if kind not in KINDS:
            raise ValueError(f"metrics[{name!r}]: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if control not in by_variant:
            raise ValueError(f"metrics[{name!r}]: no statistics for the control variant {control!r}")
        for variant, stats in by_variant.items():
            check_stats(kind, stats, f"metrics[{name!r}][{variant!r}]")
            if variant not in variants:
                variants.append(variant)
        theta, x_mean = _theta_for(kind, list(by_variant.values()), cuped)
        for variant, stats in by_variant.items():
            if variant == control:
                continue
            comparisons.append(
                _compare(
                    metric=name,
                    kind=kind,
                    control=by_variant[control],
                    treatment=stats,
                    variant=variant,
                    alpha=alpha,
                    theta=theta,
                    x_mean=x_mean,
                    tau=tau,
                    higher_is_better=(
                        guardrails[name] == "decrease_is_bad" if name in guardrails else name not in lower_is_better
                    ),
                )
            )

    family = [i for i, c in enumerate(comparisons) if c.metric not in guardrails]
    adjusted = holm([comparisons[i].p_value for i in family])
    for i, p_adj in zip(family, adjusted, strict=True):
        comparisons[i] = replace(comparisons[i], p_value_adjusted=p_adj, significant=p_adj < alpha)

    breaches = []
    for c in comparisons:
        direction = guardrails.get(c.metric)
        if direction is None or not c.p_value < alpha:
            continue
        worse = c.abs_uplift > 0 if direction == "increase_is_bad" else c.abs_uplift < 0
        if worse:
            breaches.append(
                GuardrailBreach(
                    metric=c.metric,
                    variant=c.variant,
                    direction=direction,
                    abs_uplift=c.abs_uplift,
                    rel_uplift=c.rel_uplift,
                    p_value=c.p_value,
                )
            )

    if units is None:
        first = next(iter(metrics.values()))[1]
        units = {variant: stats.n for variant, stats in first.items()}
    planned = dict(weights) if weights is not None else {variant: 1.0 for variant in variants}
    srm = srm_check({k: int(v) for k, v in units.items()}, planned, threshold=srm_threshold)

    primary = next((name for name in metrics if name not in guardrails), None)
    analysis = ExperimentAnalysis(
        control=control,
        alpha=alpha,
        comparisons=comparisons,
        srm=srm,
        guardrail_breaches=breaches,
        verdict="",
        primary_metric=primary,
        guardrails=guardrails,
    )
    return replace(analysis, verdict=verdict(analysis))


# --- verdict ---------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _num(x: float) -> str:
    return f"{x:+.4g}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _effect(c: Comparison, level: float) -> tuple[str, str]:
    """("+25.0%", "95% CI +4.9% to +45.1%"), falling back to absolute numbers when relative is undefined."""
    if math.isfinite(c.rel_uplift) and all(math.isfinite(v) for v in c.rel_ci):
        return _pct(c.rel_uplift), f"{level:.0f}% CI {_pct(c.rel_ci[0])} to {_pct(c.rel_ci[1])}"
    if math.isfinite(c.abs_uplift) and all(math.isfinite(v) for v in c.abs_ci):
        return _num(c.abs_uplift), f"{level:.0f}% CI {_num(c.abs_ci[0])} to {_num(c.abs_ci[1])}"
    return "n/a", "not enough data for an interval"


def verdict(analysis: ExperimentAnalysis) -> str:
    """Plain language, one sentence per finding, SRM first (it invalidates everything else)."""
    level = (1.0 - analysis.alpha) * 100.0
    parts: list[str] = []
    srm = analysis.srm
    if srm.warn:
        split = ", ".join(f"{k} {v}" for k, v in srm.observed.items())
        parts.append(
            f"Sample ratio mismatch ({_p(srm.p_value)}): units split {split}, not as planned; "
            "assignment or exposure logging is losing units, so do not trust these results until the cause is found"
        )
    guardrail_metrics = set(analysis.guardrails) | {b.metric for b in analysis.guardrail_breaches}
    for c in analysis.comparisons:
        if c.metric in guardrail_metrics:
            continue
        if c.units < 2 or c.control_units < 2:
            parts.append(f"{c.variant} vs {analysis.control} on {c.metric}: not enough data yet")
            continue
        effect, ci = _effect(c, level)
        p = c.p_value_adjusted if c.p_value_adjusted is not None else c.p_value
        p_text = f"Holm-adjusted {_p(p)}" if c.p_value_adjusted is not None else _p(p)
        if c.cuped:
            p_text += f", CUPED removed {c.variance_reduction:.0%} of the variance"
        better = c.abs_uplift > 0 if c.higher_is_better else c.abs_uplift < 0
        if c.significant and better:
            parts.append(f"{c.variant} beats {analysis.control} on {c.metric} by {effect} ({ci}, {p_text})")
        elif c.significant and c.abs_uplift != 0:
            parts.append(f"{c.variant} is worse than {analysis.control} on {c.metric} by {effect} ({ci}, {p_text})")
        else:
            parts.append(
                f"{c.variant} shows no significant difference from {analysis.control} on {c.metric} "
                f"({effect}, {ci}, {p_text})"
            )
    if analysis.guardrails and not analysis.guardrail_breaches:
        parts.append(f"Guardrails hold ({', '.join(analysis.guardrails)})")
    for b in analysis.guardrail_breaches:
        verb = "increases" if b.direction == "increase_is_bad" else "decreases"
        amount = _pct(b.rel_uplift) if math.isfinite(b.rel_uplift) else _num(b.abs_uplift)
        parts.append(f"Guardrail breached: {b.variant} {verb} {b.metric} by {amount} ({_p(b.p_value)})")
    if not parts:
        return "No comparisons yet: the experiment needs a control and at least one other variant."
    return "; ".join(parts) + "."
