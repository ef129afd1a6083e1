"""Read-only API over stars and spectra, and the flag definitions."""

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.filters import DesignationFilter, IntegerFilter, StrictFilterSet, flag_filters, range_filters
from core.flags import FLAG_WORDS, SPECTRUM_FLAGS
from core.rules import catalog_rules_current, flag_thresholds

from .models import Spectrum, Star
from .serializers import SpectrumSerializer, StarSerializer


class StarFilterSet(StrictFilterSet):
    cone_fields = ("ra", "dec")
    designation = DesignationFilter(field_name="designation", lookup_expr="exact")
    gaia_source_id = IntegerFilter(field_name="gaia_source_id")

    class Meta:
        model = Star
        fields: list[str] = []


class SpectrumFilterSet(StrictFilterSet):
    cone_fields = ("star__ra", "star__dec")
    designation = DesignationFilter(field_name="star__designation")
    gaia_source_id = IntegerFilter(field_name="star__gaia_source_id")
    medres_specid = django_filters.CharFilter(field_name="medres_specid")
    objname = django_filters.CharFilter(field_name="objname")
    plan_id = django_filters.CharFilter(field_name="plan_id")
    kind = django_filters.ChoiceFilter(choices=Spectrum.Kind.choices)
    status = django_filters.ChoiceFilter(choices=Spectrum.Status.choices)
    generated_filters = (
        range_filters("snr_blue", "blue-arm S/N"),
        range_filters("snr_red", "red-arm S/N"),
        flag_filters("flags", SPECTRUM_FLAGS),
    )

    class Meta:
        model = Spectrum
        fields: list[str] = []


class StarViewSet(viewsets.ReadOnlyModelViewSet):
    """Stars: one per sky position; a star has many spectra."""

    queryset = Star.objects.all()
    serializer_class = StarSerializer
    filterset_class = StarFilterSet


class SpectrumViewSet(viewsets.ReadOnlyModelViewSet):
    """MRS spectra (nightly coadds and single exposures) with their header facts and flags."""

    queryset = Spectrum.objects.select_related("star")
    serializer_class = SpectrumSerializer
    filterset_class = SpectrumFilterSet


class FlagDefinitionsView(APIView):
    """Every flag bit of every flag word: name, bit, value, level and meaning."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        thresholds = flag_thresholds(catalog=catalog_rules_current())  # the rules in force
        return Response(
            {
                word.name: {
                    "description": word.description,
                    "bits": [
                        {"bit": f.bit, "value": f.mask, "name": f.name, "level": f.level.value, "meaning": f.meaning_for(thresholds)}
                        for f in word
                    ],
                }
                for word in FLAG_WORDS
            }
        )
