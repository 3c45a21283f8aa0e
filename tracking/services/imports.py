"""Bulk import of historical events (JSON Lines, CSV) and of web-server access logs.

Imports go through the same validation, enrichment and exactly-once storage as live traffic, in
chunks, so re-running an import stores nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

from django.utils import timezone

from tracking import wire
from tracking.enrich import parse_user_agent
from tracking.models import Source
from tracking.services.identity import identity_hash_key
from tracking.services.ingest import RequestMeta, events_check, events_ingest

CHUNK = 500
FORMATS = ("jsonl", "csv")
JSON_COLUMNS = ("properties", "context", "traits")


@dataclass
class ImportResult:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0
    skipped: int = 0
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self, max_rejected: int = 100) -> dict:
        return {
            "lines": self.lines,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "skipped": self.skipped,
            "rejected_count": len(self.rejected),
            "rejected": self.rejected[:max_rejected],
        }


def _jsonl_records(lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, wire.Invalid(f"line {number}", f"is not valid JSON: {exc.msg} at column {exc.colno}")


def _csv_records(lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    reader = csv.DictReader(lines)
    for row in reader:
        number = reader.line_num
        record: dict = {}
        try:
            for column, value in row.items():
                if column is None or value is None or value == "":
                    continue
                if column in JSON_COLUMNS:
                    record[column] = json.loads(value)
                elif column.startswith("properties."):
                    record.setdefault("properties", {})[column.removeprefix("properties.")] = value
                else:
                    record[column] = value
        except json.JSONDecodeError as exc:
            yield number, wire.Invalid(f"line {number}.{column}", f"is not valid JSON: {exc.msg}")
            continue
        yield number, record


def _ingest_chunk(source: Source, chunk: list[tuple[int, object]], result: ImportResult) -> None:
    meta = RequestMeta(received_at=timezone.now())
    good = [(n, r) for n, r in chunk if not isinstance(r, wire.Invalid)]
    for _, invalid in (pair for pair in chunk if isinstance(pair[1], wire.Invalid)):
        result.rejected.append({"field": invalid.path, "error": invalid.message})
    events, rejected = events_check([r for _, r in good], parse=wire.native_event, path="", meta=meta)
    for item in rejected:
        line = good[item.index][0]
        item.path = f"line {line}.{item.path}" if item.path != "body" else f"line {line}"
        result.rejected.append({"field": item.path, "error": item.message})
    outcome = events_ingest(source=source, events=events, rejected=rejected, meta=meta)
    result.accepted += outcome.accepted
    result.duplicates += outcome.duplicates
    result.suppressed += outcome.suppressed


def events_import(*, source: Source, lines: Iterable[str], fmt: str) -> ImportResult:
    """Import events of our own shape, one per JSON line or CSV row (JSON in properties/context/traits
    columns, or `properties.<name>` columns)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    records = _jsonl_records(lines) if fmt == "jsonl" else _csv_records(lines)
    result = ImportResult()
    chunk: list[tuple[int, object]] = []
    for number, record in records:
        result.lines = number
        chunk.append((number, record))
        if len(chunk) >= CHUNK:
            _ingest_chunk(source, chunk, result)
            chunk = []
    if chunk:
        _ingest_chunk(source, chunk, result)
    return result


# Combined Log Format: host ident user [time] "request" status bytes "referer" "user agent"
COMBINED = re.compile(
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+)(?: [^"]*)?" '
    r'(?P<status>\d{3}) \S+(?: "(?P<referrer>[^"]*)" "(?P<agent>[^"]*)")?'
)
ASSET_SUFFIXES = (
    ".css",
    ".js",
    ".mjs",
    ".map",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".svg",
    ".ico",
    ".webp",
    ".avif",
    ".woff",
    ".woff2",
    ".ttf",
    ".eot",
    ".json",
    ".xml",
    ".txt",
    ".pdf",
    ".mp4",
    ".webm",
)


def access_log_visitor_id(ip: str, user_agent: str) -> str:
    """A stable pseudonymous id per (IP, user agent), keyed so the IP cannot be recovered."""
    digest = hmac.new(identity_hash_key(), f"log:{ip}|{user_agent}".encode(), hashlib.sha256).hexdigest()
    return "log-" + digest[:32]


def access_log_event(line: str, *, site_url: str) -> dict | None:
    """A page_view from one access-log line, or None for assets, bots, errors and non-GET requests."""
    match = COMBINED.match(line.strip())
    if not match or match["method"] != "GET" or not ("200" <= match["status"] < "400"):
        return None
    path = match["path"]
    if path.split("?", 1)[0].lower().endswith(ASSET_SUFFIXES):
        return None
    agent = match["agent"] or ""
    if parse_user_agent(agent)[0] == "bot":
        return None
    when = datetime.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z")
    referrer = match["referrer"] if match["referrer"] not in (None, "", "-") else None
    page = {"url": urljoin(site_url, path), "path": path.split("?", 1)[0]}
    if referrer:
        page["referrer"] = referrer
    return {
        "type": "page_view",
        "anonymous_id": access_log_visitor_id(match["ip"], agent),
        "message_id": "log-" + hashlib.sha256(line.strip().encode()).hexdigest()[:40],
        "timestamp": when.isoformat(),
        # No consent was ever asked of these visitors: the event says so for the privacy rules.
        "context": {
            "page": page,
            "userAgent": agent,
            "ip": match["ip"],
            "library": {"name": "access-log"},
            "consent": {"recorded": False},
        },
    }


def access_log_import(*, source: Source, lines: Iterable[str], site_url: str) -> ImportResult:
    result = ImportResult()
    chunk: list[tuple[int, object]] = []
    for number, line in enumerate(lines, start=1):
        result.lines = number
        raw = access_log_event(line, site_url=site_url)
        if raw is None:
            result.skipped += 1
            continue
        chunk.append((number, raw))
        if len(chunk) >= CHUNK:
            _ingest_chunk(source, chunk, result)
            chunk = []
    if chunk:
        _ingest_chunk(source, chunk, result)
    return result
