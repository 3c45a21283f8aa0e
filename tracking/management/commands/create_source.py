"""Create a source and print its public write key and a new secret key (shown only this once)."""

import json

from django.core.management.base import BaseCommand, CommandError

from tracking.models import Source
from tracking.services.sources import secret_key_create, source_create


class Command(BaseCommand):
    help = "Create a source (site or app) and print its write key and a new secret key."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--origin",
            action="append",
            default=[],
            dest="origins",
            help="Browser origin allowed to send with the write key (repeatable; '*' for any).",
        )
        parser.add_argument(
            "--regime",
            choices=["opt-in", "opt-out"],
            default="opt-in",
            help="Consent regime: opt-in (GDPR, default: nothing beyond necessary until granted) or opt-out (CCPA).",
        )
        parser.add_argument("--json", action="store_true", help="Print the keys as JSON for scripts.")

    def handle(self, *args, name, origins, regime: str = "opt-in", json: bool = False, **options):
        if Source.objects.filter(name=name).exists():
            raise CommandError(f"a source named {name!r} already exists")
        source = source_create(name=name, allowed_origins=origins, consent_regime=regime.replace("-", "_"))
        _, secret = secret_key_create(source=source, name="created by create_source")
        payload = {
            "name": source.name,
            "id": source.pk,
            "write_key": source.write_key,
            "secret_key": secret,
            "allowed_origins": source.allowed_origins,
            "consent_regime": source.consent_regime,
        }
        if json:
            self.stdout.write(_dumps(payload))
            return
        self.stdout.write(f"Source:     {source.name} (id {source.pk})")
        self.stdout.write(f"Write key:  {source.write_key}   (public: snippet, pixel, SDKs)")
        self.stdout.write(f"Secret key: {secret}   (server-side; shown only now, store it safely)")
        self.stdout.write(f"Origins:    {', '.join(source.allowed_origins) or '(none: server-side only)'}")
        self.stdout.write(f"Consent:    {source.get_consent_regime_display()}")


def _dumps(payload: dict) -> str:
    return json.dumps(payload)
