"""Cache keys and lifetimes of the experiments app (the running-experiment list's version)."""

from django.core.cache import cache

VERSION = 1
# Each process keeps its compiled running-experiment list and reads the shared version at most this
# often (seconds): a change anywhere bumps the version, and every process reloads within that time.
VERSION_CHECK = 1.0
# Whatever the version says, the local copy lives at most this long (a missed bump heals by itself).
LOCAL_TTL = 30.0


def running_version(source_id: int) -> str:
    return f"experiments:v{VERSION}:running:{source_id}"


def running_version_get(source_id: int) -> int:
    value = cache.get(running_version(source_id))
    return int(value) if value is not None else 0


def running_version_bump(source_id: int) -> None:
    from experiments.selectors import running_forget

    running_forget(source_id)  # this process sees its own change at once
    key = running_version(source_id)
    try:
        cache.incr(key)
    except ValueError:  # not there yet (or evicted): any new value differs from what processes hold
        import time

        cache.set(key, time.time_ns(), timeout=None)
