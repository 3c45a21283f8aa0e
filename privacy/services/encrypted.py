"""Encrypted traits: store, move on merge, re-encrypt with a new key."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from privacy.crypto import encrypt, fernet
from privacy.models import EncryptedTrait
from tracking.models import Profile
from tracking.services.identity import profile_merged

ROTATE_CHUNK = 500


def encrypted_traits_store(*, values: dict[int, dict[str, object]]) -> None:
    """Encrypt and upsert traits per profile id ({profile_id: {name: value}}); newer values replace older."""
    now = timezone.now()
    rows = [
        EncryptedTrait(profile_id=profile_id, name=name[:100], token=encrypt(str(value)), updated_at=now)
        for profile_id, traits in sorted(values.items())
        for name, value in sorted(traits.items())
        if value is not None
    ]
    if rows:
        EncryptedTrait.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["profile", "name"], update_fields=["token", "updated_at"]
        )


@receiver(profile_merged, sender=Profile, dispatch_uid="privacy.encrypted_traits_merge")
def encrypted_traits_merge(sender, *, source_id: int, target_id: int, **kwargs) -> None:
    """A merged profile's encrypted traits follow it; the surviving profile's own values win."""
    kept = set(EncryptedTrait.objects.filter(profile_id=target_id).values_list("name", flat=True))
    EncryptedTrait.objects.filter(profile_id=source_id).exclude(name__in=kept).update(profile_id=target_id)
    EncryptedTrait.objects.filter(profile_id=source_id).delete()


def encryption_keys_rotate() -> int:
    """Re-encrypt every stored token with the first FIELD_ENCRYPTION_KEYS key; returns how many."""
    box = fernet()
    done, last = 0, 0
    while True:
        with transaction.atomic():
            chunk = list(EncryptedTrait.objects.select_for_update().filter(pk__gt=last).order_by("pk")[:ROTATE_CHUNK])
            if not chunk:
                return done
            for row in chunk:
                row.token = box.rotate(row.token.encode()).decode()
            EncryptedTrait.objects.bulk_update(chunk, ["token"])
        done += len(chunk)
        last = chunk[-1].pk
