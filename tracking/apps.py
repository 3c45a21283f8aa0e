"""App config for event collection."""

from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Collection"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What collection holds per profile, for data-subject export and erasure.
        from privacy import registry
        from tracking.models import Event, Identity, Profile, ProfileEventStat, ProfileMerge

        registry.register(Event, label="events")
        registry.register(Identity, label="identities")
        registry.register(ProfileEventStat, label="event_stats")
        registry.register(ProfileMerge, profile_field="into", label="merged_profiles")
        registry.register(Profile, profile_field="pk", label="profile")
