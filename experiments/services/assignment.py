"""Sticky assignment of units to variants, targeting, consent, exposure logging, and merges.

The unit is the profile, hashed by its uuid: the variant drawn is a pure function of (salt, unit) and
the experiment's weights, so any process answers the same. The first assignment is stored and wins
from then on, whatever happens to weights or traffic; an identified visitor keeps the variant their
anonymous profile had (the assignment follows the profile merge).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.dispatch import receiver
from django.utils import timezone

from experiments.bucketing import layer_slot, unit_hash, variant_index
from experiments.models import Assignment, Exposure
from experiments.selectors import ExperimentSpec, VariantSpec, running_specs
from personalization.db import execute_prepared
from privacy.consent import collection_allowed
from privacy.services.consent import consent_states, purposes
from tracking.models import Profile, Source
from tracking.services.identity import profile_merged

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    """Where the visitor is now (from the request, else the profile's last known values)."""

    device_type: str = ""
    country: str = ""
    traffic_source: str = ""
    gpc: bool = False


@dataclass(frozen=True, slots=True)
class Assigned:
    experiment: ExperimentSpec
    variant: VariantSpec
    new: bool
    exposed_now: bool


def _segment_keys_loader(profile_id: int) -> Callable[[], frozenset[str]]:
    """The profile's segment keys, read once and only if an experiment targets segments. The segments
    app is optional here: without its selector, segment-targeted experiments admit nobody."""
    memo: list[frozenset[str]] = []

    def load() -> frozenset[str]:
        if not memo:
            try:
                from segments.selectors import profile_segment_keys
            except ImportError:
                logger.warning("segments.selectors.profile_segment_keys is missing: segment targeting admits none")
                memo.append(frozenset())
            else:
                memo.append(frozenset(profile_segment_keys(profile_id=profile_id)))
        return memo[0]

    return load


def _consent_checker(
    source: Source, profile_id: int | None, gpc: bool, states: dict | None = None
) -> Callable[[str], bool]:
    memo: dict = {} if states is None else {"states": states}

    def allowed(purpose_key: str) -> bool:
        if "states" not in memo:
            memo["states"] = consent_states([profile_id]).get(profile_id, {}) if profile_id else {}
        purpose = purposes().get(purpose_key)
        if purpose is None:  # a purpose nobody defined cannot have been granted
            return False
        return collection_allowed(
            regime=source.consent_regime,
            policy_version=source.consent_policy_version,
            purpose=purpose.key,
            required=purpose.required,
            state=memo["states"].get(purpose.key),
            gpc=gpc,
        )

    return allowed


def targeting_matches(spec: ExperimentSpec, *, context: Context, segment_keys: Callable[[], frozenset[str]]) -> bool:
    if spec.device_types and context.device_type.lower() not in spec.device_types:
        return False
    if spec.countries and context.country.upper() not in spec.countries:
        return False
    if spec.traffic_sources and context.traffic_source.lower() not in spec.traffic_sources:
        return False
    return not spec.segments or bool(spec.segments & segment_keys())


def variant_draw(spec: ExperimentSpec, *, unit: str) -> VariantSpec | None:
    """The variant a new unit gets, from the hash alone: None when outside the experiment's slot range."""
    slot = layer_slot(layer=spec.layer, salt=spec.salt, unit=unit)
    if not spec.slot_start <= slot < spec.slot_end:
        return None
    index = variant_index(salt=spec.salt, unit=unit, weights=spec.weights)
    return None if index is None else spec.variants[index]


def _stored(profile_id: int) -> dict[int, tuple[int, bool]]:
    """{experiment id: (variant id, exposed)} of the unit, in one query."""
    a, x = Assignment._meta.db_table, Exposure._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.experiment_id, a.variant_id, x.id IS NOT NULL FROM {a} a LEFT JOIN {x} x "
            "ON x.experiment_id = a.experiment_id AND x.profile_id = a.profile_id WHERE a.profile_id = %s",
            [profile_id],
        )
        return {exp: (variant, bool(exposed)) for exp, variant, exposed in cursor.fetchall()}


def assignments_for(
    *,
    source: Source,
    profile: Profile,
    context: Context | None = None,
    expose: bool = True,
    only: Callable[[ExperimentSpec], bool] | None = None,
    specs: tuple[ExperimentSpec, ...] | None = None,
    stored: dict[int, tuple[int, bool]] | None = None,
    consents: dict | None = None,
) -> list[Assigned]:
    """Every running experiment of the source the unit qualifies for, with its (sticky) variant.

    New assignments are stored; with `expose`, exposures not yet logged are logged (once per unit).
    `specs`, `stored` and `consents` spare the look-ups when the caller has them already."""
    every = specs if specs is not None else running_specs(source_id=source.pk)
    specs = every
    if only is not None:
        specs = tuple(s for s in specs if only(s))
    if not specs:
        return []
    context = context or Context(
        device_type=profile.last_device_type, country=profile.last_country, traffic_source=profile.last_traffic_source
    )
    consent_ok = _consent_checker(source, profile.pk, context.gpc, consents)
    segment_keys = _segment_keys_loader(profile.pk)
    stored = _stored(profile.pk) if stored is None else stored
    # A layer is held by the unit's stored assignment to any running experiment of it, whatever
    # the slot ranges have become since: experiments of one layer never share a unit.
    held_layers = {s.layer: s.id for s in every if s.layer and s.id in stored}
    unit = str(profile.uuid)
    out: list[Assigned] = []
    for spec in specs:
        if not consent_ok(spec.consent_purpose):
            continue
        if not targeting_matches(spec, context=context, segment_keys=segment_keys):
            continue
        if spec.id in stored:
            variant_id, exposed = stored[spec.id]
            variant = spec.variant(variant_id)
            if variant is None:
                continue
            out.append(Assigned(spec, variant, new=False, exposed_now=expose and not exposed))
            continue
        if spec.layer and held_layers.get(spec.layer, spec.id) != spec.id:
            continue
        variant = variant_draw(spec, unit=unit)
        if variant is None:
            continue
        if spec.layer:
            held_layers[spec.layer] = spec.id
        out.append(Assigned(spec, variant, new=True, exposed_now=expose))
    _store(profile.pk, unit, out)
    return out


def _store(profile_id: int, unit: str, assigned: list[Assigned]) -> None:
    new = [a for a in assigned if a.new]
    exposed = [a for a in assigned if a.exposed_now]
    if not new and not exposed:
        return
    now = timezone.now()
    with transaction.atomic():
        if new:
            Assignment.objects.bulk_create(
                [
                    Assignment(
                        experiment_id=a.experiment.id,
                        profile_id=profile_id,
                        variant_id=a.variant.id,
                        unit_hash=f"{unit_hash(a.experiment.salt, unit):016x}",
                        assigned_at=now,
                    )
                    for a in new
                ],
                ignore_conflicts=True,
            )
        if exposed:
            exposures_log(profile_id=profile_id, pairs=[(a.experiment.id, a.variant.id) for a in exposed], at=now)


def exposures_log(*, profile_id: int, pairs: list[tuple[int, int]], at=None) -> None:
    """Log first exposures (experiment id, variant id); a unit already exposed keeps its first one."""
    at = at or timezone.now()
    Exposure.objects.bulk_create(
        [Exposure(experiment_id=e, profile_id=profile_id, variant_id=v, exposed_at=at) for e, v in pairs],
        ignore_conflicts=True,
    )


def _visitor_state(anonymous_id: str) -> tuple[Profile | None, dict[int, tuple[int, bool]], dict]:
    """The visitor's profile, stored assignments (with whether each was exposed) and consent states, in one
    query: the hot path of the assignments API. It reads tracking's identity/profile tables and privacy's
    consent states directly (as tracking.selectors.profile_by_anonymous_id and
    privacy.services.consent.consent_states do), because a round trip per app is most of a request's time."""
    from privacy.consent import State
    from privacy.models import ConsentState
    from tracking.models import Identity

    i, p, c = Identity._meta.db_table, Profile._meta.db_table, ConsentState._meta.db_table
    a, x = Assignment._meta.db_table, Exposure._meta.db_table
    sql = (
        "SELECT p.id, p.uuid, p.last_device_type, p.last_country, p.last_traffic_source, "
        "a.experiment_id, a.variant_id, x.id IS NOT NULL, c.purpose_id, c.granted, c.policy_version "
        f"FROM {i} i JOIN {p} p ON p.id = i.profile_id "
        f"LEFT JOIN {a} a ON a.profile_id = p.id "
        f"LEFT JOIN {x} x ON x.experiment_id = a.experiment_id AND x.profile_id = p.id "
        f"LEFT JOIN {c} c ON c.profile_id = p.id "
        "WHERE i.kind = %s AND i.value = %s"
    )
    params = [str(Identity.Kind.ANONYMOUS), anonymous_id]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Planned once per connection (a five-table join costs more to plan than to run).
            execute_prepared(cursor, sql, params)
        else:
            cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return None, {}, {}
    pk, unit, device, country, traffic = rows[0][:5]
    profile = Profile(
        pk=pk,
        uuid=uuid.UUID(str(unit)),
        last_device_type=device,
        last_country=country,
        last_traffic_source=traffic,
    )
    stored = {row[5]: (row[6], bool(row[7])) for row in rows if row[5] is not None}
    by_id = {purpose.id: purpose.key for purpose in purposes().values()}
    consents = {by_id[row[8]]: State(bool(row[9]), row[10]) for row in rows if row[8] in by_id}
    return profile, stored, consents


def visitor_profile(*, source: Source, anonymous_id: str, create: bool) -> Profile | None:
    """The visitor's profile; with `create`, made now when it is the first we hear of them (the variant
    they are shown must be attributable to the events they send next)."""
    from tracking.selectors import profile_by_anonymous_id

    profile = profile_by_anonymous_id(anonymous_id)
    if profile is not None or not create:
        return profile
    from tracking.services.identity import profiles_resolve
    from tracking.wire import EventIn

    subject = EventIn(
        index=0,
        kind="track",
        type="experiment_assignment",
        message_id="",
        anonymous_id=anonymous_id,
        user_id="",
        timestamp=timezone.now(),
    )
    with transaction.atomic():
        profile_id = profiles_resolve([subject])[0]
    return Profile.objects.get(pk=profile_id)


def visitor_assignments(
    *, source: Source, anonymous_id: str, context: Context, expose: bool, experiment_key: str | None = None
) -> list[Assigned]:
    """What the assignments API answers: the visitor's experiments, creating their profile only when
    some running experiment may take them (a visitor with no consent gets nothing stored)."""
    every = specs = running_specs(source_id=source.pk)
    if experiment_key is not None:
        specs = tuple(s for s in specs if s.key == experiment_key)
    if not specs:
        return []
    profile, stored, consents = _visitor_state(anonymous_id)
    if profile is not None:
        return _assign_visitor(source, profile, context, expose, experiment_key, every, stored, consents)
    consent_ok = _consent_checker(source, None, context.gpc)
    if not any(consent_ok(s.consent_purpose) for s in specs):
        return []
    with transaction.atomic():  # a new visitor: profile, assignments and exposures in one commit
        profile = visitor_profile(source=source, anonymous_id=anonymous_id, create=True)
        return _assign_visitor(source, profile, context, expose, experiment_key, every, {}, None)


def _assign_visitor(source, profile, context, expose, experiment_key, every, stored, consents) -> list[Assigned]:
    only = None if experiment_key is None else (lambda s: s.key == experiment_key)
    filled = Context(
        device_type=context.device_type or profile.last_device_type,
        country=context.country or profile.last_country,
        traffic_source=context.traffic_source or profile.last_traffic_source,
        gpc=context.gpc,
    )
    return assignments_for(
        source=source,
        profile=profile,
        context=filled,
        expose=expose,
        only=only,
        specs=every,
        stored=stored,
        consents=consents,
    )


def experiment_variant_for(
    *,
    profile_id: int,
    experiment_key: str | None = None,
    kind: str | None = None,
    source_id: int | None = None,
    expose: bool = True,
) -> tuple[ExperimentSpec, VariantSpec] | None:
    """For other apps: the unit's variant in the running experiment `experiment_key`, or in the first
    running experiment whose variants carry the payload key `kind` (e.g. "recommender_config").
    Assigns (and by default logs the exposure) like the assignments API; None when the unit is not in it."""
    if (experiment_key is None) == (kind is None):
        raise ValueError("give exactly one of experiment_key and kind")
    profile = Profile.objects.filter(pk=profile_id).first()
    if profile is None:
        return None
    source = Source.objects.filter(pk=source_id or profile.last_source_id).first()
    if source is None:
        return None

    def only(spec: ExperimentSpec) -> bool:
        if experiment_key is not None:
            return spec.key == experiment_key
        return any(kind in v.payload for v in spec.variants)

    assigned = assignments_for(source=source, profile=profile, expose=expose, only=only)
    return (assigned[0].experiment, assigned[0].variant) if assigned else None


@receiver(profile_merged, sender=Profile, dispatch_uid="experiments.assignments_merge")
def assignments_merge(sender, *, source_id: int, target_id: int, **kwargs) -> None:
    """The merged profile keeps its own assignment where it has one, else takes the source's (an
    anonymous visitor who identifies keeps the variant). Exposures follow their assignment; a kept
    exposure is recomputed at the next roll-up, since the source's events now belong to it."""
    from experiments.services.rollup import exposures_discard

    theirs = {a.experiment_id: a for a in Assignment.objects.filter(profile_id=source_id)}
    ours = set(Assignment.objects.filter(profile_id=target_id).values_list("experiment_id", flat=True))
    moving = [e for e in theirs if e not in ours]
    Assignment.objects.filter(profile_id=source_id, experiment_id__in=moving).update(profile_id=target_id)
    Assignment.objects.filter(profile_id=source_id).delete()

    their_exposures = {x.experiment_id: x for x in Exposure.objects.filter(profile_id=source_id)}
    our_exposures = set(Exposure.objects.filter(profile_id=target_id).values_list("experiment_id", flat=True))
    keep = [x.pk for e, x in their_exposures.items() if e in moving and e not in our_exposures]
    drop = [x.pk for x in their_exposures.values() if x.pk not in keep]
    exposures_discard(exposure_ids=drop)
    Exposure.objects.filter(pk__in=keep).update(profile_id=target_id)
    # The source's events are the target's now: every exposure of the target may have moved.
    Exposure.objects.filter(profile_id=target_id).update(needs_rollup=True)
