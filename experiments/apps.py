"""App config for experiments: sticky assignment, exposure logging and statistical analysis."""

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from experiments.models import Assignment, Exposure
        from experiments.services import (
            assignment,  # noqa: F401 - connects the profile-merge receiver
            rollup,  # noqa: F401 - connects the exposure pre-delete receiver
        )
        from privacy import registry

        registry.register(Assignment, label="experiment_assignments")
        registry.register(Exposure, label="experiment_exposures")
