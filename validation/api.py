"""Validation results over the API: the Table-1-like matrix, its CSV, the Fig. 13-14 plots."""

import csv
import io

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.renderers import ImageErrorsAsJSONMixin
from core.labels import LABEL_FIELDS
from inference.selectors import release_visible_by_name, releases_visible

from .models import ReferenceSurvey, ValidationResult
from .selectors import TABLE_FIELDS, validation_table


class ReferenceSurveySerializer(serializers.ModelSerializer):
    class Meta:
        model = ReferenceSurvey
        fields = ["id", "name", "survey", "data_release", "catalog_format", "quality_cut", "row_count",
                  "clean_count", "matched_count", "column_mapping", "imported_at"]


class ReferenceSurveyViewSet(viewsets.ReadOnlyModelViewSet):
    """Imported catalogs of other surveys (APOGEE, GALAH, RAVE, mapped catalogs)."""

    queryset = ReferenceSurvey.objects.all()
    serializer_class = ReferenceSurveySerializer
    lookup_field = "name"
    filterset_class = None


class ReleaseValidationView(APIView):
    """Bias and scatter of a release against every validated survey, per label (paper Table 1).

    ``?compare=OTHER`` adds another release's table for a side-by-side comparison.
    """

    @extend_schema(parameters=[OpenApiParameter("compare", str, description="Another release's name.")],
                   responses=OpenApiResponse(OpenApiTypes.OBJECT))
    def get(self, request, name: str):
        release = get_object_or_404(releases_visible(user=request.user), name=name)
        payload = validation_table(release=release)
        other = request.query_params.get("compare")
        if other is not None:
            compared = release_visible_by_name(user=request.user, name=other)
            if compared is None:
                raise ValidationError({"compare": f"no release named {other[:80]!r}"})
            payload["compare"] = validation_table(release=compared)
        return Response(payload)


class ReleaseValidationCSVView(APIView):
    """The validation of a release as CSV: one row per survey and label."""

    @extend_schema(responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)})
    def get(self, request, name: str):
        release = get_object_or_404(releases_visible(user=request.user), name=name)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["release", "survey", "label", *TABLE_FIELDS])
        for result in ValidationResult.objects.filter(release=release).select_related("survey"):
            writer.writerow([release.name, result.survey.name, result.label,
                             *("" if getattr(result, f) is None else getattr(result, f) for f in TABLE_FIELDS)])
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="spcanet-{release.name}-validation.csv"'
        return response


class ReleaseValidationPlotView(ImageErrorsAsJSONMixin, APIView):
    """Differences against our value for every label of one survey (paper Figs. 13-14), PNG."""

    @extend_schema(responses={
        (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY),
        (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="No such release or validation."),
    })
    def get(self, request, name: str, survey: str):
        from .plots import differences_figure_png

        release = get_object_or_404(releases_visible(user=request.user), name=name)
        results = list(ValidationResult.objects.filter(release=release, survey__name=survey)
                       .select_related("release", "survey"))
        if not results:
            raise NotFound(f"release {release.name} has no validation against a survey named {survey!r}")
        results.sort(key=lambda r: LABEL_FIELDS.index(r.label))
        return HttpResponse(differences_figure_png(results), content_type="image/png")
