"""API v1 routes of event collection and profiles."""

from django.urls import path

from tracking.api.collect import EventsView
from tracking.api.imports import ImportView
from tracking.api.profiles import MyProfileView, ProfileDetailView, ProfileEventsView, ProfileListView

urlpatterns = [
    path("events", EventsView.as_view(), name="events"),
    path("import", ImportView.as_view(), name="import"),
    path("profiles", ProfileListView.as_view(), name="profiles"),
    path("profiles/me", MyProfileView.as_view(), name="profile-me"),
    path("profiles/<uuid:profile_id>", ProfileDetailView.as_view(), name="profile-detail"),
    path("profiles/<uuid:profile_id>/events", ProfileEventsView.as_view(), name="profile-events"),
]
