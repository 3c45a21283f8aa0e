"""Shared fixtures: a source with its keys, API clients, and a clean Redis cache per test.

Each test run gets its own database and cache-key prefix, so several runs on one machine (a
developer's and a benchmark's, say) never trample each other.
"""

import os

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.browser import browser  # noqa: F401 - the headless Chromium fixture, for the browser tests
from tests.factories import SourceFactory
from tracking import selectors
from tracking.services.sources import secret_key_create

RUN_ID = os.environ.get("PZ_TEST_RUN_ID") or str(os.getpid())
settings.CACHES["default"]["KEY_PREFIX"] = f"pztest{RUN_ID}"
# Served lists pushed to the Redis buffer in the request (no pusher thread writing behind a test's
# back); tests of the pusher turn it on.
settings.RECOMMENDERS_SERVED_PUSH_SECONDS = 0


def _celery_queue_per_run() -> None:
    """Tasks of this run go to a queue of its own, so a worker started by another run on the same
    Redis never takes them (it would look for their rows in its own database)."""
    from personalization.celery import app

    app.conf.task_default_queue = f"pztest{RUN_ID}"


_celery_queue_per_run()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    test = settings.DATABASES["default"].setdefault("TEST", {})
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        test["NAME"] = f"test_personalization_{RUN_ID}"


def _cache_clear() -> None:
    from personalization.hot_redis import near_forget
    from recommenders.services.catalogue import items_stub_forget
    from recommenders.serving.served import served_local_clear

    served_local_clear()
    near_forget()
    items_stub_forget()  # the ids a test's items had: the next test's database has none of them
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")
    else:
        cache.clear()
    selectors._local_sources.clear()


@pytest.fixture(autouse=True)
def _clean_cache():
    _cache_clear()
    yield
    _cache_clear()


@pytest.fixture(autouse=True)
def _default_purposes(request):
    """Transactional tests flush the database, data migrations' rows included: seed the default
    purposes again for every test that uses the database, and drop the process's purpose cache."""
    from privacy.defaults import purposes_seed
    from privacy.models import CategoryMapping, Purpose
    from privacy.services.consent import purposes_forget

    purposes_forget()
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if marker or names & {"db", "transactional_db", "live_server"}:
        transactional = (
            (marker is not None and marker.kwargs.get("transaction"))
            or "transactional_db" in names
            or "live_server" in names
        )
        request.getfixturevalue("transactional_db" if transactional else "db")
        purposes_seed(Purpose, CategoryMapping)
    yield
    purposes_forget()


@pytest.fixture
def source(db):
    return SourceFactory()


@pytest.fixture
def secret(source) -> str:
    _, plaintext = secret_key_create(source=source, name="tests")
    return plaintext


@pytest.fixture
def client_public(source) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_WRITE_KEY=source.write_key)
    return client


@pytest.fixture
def client_secret(secret) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client
