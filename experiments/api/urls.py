"""API routes of the experiments app (mounted under /api/v1/)."""

from django.urls import path

from experiments.api.views import (
    AssignmentsView,
    ExperimentDetailView,
    ExperimentListView,
    ExperimentResultsView,
    ExposuresView,
    MetricListView,
    action_view,
)

urlpatterns = [
    path("assignments", AssignmentsView.as_view(), name="experiment-assignments"),
    path("exposures", ExposuresView.as_view(), name="experiment-exposures"),
    path("experiment-metrics", MetricListView.as_view(), name="experiment-metrics"),
    path("experiments", ExperimentListView.as_view(), name="experiments"),
    path("experiments/<slug:key>", ExperimentDetailView.as_view(), name="experiment-detail"),
    path(
        "experiments/<slug:key>/start", action_view("start", "Start or resume an experiment"), name="experiment-start"
    ),
    path(
        "experiments/<slug:key>/pause", action_view("pause", "Pause: no variants handed out"), name="experiment-pause"
    ),
    path("experiments/<slug:key>/stop", action_view("stop", "Stop for good"), name="experiment-stop"),
    path("experiments/<slug:key>/results", ExperimentResultsView.as_view(), name="experiment-results"),
]
