"""App config for event collection."""

from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Collection"
    default_auto_field = "django.db.models.BigAutoField"
