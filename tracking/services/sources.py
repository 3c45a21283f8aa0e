"""Sources and their keys: creation, secret keys shown once, revocation."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from tracking import cache_keys
from tracking.keys import secret_key_generate, write_key_generate
from tracking.models import SecretKey, Source


def source_create(*, name: str, allowed_origins: list[str] | None = None, consent_regime: str = "opt_in") -> Source:
    return Source.objects.create(
        name=name, allowed_origins=[o.rstrip("/") for o in allowed_origins or []], consent_regime=consent_regime
    )


def source_update(*, source: Source, fields: list[str] | None = None) -> Source:
    """Save a changed source and drop its cached look-up, so origins and activity apply at once."""
    source.allowed_origins = [origin.rstrip("/") for origin in source.allowed_origins or []]
    source.save(update_fields=fields)
    transaction.on_commit(lambda: cache_keys.forget_write_key(source.write_key))
    return source


def secret_key_create(*, source: Source, name: str = "") -> tuple[SecretKey, str]:
    """A new secret key; the plaintext is returned here once and never stored."""
    plaintext, prefix, key_hash = secret_key_generate()
    key = SecretKey.objects.create(source=source, name=name, prefix=prefix, key_hash=key_hash)
    return key, plaintext


def secret_key_revoke(*, key: SecretKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    transaction.on_commit(lambda: cache_keys.forget_secret(key.key_hash))


def write_key_rotate(*, source: Source) -> str:
    old = source.write_key
    source.write_key = write_key_generate()
    source.save(update_fields=["write_key"])
    transaction.on_commit(lambda: cache_keys.forget_write_key(old))
    return source.write_key
