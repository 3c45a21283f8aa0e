"""API v1 routes of the privacy capability."""

from django.urls import path

from privacy.api import ConsentView, SubjectRequestDetailView, SubjectRequestListView

urlpatterns = [
    path("consent", ConsentView.as_view(), name="consent"),
    path("privacy/requests", SubjectRequestListView.as_view(), name="privacy-requests"),
    path("privacy/requests/<uuid:request_id>", SubjectRequestDetailView.as_view(), name="privacy-request-detail"),
]
