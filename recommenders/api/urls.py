"""API routes of the recommenders app (mounted under /api/v1/): catalogue and training here, serving
routes (recommendations, similar, trending, feedback) in `serving.py`."""

from django.urls import path

from recommenders.api import catalogue, training
from recommenders.api.discovery import urlpatterns as discovery_urlpatterns
from recommenders.api.serving import urlpatterns as serving_urlpatterns

# Serving routes first: `items/<id>/similar` and `items/nearest` must win over the catalogue's `items/<id>`.
urlpatterns: list = [
    *serving_urlpatterns,
    *discovery_urlpatterns,
    path("items", catalogue.ItemsView.as_view(), name="rec-items"),
    path("items/<str:external_id>", catalogue.ItemView.as_view(), name="rec-item"),
    path("models/train", training.TrainView.as_view(), name="rec-train"),
    path("models", training.ModelVersionsView.as_view(), name="rec-models"),
]
