"""App config for recommenders: catalogue, interaction matrix, training, registry and serving."""

from django.apps import AppConfig


class RecommendersConfig(AppConfig):
    name = "recommenders"
    verbose_name = "Recommendations"
    default_auto_field = "django.db.models.BigAutoField"
