"""What the privacy capability stores: traits kept encrypted at rest."""

from django.db import models


class EncryptedTrait(models.Model):
    """A trait a source chose to keep (e.g. first name for greetings), stored only as a Fernet token."""

    profile = models.ForeignKey("tracking.Profile", on_delete=models.CASCADE, related_name="encrypted_traits")
    name = models.CharField(max_length=100)
    token = models.TextField(help_text="Fernet token; readable only with FIELD_ENCRYPTION_KEYS.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "name"], name="encrypted_trait_unique")]

    def __str__(self) -> str:
        return f"{self.name} (encrypted)"
