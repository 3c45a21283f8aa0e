"""Reads of the privacy capability."""

from __future__ import annotations

from privacy.crypto import InvalidToken, decrypt
from privacy.models import EncryptedTrait


def encrypted_traits_read(*, profile_id: int) -> dict[str, str | None]:
    """A profile's kept traits in clear (None where no configured key can decrypt the token)."""
    values: dict[str, str | None] = {}
    for name, token in EncryptedTrait.objects.filter(profile_id=profile_id).values_list("name", "token"):
        try:
            values[name] = decrypt(token)
        except InvalidToken:
            values[name] = None
    return values


def encrypted_trait_export(row: EncryptedTrait) -> dict:
    """What a person receives of an encrypted trait: its name and value in clear."""
    try:
        value = decrypt(row.token)
    except InvalidToken:
        value = None
    return {"name": row.name, "value": value, "updated_at": row.updated_at}
