"""Read-only API over model versions, releases, their entries, and the CSV export."""

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, viewsets
from rest_framework.generics import GenericAPIView

from .export import stream_csv
from .filters import CatalogEntryFilterSet, LabelSetFilterSet, ModelVersionFilterSet
from .models import CatalogEntry, CatalogRelease, LabelSet, ModelVersion
from .selectors import release_entries, releases_visible
from .serializers import (
    CatalogEntryDetailSerializer,
    CatalogEntrySerializer,
    CatalogReleaseSerializer,
    LabelSetSerializer,
    ModelVersionSerializer,
)


def _visible_releases(request):
    """Published releases for everyone; drafts too for staff."""
    releases = releases_visible()
    if not (request.user.is_authenticated and request.user.is_staff):
        releases = releases.filter(status=CatalogRelease.Status.PUBLISHED)
    return releases


class PNGRenderer(renderers.BaseRenderer):
    media_type = "image/png"
    format = "png"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


_PNG_SCHEMA = extend_schema(responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY)})


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Trained networks with their configuration and test-set evaluation (accuracy and
    precision per label in S/N bins, uncertainty calibration)."""

    queryset = ModelVersion.objects.select_related("reference_catalog")
    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    lookup_field = "name"


class CatalogReleaseViewSet(viewsets.ReadOnlyModelViewSet):
    """Catalog releases. Anonymous users see published releases only."""

    serializer_class = CatalogReleaseSerializer
    lookup_field = "name"
    filterset_class = None

    def get_queryset(self):
        return _visible_releases(self.request)


class CatalogEntryViewSet(viewsets.ReadOnlyModelViewSet):
    """The labels of one release, one row per spectrum, filterable on every label."""

    filterset_class = CatalogEntryFilterSet
    queryset = CatalogEntry.objects.none()  # the real one depends on the URL's release
    lookup_value_converter = "int"

    def get_release(self) -> CatalogRelease:
        if not hasattr(self, "_release"):
            self._release = get_object_or_404(_visible_releases(self.request), name=self.kwargs["release_name"])
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
    """Every model's labels for every spectrum, including models not in any release."""

    queryset = LabelSet.objects.select_related("model_version")
    serializer_class = LabelSetSerializer
    filterset_class = LabelSetFilterSet


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
        release = get_object_or_404(_visible_releases(request), name=release_name)
        entries = self.filter_queryset(release_entries(release=release))
        applied = {key: value for key, value in request.query_params.items() if key != "format"}
        response = StreamingHttpResponse(
            stream_csv(release, entries, applied, settings.EXPORT_CHUNK_SIZE),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="spcanet-{release.name}.csv"'
        return response


class ModelVersionEvaluationPlotView(GenericAPIView):
    """Accuracy and precision per label against S/N on the test set (paper Fig. 7), as PNG."""

    queryset = ModelVersion.objects.all()
    lookup_field = "name"
    renderer_classes = [PNGRenderer]
    pagination_class = None
    filter_backends = []

    @_PNG_SCHEMA
    def get(self, request, name: str):
        from .plots import evaluation_figure_png

        return HttpResponse(evaluation_figure_png(self.get_object()), content_type="image/png")


class ReleaseKielDiagramView(GenericAPIView):
    """Teff against log g of a release's Flag = 1 rows, coloured by [Fe/H], with MIST isochrones, as PNG."""

    lookup_field = "name"
    renderer_classes = [PNGRenderer]
    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        return _visible_releases(self.request)

    @_PNG_SCHEMA
    def get(self, request, name: str):
        from .plots import kiel_diagram_png

        return HttpResponse(kiel_diagram_png(self.get_object()), content_type="image/png")
