"""Import historical events from a JSON Lines or CSV file into a source."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tracking.models import Source
from tracking.services.imports import FORMATS, events_import


class Command(BaseCommand):
    help = "Import events (our own event shape) from JSON Lines or CSV; re-running stores nothing twice."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--source", required=True, help="Source name")
        parser.add_argument("--format", choices=FORMATS, help="Default: from the file suffix (.csv or .jsonl)")

    def handle(self, *args, file: Path, source: str, format: str | None = None, **options):
        src = Source.objects.filter(name=source).first()
        if src is None:
            raise CommandError(f"no source named {source!r}")
        if not file.exists():
            raise CommandError(f"{file}: no such file")
        fmt = format or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
        with file.open(encoding="utf-8-sig", newline="") as handle:
            result = events_import(source=src, lines=handle, fmt=fmt)
        self._report(result)

    def _report(self, result):
        self.stdout.write(
            f"lines {result.lines}, accepted {result.accepted} (duplicates {result.duplicates}, "
            f"not stored without consent {result.suppressed}), "
            f"skipped {result.skipped}, rejected {len(result.rejected)}"
        )
        for item in result.rejected[:20]:
            self.stderr.write(f"  {item['field']}: {item['error']}")
