"""App config for segments: rule definitions, real-time and batch membership, ML scores."""

from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"
    verbose_name = "Segments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from privacy import registry
        from segments import receivers  # noqa: F401 - connects events_stored and profile_merged
        from segments.models import ProfileScore, SegmentMembership, SegmentMembershipChange
        from segments.selectors import membership_change_export, membership_export

        # What segments hold per profile, for data-subject export and erasure.
        registry.register(SegmentMembership, label="segment_memberships", export=membership_export)
        registry.register(SegmentMembershipChange, label="segment_membership_history", export=membership_change_export)
        registry.register(ProfileScore, label="profile_scores")
