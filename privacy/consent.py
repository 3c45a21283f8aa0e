"""The consent rule, pure: may an event for a purpose be collected, given the regime and the visitor's state?"""

from __future__ import annotations

from dataclasses import dataclass

OPT_IN, OPT_OUT = "opt_in", "opt_out"
GPC_PURPOSES = frozenset({"marketing"})  # Sec-GPC: opting out of sale/sharing and marketing


@dataclass(frozen=True, slots=True)
class State:
    granted: bool
    policy_version: int


def collection_allowed(
    *, regime: str, policy_version: int, purpose: str, required: bool, state: State | None, gpc: bool
) -> bool:
    """Opt-in: only with a grant at the current policy version. Opt-out: unless refused. Required
    purposes always; Global Privacy Control refuses marketing whatever else was said."""
    if required:
        return True
    if gpc and purpose in GPC_PURPOSES:
        return False
    if regime == OPT_IN:
        return state is not None and state.granted and state.policy_version >= policy_version
    return state is None or state.granted
