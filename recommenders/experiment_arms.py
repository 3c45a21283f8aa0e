"""Recommender experiments: the recommendations API asks here which configuration a visitor gets.

An experiment whose variants carry the payload key ``recommender_config`` (e.g. control
``{"recommender_config": "default"}``, treatment ``{"recommender_config": "ease-tuned"}``) A/B tests
recommender configurations: the visitor is assigned like any experiment unit (sticky, layered,
targeted, exposure logged at first use) and served by their variant's configuration; the served list
records ``experiment:variant``, and the impression and click events that carry its token back make
CTR and conversion per variant measurable without any client work.

The check costs nothing while no such experiment runs: the source's running experiments are compiled
per process (see `experiments.selectors.running_specs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PAYLOAD_KEY = "recommender_config"


@dataclass(frozen=True, slots=True)
class Arm:
    config_key: str
    experiment: str
    variant: str

    @property
    def label(self) -> str:
        return f"{self.experiment}:{self.variant}"


def recommender_arm(*, source_id: int, profile_id: int | None) -> Arm | None:
    """The recommender configuration a running experiment gives this visitor, or None (no such
    experiment, visitor not targeted, or outside its traffic share)."""
    if profile_id is None:
        return None
    from experiments.selectors import running_specs
    from experiments.services.assignment import experiment_variant_for
    from recommenders.serving.cache import CACHE_ERRORS

    try:
        specs = running_specs(source_id=source_id)
        if not any(PAYLOAD_KEY in (v.payload or {}) for spec in specs for v in spec.variants):
            return None
        found = experiment_variant_for(profile_id=profile_id, kind=PAYLOAD_KEY, source_id=source_id)
    except CACHE_ERRORS:
        # Redis down: recommendations still answer, with the placement's own configuration (the
        # visitor is assigned on a later request; nothing is recorded under a variant meanwhile).
        logger.warning("cache unreachable: recommender experiments skipped for this request")
        return None
    if found is None:
        return None
    experiment, variant = found
    config_key = (variant.payload or {}).get(PAYLOAD_KEY)
    if not isinstance(config_key, str) or not config_key:
        return None
    return Arm(config_key=config_key, experiment=experiment.key, variant=variant.key)
