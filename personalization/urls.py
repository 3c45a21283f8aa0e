"""URL map: admin, collection endpoints, API v1, schema and docs, snippet, demo storefront, health."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from personalization import health
from privacy import views as privacy_views
from tracking import views as tracking_views
from tracking.api import pixel
from tracking.api.collect import SegmentBatchView, segment_view

segment_urls = [
    path(f"v1/{kind}", segment_view(kind), name=f"segment-{kind}")
    for kind in ("track", "identify", "page", "screen", "alias", "group")
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/privacy/inventory/", privacy_views.inventory, name="privacy-inventory"),
    path("admin/recommenders/insight/", include("recommenders.admin_insight")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tracking.api.urls")),
    path("api/v1/", include("privacy.urls")),
    path("api/v1/", include("segments.api.urls")),
    path("api/v1/", include("recommenders.api.urls")),
    path("api/v1/", include("experiments.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    *segment_urls,
    path("v1/batch", SegmentBatchView.as_view(), name="segment-batch"),
    path("p.gif", pixel.pixel, name="pixel"),
    path("pz.js", tracking_views.snippet_latest, name="snippet"),
    path("pz/<str:version>/pz.js", tracking_views.snippet_versioned, name="snippet-versioned"),
    path("demo/", tracking_views.demo_store, name="demo-store"),
    path("healthz", health.live, name="health-live"),
    path("readyz", health.ready, name="health-ready"),
]

if settings.BENCH_FLOOR_ENABLED:
    from personalization.bench_views import FloorView

    urlpatterns.append(path("bench/floor", FloorView.as_view(), name="bench-floor"))
