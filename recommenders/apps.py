"""App config for recommenders: catalogue, interaction matrix, training, registry and serving."""

from django.apps import AppConfig


class RecommendersConfig(AppConfig):
    name = "recommenders"
    verbose_name = "Recommendations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from privacy import registry
        from recommenders import receivers  # noqa: F401 - stub items from events, rows follow profile merges
        from recommenders.models import Feedback, RecommendationServed
        from recommenders.serving import receivers as serving_receivers  # noqa: F401 - stale-visitor stamps
        from recommenders.serving import served  # noqa: F401 - registers the served-list flush task

        # What recommendations hold per profile, for data-subject export and erasure.
        registry.register(Feedback, label="recommendation_feedback")
        registry.register(RecommendationServed, label="recommendations_served")
        registry.register_cache_cleaner(profile_cache_clean)


def profile_cache_clean(profile) -> None:
    """Erasure: the profile's precomputed lists go with it."""
    from recommenders.store import toplists_forget_profile

    toplists_forget_profile(profile_id=profile.pk)
