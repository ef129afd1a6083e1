"""Read-only API over model versions, releases, their entries and stars, and spectra's
arrays. The downloads are in inference/download_api.py."""

import logging
import re

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse

from core.api.filters import INT64_MAX
from core.api.renderers import FITSRenderer, ImageErrorsAsJSONMixin
from spectra.arrays_formats import SpectrumArrays, spectrum_arrays_document, spectrum_arrays_fits
from spectra.selectors import SpectrumArraysUnavailable, spectrum_arrays_read

from .filters import CatalogEntryFilterSet, CatalogStarFilterSet, LabelSetFilterSet, ModelVersionFilterSet
from .models import CatalogEntry, CatalogRelease, CatalogStar, LabelSet, ModelVersion
from .selectors import (
    label_sets_visible,
    model_versions_visible,
    release_entries,
    release_stars,
    releases_visible,
    spectra_visible,
)
from .serializers import (
    CatalogEntryDetailSerializer,
    CatalogEntrySerializer,
    CatalogReleaseSerializer,
    CatalogStarSerializer,
    LabelSetSerializer,
    ModelVersionSerializer,
)

logger = logging.getLogger(__name__)

# Errors of the image endpoints are JSON (core.api.renderers.ImageErrorsAsJSONMixin).
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


class CatalogStarViewSet(viewsets.ReadOnlyModelViewSet):
    """The star table of one release: one row per star, its Flag = 1 spectra combined
    (inverse-variance weighted labels and uncertainties, reduced chi-square, counts, the
    best spectrum with links to its arrays). Anonymous users see published releases only."""

    filterset_class = CatalogStarFilterSet
    serializer_class = CatalogStarSerializer
    queryset = CatalogStar.objects.none()  # the real one depends on the URL's release
    lookup_value_converter = "int"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        release = get_object_or_404(releases_visible(user=self.request.user), name=self.kwargs["release_name"])
        return release_stars(release=release)


class _SpectrumArraysBase(GenericAPIView):
    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        return spectra_visible(user=self.request.user)

    def read_arrays(self) -> SpectrumArrays:
        if self.kwargs["pk"] > INT64_MAX:
            raise NotFound("No Spectrum matches the given query.")
        spectrum = self.get_object()
        try:
            return spectrum_arrays_read(spectrum=spectrum)
        except SpectrumArraysUnavailable as error:
            logger.warning("%s", error)
            raise NotFound(str(error)) from None


_ARRAYS_404 = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="No such spectrum in a release you may read, or its arrays are not in the array store (detail says which).",
)


class SpectrumArraysJSONView(_SpectrumArraysBase):
    """A spectrum's normalised rest-frame arrays as JSON: per arm (blue, red) the vacuum
    wavelength grid (Angstrom), flux, ivar and mask (true where ivar is 0), with the raw
    file's path and sha256 and the preprocessing version. Anonymous users reach the spectra
    of published releases; staff reach every spectrum."""

    renderer_classes = [JSONRenderer]

    @extend_schema(responses={(200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
                              (404, "application/json"): _ARRAYS_404})
    def get(self, request, pk: int):
        document = spectrum_arrays_document(self.read_arrays())
        document["fits"] = reverse("spectrum-arrays-fits", kwargs={"pk": pk}, request=request)
        return Response(document)


class SpectrumArraysFITSView(ImageErrorsAsJSONMixin, _SpectrumArraysBase):
    """A spectrum's normalised rest-frame arrays as FITS: provenance in the primary header
    (raw file path and sha256, preprocessing version, ids, RVs), then one binary table per
    arm (BLUE, RED) with wavelength (Angstrom, vacuum, rest frame), flux, ivar and mask.
    Errors are JSON."""

    renderer_classes = [FITSRenderer]

    @extend_schema(responses={(200, "application/fits"): OpenApiResponse(OpenApiTypes.BINARY),
                              (404, "application/json"): _ARRAYS_404})
    def get(self, request, pk: int):
        arrays = self.read_arrays()
        response = HttpResponse(spectrum_arrays_fits(arrays), content_type="application/fits")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", arrays.meta.get("medres_specid") or str(pk))
        response["Content-Disposition"] = f'attachment; filename="spectrum-{name}.fits"'
        return response
