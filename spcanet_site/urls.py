from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from inference.api import (
    CatalogEntryViewSet,
    CatalogReleaseViewSet,
    CatalogStarViewSet,
    LabelSetViewSet,
    ModelVersionEvaluationPlotView,
    ModelVersionViewSet,
    ReleaseKielDiagramView,
    SpectrumArraysFITSView,
    SpectrumArraysJSONView,
)
from inference.download_api import (
    FIXED_FORMAT_VIEWS,
    STAR_FIXED_FORMAT_VIEWS,
    CatalogCSVExportView,
    CatalogCSVMetadataView,
    CatalogExportView,
    StarCSVMetadataView,
    StarExportView,
)
from spectra.api import FlagDefinitionsView, SpectrumViewSet, StarViewSet
from tasks.api import ProcessingRunViewSet
from validation.api import (
    ReferenceSurveyViewSet,
    ReleaseValidationCSVView,
    ReleaseValidationPlotView,
    ReleaseValidationView,
)
from validation.views import release_validation_page

router = DefaultRouter()
router.register("stars", StarViewSet)
router.register("spectra", SpectrumViewSet)
router.register("model-versions", ModelVersionViewSet)
router.register("releases", CatalogReleaseViewSet, basename="release")
router.register("label-sets", LabelSetViewSet)
router.register("reference-surveys", ReferenceSurveyViewSet)
router.register("processing-runs", ProcessingRunViewSet)
router.register(r"releases/(?P<release_name>[-\w]+)/entries", CatalogEntryViewSet, basename="release-entry")
router.register(r"releases/(?P<release_name>[-\w]+)/stars", CatalogStarViewSet, basename="release-star")

api_v1 = [
    path("flags/", FlagDefinitionsView.as_view(), name="flags"),
    path("spectra/<int:pk>/arrays.json", SpectrumArraysJSONView.as_view(), name="spectrum-arrays-json"),
    path("spectra/<int:pk>/arrays.fits", SpectrumArraysFITSView.as_view(), name="spectrum-arrays-fits"),
    path("releases/<slug:release_name>/export/", CatalogExportView.as_view(), name="release-download"),
    path("releases/<slug:release_name>/export.csv", CatalogCSVExportView.as_view(), name="release-export"),
    path("releases/<slug:release_name>/export.csv-metadata.json", CatalogCSVMetadataView.as_view(),
         name="release-export-metadata"),
    *(path(f"releases/<slug:release_name>/export.{extension}", view.as_view(), name=f"release-export-{extension}")
      for extension, view in FIXED_FORMAT_VIEWS.items()),
    path("releases/<slug:release_name>/stars/export/", StarExportView.as_view(), name="release-stars-download"),
    path("releases/<slug:release_name>/stars/export.csv-metadata.json", StarCSVMetadataView.as_view(),
         name="release-stars-export-metadata"),
    *(path(f"releases/<slug:release_name>/stars/export.{extension}", view.as_view(),
           name=f"release-stars-export-{extension}")
      for extension, view in STAR_FIXED_FORMAT_VIEWS.items()),
    path("releases/<slug:name>/kiel.png", ReleaseKielDiagramView.as_view(), name="release-kiel-diagram"),
    path("releases/<slug:name>/validation/", ReleaseValidationView.as_view(), name="release-validation"),
    path("releases/<slug:name>/validation.csv", ReleaseValidationCSVView.as_view(), name="release-validation-csv"),
    path("releases/<slug:name>/validation/<slug:survey>.png", ReleaseValidationPlotView.as_view(),
         name="release-validation-plot"),
    path("model-versions/<slug:name>/evaluation.png", ModelVersionEvaluationPlotView.as_view(),
         name="model-version-evaluation-plot"),
    path("", include(router.urls)),
]

handler404 = "core.api.errors.not_found"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="api-docs", permanent=False)),
    path("admin/", admin.site.urls),
    path("releases/<slug:name>/validation/", release_validation_page, name="release-validation-page"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # IVOA services at the root, where VO clients expect them: /vo/scs/<release>/, /tap/...
    path("", include("vo.urls")),
]
