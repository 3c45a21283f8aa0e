"""Access audit: record who viewed, exported or erased whose data."""

from __future__ import annotations

import uuid

from privacy.models import AccessLog


def access_record(
    *, actor: str, channel: str, action: str, profile_uuid: uuid.UUID | str | None, detail: str = ""
) -> None:
    AccessLog.objects.create(
        actor=actor[:150], channel=channel, action=action, profile_uuid=profile_uuid, detail=detail[:200]
    )


def api_actor(credential) -> str:
    """How an API caller is named in the log: its source and key."""
    kind = "secret key" if credential.secret else "write key"
    key = f" #{credential.key_id}" if credential.key_id else ""
    return f"{credential.source.name} ({kind}{key})"
