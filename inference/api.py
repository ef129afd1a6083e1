"""Read-only API over model versions, releases, their entries, and the CSV export."""

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.generics import GenericAPIView

from spectra.renderers import ImageErrorsAsJSONMixin

from .export import stream_csv
from .filters import CatalogEntryFilterSet, LabelSetFilterSet, ModelVersionFilterSet
from .models import CatalogEntry, CatalogRelease, LabelSet, ModelVersion
from .selectors import label_sets_visible, model_versions_visible, release_entries, releases_visible
from .serializers import (
    CatalogEntryDetailSerializer,
    CatalogEntrySerializer,
    CatalogReleaseSerializer,
    LabelSetSerializer,
    ModelVersionSerializer,
)

# Errors of the image endpoints are JSON (spectra.renderers.ImageErrorsAsJSONMixin).
_PNG_SCHEMA = extend_schema(responses={
    (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY),
    (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="No such (visible) object."),
})


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Trained networks with their configuration and test-set evaluation (accuracy and
    precision per label in S/N bins, uncertainty calibration). Anonymous users see the
    models of published releases only."""

    queryset = ModelVersion.objects.none()  # the real one depends on the user
    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    lookup_field = "name"

    def get_queryset(self):
        return model_versions_visible(user=self.request.user).select_related("reference_catalog")


class CatalogReleaseViewSet(viewsets.ReadOnlyModelViewSet):
    """Catalog releases. Anonymous users see published releases only."""

    serializer_class = CatalogReleaseSerializer
    lookup_field = "name"
    filterset_class = None

    def get_queryset(self):
        return releases_visible(user=self.request.user)


class CatalogEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The labels of one release, one row per spectrum, filterable on every label."""

    filterset_class = CatalogEntryFilterSet
    queryset = CatalogEntry.objects.none()  # the real one depends on the URL's release
    lookup_value_converter = "int"

    def get_release(self) -> CatalogRelease:
        if not hasattr(self, "_release"):
            self._release = get_object_or_404(
                releases_visible(user=self.request.user), name=self.kwargs["release_name"]
            )
        return self._release

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        entries = release_entries(release=self.get_release())
        if self.action == "retrieve":
            entries = entries.select_related("formal_labels__model_version", "alternate_labels__model_version")
        return entries

    def get_serializer_class(self):
        return CatalogEntryDetailSerializer if self.action == "retrieve" else CatalogEntrySerializer


class LabelSetViewSet(viewsets.ReadOnlyModelViewSet):
    """Every visible model's labels for every spectrum: anonymous users see the labels of
    the models of published releases; staff see every model's, released or not."""

    queryset = LabelSet.objects.none()  # the real one depends on the user
    serializer_class = LabelSetSerializer
    filterset_class = LabelSetFilterSet

    def get_queryset(self):
        return label_sets_visible(user=self.request.user).select_related("model_version")


class CatalogExportView(GenericAPIView):
    """The release as CSV in the published column order (paper Table 2), streamed.

    Accepts the same filters as the release's entries endpoint.
    """

    queryset = CatalogEntry.objects.none()
    filterset_class = CatalogEntryFilterSet
    pagination_class = None

    @extend_schema(
        filters=True,
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with '#' header comments")},
    )
    def get(self, request, release_name: str):
        release = get_object_or_404(releases_visible(user=request.user), name=release_name)
        entries = self.filter_queryset(release_entries(release=release))
        applied = {key: value for key, value in request.query_params.items() if key != "format"}
        response = StreamingHttpResponse(
            stream_csv(release, entries, applied, settings.EXPORT_CHUNK_SIZE),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="spcanet-{release.name}.csv"'
        return response


class ModelVersionEvaluationPlotView(ImageErrorsAsJSONMixin, GenericAPIView):
    """Accuracy and precision per label against S/N on the test set (paper Fig. 7), as PNG."""

    lookup_field = "name"
    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        return model_versions_visible(user=self.request.user)

    @_PNG_SCHEMA
    def get(self, request, name: str):
        from .plots import evaluation_figure_png

        return HttpResponse(evaluation_figure_png(self.get_object()), content_type="image/png")


class ReleaseKielDiagramView(ImageErrorsAsJSONMixin, GenericAPIView):
    """Teff against log g of a release's Flag = 1 rows, coloured by [Fe/H], with MIST isochrones, as PNG."""

    lookup_field = "name"
    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        return releases_visible(user=self.request.user)

    @_PNG_SCHEMA
    def get(self, request, name: str):
        from .plots import kiel_diagram_png

        return HttpResponse(kiel_diagram_png(self.get_object()), content_type="image/png")
