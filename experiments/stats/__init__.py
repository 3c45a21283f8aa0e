"""Experiment statistics, pure (numpy/scipy, no Django): from per-variant sufficient statistics to results.

Entry points: ``compare`` (one treatment x one metric), ``analyze_experiment`` (all of them, Holm,
SRM, guardrails, verdict), ``srm_check``, ``holm``, ``sample_size``, ``thompson_weights``,
``factorial_effects`` and ``verdict``. Results are frozen dataclasses; call ``.to_dict()`` for a
JSON-safe dict (undefined numbers, which are NaN in the dataclasses, become None).

Sequential p-values are always-valid as computed; a caller that refreshes them must show the
running minimum over refreshes (see ``experiments.stats.sequential``).
"""

from experiments.stats.analysis import analyze_experiment, compare, verdict
from experiments.stats.bandit import thompson_weights
from experiments.stats.corrections import holm
from experiments.stats.factorial import factorial_effects
from experiments.stats.power import sample_size
from experiments.stats.sequential import tau_for_sample_size
from experiments.stats.srm import srm_check
from experiments.stats.types import (
    Comparison,
    ExperimentAnalysis,
    FactorEffect,
    GuardrailBreach,
    RatioStats,
    SampleStats,
    SRMResult,
)

__all__ = [
    "Comparison",
    "ExperimentAnalysis",
    "FactorEffect",
    "GuardrailBreach",
    "RatioStats",
    "SRMResult",
    "SampleStats",
    "analyze_experiment",
    "compare",
    "factorial_effects",
    "holm",
    "sample_size",
    "srm_check",
    "tau_for_sample_size",
    "thompson_weights",
    "verdict",
]
