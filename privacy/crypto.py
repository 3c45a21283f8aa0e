"""Encryption at rest of the few traits a business chooses to keep (Fernet / MultiFernet)."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "encrypt", "fernet"]


def _keys() -> list[bytes]:
    keys = [key.strip().encode() for key in settings.FIELD_ENCRYPTION_KEYS if key.strip()]
    if keys:
        return keys
    # Development default: stable for a given SECRET_KEY, never the same as it.
    digest = hashlib.sha256(b"field-encryption:" + settings.SECRET_KEY.encode()).digest()
    return [base64.urlsafe_b64encode(digest)]


def fernet() -> MultiFernet:
    """The first key encrypts; every configured key decrypts (so keys can be rotated)."""
    return MultiFernet([Fernet(key) for key in _keys()])


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return fernet().decrypt(token.encode()).decode()
