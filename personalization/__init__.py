"""The personalization platform's Django project."""

from personalization.celery import app as celery_app

__all__ = ["celery_app"]
