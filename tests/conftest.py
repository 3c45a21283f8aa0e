"""Shared fixtures: a source with its keys, API clients, and a clean Redis cache per test."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.factories import SourceFactory
from tracking import selectors
from tracking.services.sources import secret_key_create


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    selectors._local_sources.clear()
    yield
    cache.clear()
    selectors._local_sources.clear()


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
