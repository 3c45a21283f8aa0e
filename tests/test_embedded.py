"""The embedded default (SQLite, inline tasks) runs the same ingestion as Postgres, with equal results."""

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from tracking.models import Profile

ROOT = Path(__file__).resolve().parent.parent

SNAPSHOT = """
import django, json, os
os.environ['DJANGO_SETTINGS_MODULE'] = 'personalization.settings'
django.setup()
from django.core.management import call_command
call_command('migrate', verbosity=0)
call_command('seed_demo', visitors=30, seed=5, stdout=open(os.devnull, 'w'))
from tests.test_embedded import snapshot
print(json.dumps(snapshot()))
"""


def snapshot() -> dict:
    rows = {}
    for profile in Profile.objects.prefetch_related("identities", "event_stats"):
        key = sorted(i.value for i in profile.identities.all() if i.kind == "anonymous")[0]
        rows[key] = [
            profile.event_count,
            profile.session_count,
            profile.purchase_count,
            str(profile.revenue),
            profile.traits,
            profile.last_device_type,
            profile.last_traffic_source,
            sorted((s.event_type, s.count, str(s.value_sum)) for s in profile.event_stats.all()),
        ]
    return rows


@pytest.mark.django_db
def test_sqlite_and_postgres_compute_the_same_profiles(tmp_path):
    call_command("seed_demo", visitors=30, seed=5, stdout=StringIO())
    on_postgres = json.loads(json.dumps(snapshot()))
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    out = subprocess.run(
        [sys.executable, "-c", SNAPSHOT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    on_sqlite = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(on_postgres) == 30
    assert on_sqlite == on_postgres
