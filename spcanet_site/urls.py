from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from inference.api import (
    CatalogEntryViewSet,
    CatalogExportView,
    CatalogReleaseViewSet,
    LabelSetViewSet,
    ModelVersionViewSet,
)
from spectra.api import FlagDefinitionsView, SpectrumViewSet, StarViewSet

router = DefaultRouter()
router.register("stars", StarViewSet)
router.register("spectra", SpectrumViewSet)
router.register("model-versions", ModelVersionViewSet)
router.register("releases", CatalogReleaseViewSet, basename="release")
router.register("label-sets", LabelSetViewSet)
router.register(r"releases/(?P<release_name>[-\w]+)/entries", CatalogEntryViewSet, basename="release-entry")

api_v1 = [
    path("flags/", FlagDefinitionsView.as_view(), name="flags"),
    path("releases/<slug:release_name>/export.csv", CatalogExportView.as_view(), name="release-export"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="api-docs", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
