"""Celery application: broker and results come from settings (Redis, or inline in the embedded default)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "personalization.settings")

app = Celery("personalization")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
