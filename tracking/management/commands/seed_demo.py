"""Seed a demo storefront: a source, visitors' journeys fed through the real ingestion path."""

import itertools

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from tracking import wire
from tracking.demo import visitor_events
from tracking.models import Source
from tracking.services.ingest import RequestMeta, events_check, events_ingest
from tracking.services.sources import secret_key_create, source_create, source_update

DEMO_SOURCE = "Demo storefront"
DEMO_ORIGINS = ["http://127.0.0.1:8000", "http://localhost:8000"]
DEMO_ADMIN = ("demo", "demo-admin")
BATCH = 500


class Command(BaseCommand):
    help = "Create the demo source and feed generated storefront traffic through ingestion (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--visitors", type=int, default=150, help="How many visitors (size of the data)")
        parser.add_argument("--days", type=int, default=60)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--admin", action="store_true", help="Also create the demo admin user")
        parser.add_argument(
            "--origin",
            action="append",
            default=[],
            dest="origins",
            help="Extra origin the demo storefront is served from (repeatable)",
        )

    def handle(self, *args, visitors: int, days: int, seed: int, admin: bool, origins: list[str], **options):
        wanted = [*DEMO_ORIGINS, *([settings.PUBLIC_URL] if settings.PUBLIC_URL else []), *origins]
        wanted = list(dict.fromkeys(origin.rstrip("/") for origin in wanted))
        source = Source.objects.filter(name=DEMO_SOURCE).first()
        if source is not None and not set(wanted) <= set(source.allowed_origins):
            source.allowed_origins = list(dict.fromkeys([*source.allowed_origins, *wanted]))
            source_update(source=source, fields=["allowed_origins"])
        if source is None:
            # Opt-out until the snippet's consent banner lands: the storefront cannot ask for consent yet.
            source = source_create(name=DEMO_SOURCE, allowed_origins=wanted, consent_regime="opt_out")
            _, secret = secret_key_create(source=source, name="demo")
            self.stdout.write(f"Created source {DEMO_SOURCE!r}: write key {source.write_key}, secret key {secret}")
        now = timezone.now()
        accepted = duplicates = rejected = 0
        events = visitor_events(seed=seed, visitors=visitors, days=days, now=now)
        while batch := list(itertools.islice(events, BATCH)):
            meta = RequestMeta(received_at=now)
            checked, bad = events_check(batch, parse=wire.native_event, path="events", meta=meta)
            result = events_ingest(source=source, events=checked, rejected=bad, meta=meta)
            accepted += result.accepted
            duplicates += result.duplicates
            rejected += len(result.rejected)
        self.stdout.write(f"Demo events: {accepted} accepted ({duplicates} already there), {rejected} rejected.")
        self._segments()
        call_command("recommenders_seed", stdout=self.stdout)
        call_command("experiments_seed", stdout=self.stdout)
        if admin:
            self._admin()

    def _segments(self) -> None:
        """The built-in segment templates (once each), ML scores trained on the demo history, and the
        memberships computed, so the admin opens on a working demo."""
        from segments.models import Segment
        from segments.services import segment_from_template, segments_recompute_all
        from segments.services.scores import scores_train
        from segments.templates import TEMPLATES

        present = set(Segment.objects.exclude(template="").values_list("template", flat=True))
        added = [segment_from_template(template_key=key).key for key in TEMPLATES if key not in present]
        trained = scores_train()
        queued = segments_recompute_all()
        self.stdout.write(
            f"Segments: {len(added)} added from templates, {len(queued)} recomputed; "
            f"scores {trained.versions or trained.skipped}."
        )

    def _admin(self) -> None:
        username, password = DEMO_ADMIN
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True, "email": "demo@example.com"}
        )
        if created:
            user.set_password(password)
            user.save()
        self.stdout.write(f"Demo admin user: {username} / {password}")
