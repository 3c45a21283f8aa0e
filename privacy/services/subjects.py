"""Data-subject requests: find everything held about a person, export it, or erase it.

Both walk the registry (privacy.registry), so every app's per-profile data is reached. Erasure
leaves only the request's receipt: its id, times and how many rows of each kind were deleted.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from privacy import registry
from privacy.models import SubjectRequest
from privacy.services.audit import access_record
from tracking.models import Identity, Profile, Source
from tracking.services.identity import identity_hash

logger = logging.getLogger(__name__)

SUBJECT_KINDS = ("user_id", "anonymous_id", "email")
_IDENTITY_KIND = {"user_id": Identity.Kind.USER, "anonymous_id": Identity.Kind.ANONYMOUS, "email": Identity.Kind.EMAIL}


def _identity_value(subject_kind: str, value: str) -> str:
    kind = _IDENTITY_KIND[subject_kind]
    return value.strip() if kind == Identity.Kind.ANONYMOUS else identity_hash(value, kind=kind)


def subject_request_create(*, kind: str, subject_kind: str, value: str, regulation: str, source: Source | None):
    """File a request; processing is queued (a Celery task) once the request is committed."""
    from privacy.tasks import subject_request_process_task

    if subject_kind not in SUBJECT_KINDS:
        raise ValueError(f"subject must be one of {', '.join(SUBJECT_KINDS)}")
    now = timezone.now()
    request = SubjectRequest.objects.create(
        created_at=now,
        kind=kind,
        regulation=regulation,
        source=source,
        subject_kind=subject_kind,
        # Kept as a keyed hash even for anonymous ids: after an erasure nothing links back to the person.
        subject_hash=identity_hash(_identity_value(subject_kind, value), kind="request"),
        due_at=now + timedelta(days=SubjectRequest.DEADLINE_DAYS[regulation]),
        result={"lookup": _identity_value(subject_kind, value)},
    )
    transaction.on_commit(lambda: subject_request_process_task.delay(str(request.pk)))
    return request


def _profile_for(request: SubjectRequest) -> Profile | None:
    lookup = request.result.get("lookup")
    kind = _IDENTITY_KIND[request.subject_kind]
    identity = Identity.objects.select_related("profile").filter(kind=kind, value=lookup).first()
    return identity.profile if identity else None


def subject_export(*, profile: Profile) -> dict:
    """Everything held about the person behind `profile`, from every registered holding."""
    data: dict = {"exported_at": timezone.now().isoformat(), "profile_id": str(profile.uuid)}
    for holding in registry.holdings():
        rows = holding.model.objects.filter(**{holding.profile_field: profile.pk}).order_by("pk")
        data[holding.label] = [holding.export(row) if holding.export else _row(row, holding.exclude) for row in rows]
    return data


def _row(row, exclude: tuple[str, ...]) -> dict:
    return {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields if f.name not in exclude}


def subject_erase(*, profile: Profile) -> dict[str, int]:
    """Delete every registered row of the person, the profile last; returns counts per holding."""
    counts: dict[str, int] = {}
    with transaction.atomic():
        for holding in registry.holdings():
            deleted, _ = holding.model.objects.filter(**{holding.profile_field: profile.pk}).delete()
            counts[holding.label] = deleted
    for cleaner in registry.cache_cleaners():
        cleaner(profile)
    return counts


def _filer(request: SubjectRequest) -> str:
    return f"request filed by {request.source.name}" if request.source else "request"


def subject_request_process(*, request_id: str) -> SubjectRequest:
    """Carry out a request. Safe to run twice: a finished request is left as it is."""
    with transaction.atomic():
        request = SubjectRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None:
            raise SubjectRequest.DoesNotExist(f"no subject request {request_id}")
        if request.status in (SubjectRequest.Status.DONE, SubjectRequest.Status.NOT_FOUND):
            return request
        profile = _profile_for(request)
        if profile is None:
            request.status, request.result = SubjectRequest.Status.NOT_FOUND, {}
        elif request.kind == SubjectRequest.Kind.EXPORT:
            request.status, request.result = SubjectRequest.Status.DONE, {"export": subject_export(profile=profile)}
            access_record(
                actor=_filer(request),
                channel="task",
                action="export",
                profile_uuid=profile.uuid,
                detail=f"request {request.pk}",
            )
        else:
            profile_uuid = profile.uuid
            counts = subject_erase(profile=profile)
            request.status, request.result = SubjectRequest.Status.DONE, {"deleted": counts}
            access_record(
                actor=_filer(request),
                channel="task",
                action="erase",
                profile_uuid=profile_uuid,
                detail=f"request {request.pk}",
            )
        request.completed_at = timezone.now()
        request.save(update_fields=["status", "result", "completed_at"])
    logger.info("subject request %s %s: %s", request.pk, request.kind, request.status)
    return request
