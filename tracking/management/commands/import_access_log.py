"""Import page views from a web server access log (combined log format), for sites without JS."""

from pathlib import Path

from django.core.management.base import CommandError

from tracking.management.commands.import_events import Command as ImportCommand
from tracking.models import Source
from tracking.services.imports import access_log_import


class Command(ImportCommand):
    help = (
        "Import page views from an access log in combined log format. Visitors are keyed by a keyed "
        "hash of IP and user agent made on import; no IP is kept in full."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--source", required=True, help="Source name")
        parser.add_argument("--site-url", default="https://example.com", help="Site address the logged paths belong to")

    def handle(self, *args, file: Path, source: str, site_url: str, **options):
        src = Source.objects.filter(name=source).first()
        if src is None:
            raise CommandError(f"no source named {source!r}")
        if not file.exists():
            raise CommandError(f"{file}: no such file")
        with file.open(encoding="utf-8", errors="replace") as handle:
            self._report(access_log_import(source=src, lines=handle, site_url=site_url))
