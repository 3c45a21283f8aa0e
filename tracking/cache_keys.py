"""Cache keys and lifetimes of event collection (API key look-ups)."""

from django.core.cache import cache

VERSION = 1
WRITE_KEY_TTL = 60
SECRET_KEY_TTL = 60
# Each process also keeps write-key look-ups this long, sparing a cache round trip per event.
LOCAL_TTL = 5.0


def write_key(key: str) -> str:
    return f"tracking:v{VERSION}:wk:{key}"


def secret_key(key_hash: str) -> str:
    return f"tracking:v{VERSION}:sk:{key_hash}"


def forget_write_key(key: str) -> None:
    cache.delete(write_key(key))


def forget_secret(key_hash: str) -> None:
    cache.delete(secret_key(key_hash))
