"""API routes of the segments app (mounted under /api/v1/)."""

from django.urls import path

from segments.api import views

urlpatterns = [
    path("segments", views.SegmentListView.as_view(), name="segments"),
    path("segments/preview", views.SegmentPreviewView.as_view(), name="segment-preview"),
    path("segments/templates", views.SegmentTemplatesView.as_view(), name="segment-templates"),
    path("segments/from-template", views.SegmentFromTemplateView.as_view(), name="segment-from-template"),
    path("segments/catalogue", views.SegmentCatalogueView.as_view(), name="segment-catalogue"),
    path("segments/mine", views.MySegmentsView.as_view(), name="segments-mine"),
    path("segments/<slug:key>", views.SegmentDetailView.as_view(), name="segment-detail"),
    path("segments/<slug:key>/recompute", views.SegmentRecomputeView.as_view(), name="segment-recompute"),
    path("segments/<slug:key>/members", views.SegmentMembersView.as_view(), name="segment-members"),
    path("profiles/<uuid:profile_id>/segments", views.ProfileSegmentsView.as_view(), name="profile-segments"),
]
