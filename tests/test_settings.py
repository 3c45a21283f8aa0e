"""Settings: the embedded default, and production's refusal of unsafe configuration."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _settings(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"}}
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='personalization.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CACHES['default']['BACKEND'], s.CELERY_TASK_ALWAYS_EAGER)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_embedded_default_is_sqlite_locmem_and_inline_tasks():
    out = _settings({})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.sqlite3", "django.core.cache.backends.locmem.LocMemCache", "True"]


def test_database_and_redis_urls_switch_to_postgres_redis_and_workers():
    out = _settings({"DATABASE_URL": "postgres://u@127.0.0.1:5432/x", "REDIS_URL": "redis://127.0.0.1:6379/3"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.postgresql", "django_redis.cache.RedisCache", "False"]


def test_production_refuses_default_secret_key():
    out = _settings({"ENVIRONMENT": "production"})
    assert out.returncode != 0
    assert "SECRET_KEY" in out.stderr


def test_production_refuses_debug_on():
    out = _settings({"ENVIRONMENT": "production", "SECRET_KEY": "x" * 50, "DEBUG": "true"})
    assert out.returncode != 0
    assert "DEBUG" in out.stderr


def test_production_starts_with_real_secrets():
    out = _settings(
        {"ENVIRONMENT": "production", "SECRET_KEY": "s" * 50, "IDENTITY_HASH_KEY": "h" * 40, "ALLOWED_HOSTS": "a.b"}
    )
    assert out.returncode == 0, out.stderr
