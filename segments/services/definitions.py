"""Segment definitions: create and update (validated, cycle-free), preview a rule, add from a template."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from segments.compiler import rule_compile
from segments.models import Segment
from segments.rules import RuleError, rule_segment_refs, rule_validate
from segments.templates import TEMPLATES
from tracking.models import Profile

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
EDITABLE = ("name", "description", "rule", "status")
# Paths of the API next to /segments/<key>: no segment may be called like them.
RESERVED_KEYS = frozenset({"preview", "templates", "from-template", "catalogue", "mine"})


class SegmentInvalid(ValueError):
    """A segment or rule that cannot be saved; `errors` point at what is wrong (``$.all[1].value: ...``)."""

    def __init__(self, errors: list[RuleError], code: str = "invalid_rule") -> None:
        self.errors = errors
        self.code = code
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True)
class Preview:
    count: int
    sample: list[Profile]


def _check_rule(rule: object, *, key: str | None) -> None:
    errors = rule_validate(rule)
    if errors:
        raise SegmentInvalid(errors)
    refs = rule_segment_refs(rule)
    if not refs:
        return
    rules = dict(Segment.objects.values_list("key", "rule"))
    missing = sorted(refs - set(rules))
    if missing:
        raise SegmentInvalid(
            [RuleError("$", f"refers to unknown segment {', '.join(missing)}")], code="unknown_segment"
        )
    if key is None:
        return
    rules[key] = rule
    cycle = _cycle_from(key, rules)
    if cycle:
        raise SegmentInvalid(
            [RuleError("$", f"segment references form a cycle: {' -> '.join(cycle)}")], code="segment_cycle"
        )


def _cycle_from(start: str, rules: dict[str, dict]) -> list[str] | None:
    """A path start -> ... -> start through segment references, if there is one."""

    def visit(key: str, path: list[str], seen: set[str]) -> list[str] | None:
        for ref in sorted(rule_segment_refs(rules.get(key) or {})):
            if ref == start:
                return [*path, ref]
            if ref not in seen:
                seen.add(ref)
                found = visit(ref, [*path, ref], seen)
                if found:
                    return found
        return None

    return visit(start, [start], set())


def _check_key(key: object) -> str:
    if isinstance(key, str) and key in RESERVED_KEYS:
        raise SegmentInvalid([RuleError("key", f"{key!r} is reserved by the API; choose another key")], "invalid_key")
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise SegmentInvalid(
            [RuleError("key", f"{key!r} is not a valid key: lower-case letters, digits, - and _, at most 100")],
            code="invalid_key",
        )
    return key


def _recompute_later(segment: Segment) -> None:
    from segments.tasks import segment_recompute_task

    segment_id, version = segment.pk, segment.version
    transaction.on_commit(lambda: segment_recompute_task.delay(segment_id, version))


@transaction.atomic
def segment_create(
    *,
    key: str,
    name: str,
    rule: dict,
    description: str = "",
    status: str = Segment.Status.ACTIVE,
    template: str = "",
) -> Segment:
    """A new segment; its members are computed by a task queued on commit."""
    _check_key(key)
    if Segment.objects.filter(key=key).exists():
        raise SegmentInvalid([RuleError("key", f"a segment with key {key!r} exists already")], code="duplicate_key")
    if status not in Segment.Status.values:
        raise SegmentInvalid([RuleError("status", f"expected one of {', '.join(Segment.Status.values)}")])
    _check_rule(rule, key=key)
    segment = Segment.objects.create(
        key=key, name=name or key, description=description, rule=rule, status=status, template=template
    )
    if segment.status == Segment.Status.ACTIVE:
        _recompute_later(segment)
    return segment


@transaction.atomic
def segment_update(*, segment: Segment, **changes) -> Segment:
    """Change name, description, rule or status. A new rule bumps the version and queues a recompute
    (memberships computed against an older version are replaced by it)."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise SegmentInvalid([RuleError(name, "cannot be changed") for name in unknown], code="not_editable")
    segment = Segment.objects.select_for_update().get(pk=segment.pk)
    recompute = False
    if "rule" in changes and changes["rule"] != segment.rule:
        _check_rule(changes["rule"], key=segment.key)
        segment.rule = changes["rule"]
        segment.version += 1
        recompute = True
    if "status" in changes and changes["status"] != segment.status:
        if changes["status"] not in Segment.Status.values:
            raise SegmentInvalid([RuleError("status", f"expected one of {', '.join(Segment.Status.values)}")])
        segment.status = changes["status"]
        recompute = recompute or segment.status == Segment.Status.ACTIVE
    for name in ("name", "description"):
        if name in changes:
            setattr(segment, name, changes[name] or "")
    segment.save()
    if recompute and segment.status == Segment.Status.ACTIVE:
        _recompute_later(segment)
    return segment


def segment_preview(*, rule: dict, sample: int = 20, now: datetime | None = None) -> Preview:
    """How many profiles a rule matches now, and a sample of them (most recently seen first),
    without saving anything."""
    _check_rule(rule, key=None)
    sample = max(0, min(sample, settings.SEGMENTS_PREVIEW_SAMPLE_MAX))
    matching = Profile.objects.filter(rule_compile(rule, now=now or timezone.now()))
    return Preview(count=matching.count(), sample=list(matching.order_by("-last_seen_at", "-id")[:sample]))


def segment_from_template(*, template_key: str, key: str | None = None, name: str | None = None) -> Segment:
    """A segment made from a built-in template (its rule copied: editing it later changes only the
    segment). The key defaults to the template's, with a number added when it is taken."""
    if template_key not in TEMPLATES:
        raise SegmentInvalid(
            [RuleError("template", f"unknown template {template_key!r}; expected one of {', '.join(TEMPLATES)}")],
            code="unknown_template",
        )
    title, description, rule = TEMPLATES[template_key]
    if key is None:
        base = template_key.replace("_", "-")
        taken = set(Segment.objects.filter(key__startswith=base).values_list("key", flat=True))
        key = base
        number = 2
        while key in taken:
            key, number = f"{base}-{number}", number + 1
    return segment_create(key=key, name=name or title, description=description, rule=rule, template=template_key)
