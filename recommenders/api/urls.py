"""API routes of the recommenders app (mounted under /api/v1/)."""

urlpatterns: list = []
