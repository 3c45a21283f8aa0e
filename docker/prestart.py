"""Container start-up steps, run by docker/entrypoint.sh before the real command.

Usage: python docker/prestart.py [--migrate] [--timeout SECONDS]

1. Loads the settings (a misconfiguration fails here, with Django's message, before any waiting).
2. Waits until the database accepts connections, and Redis answers PING when REDIS_URL is set.
3. With --migrate: runs `migrate --noinput`. On Postgres it holds an advisory lock meanwhile, so
   several web containers starting together migrate one after the other instead of racing.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "personalization.settings")

import django

MIGRATE_LOCK_ID = 0x707A6D67  # "pzmg": any constant shared by every container of the deployment


def log(message: str) -> None:
    print(f"[prestart] {message}", file=sys.stderr, flush=True)


def wait_for(name: str, check, deadline: float) -> None:
    attempt = 0
    while True:
        attempt += 1
        try:
            check()
        except Exception as exc:
            if time.monotonic() >= deadline:
                log(f"{name} still unavailable, giving up: {exc.__class__.__name__}: {exc}")
                sys.exit(1)
            if attempt == 1 or attempt % 10 == 0:
                log(f"waiting for {name} ({exc.__class__.__name__}: {str(exc).strip()[:200]})")
            time.sleep(1)
        else:
            log(f"{name} is up")
            return


def check_database() -> None:
    from django.db import connections

    connection = connections["default"]
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


def check_redis() -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


def migrate() -> None:
    from django.core.management import call_command
    from django.db import connections

    connection = connections["default"]
    locked = connection.vendor == "postgresql"
    if locked:
        log("taking the migration lock")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK_ID])
    try:
        call_command("migrate", interactive=False, verbosity=1)
    finally:
        if locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_ID])
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrate", action="store_true", help="run migrate --noinput once the database is up")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each service")
    args = parser.parse_args()

    django.setup()
    from django.conf import settings

    wait_for("database", check_database, time.monotonic() + args.timeout)
    if settings.REDIS_URL:
        wait_for("redis", check_redis, time.monotonic() + args.timeout)
    if args.migrate:
        migrate()


if __name__ == "__main__":
    main()
