"""URL map: admin, collection endpoints, API v1, schema and docs, snippet, demo storefront, health."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from experiments.api import urls as experiments_urls
from personalization import health
from privacy import urls as privacy_urls
from privacy import views as privacy_views
from recommenders.api import urls as recommenders_urls
from segments.api import urls as segments_urls
from tracking import views as tracking_views
from tracking.api import pixel
from tracking.api import urls as tracking_urls
from tracking.api.collect import SegmentBatchView, segment_view

segment_urls = [
    path(f"v1/{kind}", segment_view(kind), name=f"segment-{kind}")
    for kind in ("track", "identify", "page", "screen", "alias", "group")
]

# API v1 in one include, first: Django tries patterns in order, and each include that does not match
# raises and records what it tried (a request for recommendations spent ~60 us there behind three
# other apps' includes). The hot routes lead: event collection, then serving.
api_v1 = [
    *tracking_urls.urlpatterns,
    *recommenders_urls.urlpatterns,
    *experiments_urls.urlpatterns,
    *segments_urls.urlpatterns,
    *privacy_urls.urlpatterns,
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/privacy/inventory/", privacy_views.inventory, name="privacy-inventory"),
    path("admin/recommenders/insight/", include("recommenders.admin_insight")),
    path("admin/", admin.site.urls),
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
