"""Cache keys and lifetimes of the segments app (no key string is written anywhere else)."""

# Real-time refreshes waiting to run: a Redis sorted set of "profile:event type" scored by due time,
# and the flag saying a drain task is scheduled (expires on its own if that task is lost).
PENDING_REFRESHES = "segments:v1:pending"
DRAIN_SCHEDULED = "segments:v1:drain"
DRAIN_FLAG_TTL = 60

# Without Redis: a mark per profile and event type while a refresh of it is queued.
REFRESH_PENDING_TTL = 60


def refresh_pending(profile_id: int, event_type: str) -> str:
    return f"segments:v1:refresh:{profile_id}:{event_type}"
