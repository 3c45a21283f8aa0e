"""Always-valid p-values from the mixture sequential probability ratio test (mSPRT).

Johari, Koomen, Pekelis & Walsh, "Always Valid Inference" (2017/2022), with the normal
approximation: the difference estimate d has variance V (from the same standard errors as the
fixed-horizon test), and the effect gets a N(0, τ²) mixing distribution. The mixture likelihood
ratio against "no effect" is

    Λ = sqrt(V / (V + τ²)) · exp(d² τ² / (2 V (V + τ²)))

and p = min(1, 1 / Λ). Under H0, P(p ever drops below α) <= α however often it is computed, so
peeking is safe. Two rules for callers:

- Keep the running minimum: recompute p whenever data arrives and show min(previous, current).
  The minimum is itself always-valid and never goes up, which is what "safe to peek" promises.
- τ must be fixed before looking at data. It is given as a standardised effect (in units of the
  per-unit standard deviation σ, pooled over the two arms, a plug-in as in Johari et al.), so one
  value fits every metric. ``tau_for_sample_size`` picks the τ for which the test is most
  sensitive when each arm has n units; the default is tuned for 10,000 units per arm.

We also never report a sequential p below the fixed-horizon p of the same data (the max of the
two is still always-valid): with few units the t-based fixed test can be the more cautious one.
"""

from __future__ import annotations

import math

DEFAULT_TUNING_UNITS = 10_000


def tau_for_sample_size(*, n: int, alpha: float = 0.05) -> float:
    """Standardised τ that makes the rejection boundary tightest when both arms have ``n`` units.

    With V = 2σ²/n and s = τ²/V, the boundary on |d| / sqrt(V) is minimised where
    s = 2 ln(1/α) + ln(1 + s) (solved by fixed-point iteration), so τ = σ · sqrt(2 s / n).
    """
    if n <= 0:
        raise ValueError(f"n: must be a positive number of units per arm, got {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha}")
    log_inv_alpha = math.log(1.0 / alpha)
    s = 2.0 * log_inv_alpha
    for _ in range(100):
        s_next = 2.0 * log_inv_alpha + math.log1p(s)
        if abs(s_next - s) < 1e-12:
            break
        s = s_next
    return math.sqrt(2.0 * s / n)


def msprt_p_value(*, diff: float, var: float, tau_abs: float) -> float:
    """Always-valid p-value for a difference ``diff`` with variance ``var`` and mixing sd ``tau_abs``."""
    if not math.isfinite(diff) or not math.isfinite(var) or not math.isfinite(tau_abs):
        return 1.0
    if var <= 0.0:
        return 1.0 if diff == 0.0 else 0.0
    if tau_abs <= 0.0:
        return 1.0
    t2 = tau_abs * tau_abs
    log_lr = 0.5 * math.log(var / (var + t2)) + diff * diff * t2 / (2.0 * var * (var + t2))
    return min(1.0, math.exp(-log_lr)) if log_lr > 0 else 1.0
