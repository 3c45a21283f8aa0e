"""Generation and hashing of API keys: public write keys and secret keys shown once."""

import hashlib
import hmac
import secrets

WRITE_KEY_PREFIX = "pzw_"
SECRET_KEY_PREFIX = "pzs_"


def write_key_generate() -> str:
    return WRITE_KEY_PREFIX + secrets.token_urlsafe(18)


def secret_key_generate() -> tuple[str, str, str]:
    """A new secret key as (plaintext shown once, lookup prefix, hash to store)."""
    plaintext = SECRET_KEY_PREFIX + secrets.token_urlsafe(30)
    return plaintext, plaintext[: len(SECRET_KEY_PREFIX) + 8], secret_key_hash(plaintext)


def secret_key_hash(plaintext: str) -> str:
    # Secret keys carry 240 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def secret_key_matches(plaintext: str, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_key_hash(plaintext), stored_hash)
