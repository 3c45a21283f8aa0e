"""API routes of the segments app (mounted under /api/v1/)."""

urlpatterns: list = []
