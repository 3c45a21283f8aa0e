"""App config for privacy and consent."""

from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "privacy"
    verbose_name = "Privacy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from privacy import (
            registry,
            services,  # noqa: F401 - connects the profile-merge receiver
        )
        from privacy.models import ConsentRecord, ConsentState, EncryptedTrait
        from privacy.selectors import encrypted_trait_export

        registry.register(EncryptedTrait, label="encrypted_traits", export=encrypted_trait_export)
        registry.register(ConsentRecord, label="consent_records")
        registry.register(ConsentState, label="consent_states")
