import django_filters

from core.api.filters import (
    DesignationFilter,
    FlagFilter,
    FloatFilter,
    IntegerFilter,
    StrictFilterSet,
    flag_filters,
    range_filters,
)
from core.flags import CATALOG_FLAGS, LABEL_FLAGS
from core.labels import LABELS

from .models import CatalogEntry, CatalogStar, LabelSet, ModelVersion


def _label_range_filters() -> dict:
    filters: dict = {}
    for label in LABELS:
        filters.update(range_filters(label.field, label.column, label.unit))
    return filters


class CatalogEntryFilterSet(StrictFilterSet):
    """Filters of a release's entries; the CSV export accepts exactly the same."""

    cone_fields = ("ra", "dec")
    flag = FlagFilter()
    designation = DesignationFilter(field_name="designation")
    gaia_source_id = IntegerFilter(field_name="gaia_source_id")
    medres_specid = django_filters.CharFilter(field_name="medres_specid")
    snr_min = FloatFilter(method="filter_snr_both_arms", label="Minimum S/N in both arms")
    generated_filters = (
        _label_range_filters(),
        range_filters("snr_blue", "blue-arm S/N"),
        range_filters("snr_red", "red-arm S/N"),
        flag_filters("flag_bits", CATALOG_FLAGS),
    )

    class Meta:
        model = CatalogEntry
        fields: list[str] = []

    def filter_snr_both_arms(self, queryset, name, value):
        return queryset.filter(snr_blue__gte=value, snr_red__gte=value)


class CatalogStarFilterSet(StrictFilterSet):
    """Filters of a release's star table (and of its downloads)."""

    cone_fields = ("ra", "dec")
    flag = FlagFilter(choices=[("1", "1 has a Flag = 1 spectrum"), ("0", "0 has none")])
    star = IntegerFilter(field_name="star_id", label="Star id")
    designation = DesignationFilter(field_name="designation")
    gaia_source_id = IntegerFilter(field_name="gaia_source_id")
    n_spectra_min = IntegerFilter(field_name="n_spectra", lookup_expr="gte", label="Minimum number of Flag = 1 spectra")
    n_spectra_max = IntegerFilter(field_name="n_spectra", lookup_expr="lte", label="Maximum number of Flag = 1 spectra")
    generated_filters = (_label_range_filters(),)

    class Meta:
        model = CatalogStar
        fields: list[str] = []


class LabelSetFilterSet(StrictFilterSet):
    spectrum = IntegerFilter(field_name="spectrum_id", label="Spectrum id")
    medres_specid = django_filters.CharFilter(field_name="spectrum__medres_specid")
    model_version = django_filters.CharFilter(field_name="model_version__name")
    generated_filters = (_label_range_filters(), flag_filters("flags", LABEL_FLAGS))

    class Meta:
        model = LabelSet
        fields: list[str] = []


class ModelVersionFilterSet(StrictFilterSet):
    role = django_filters.ChoiceFilter(choices=ModelVersion.Role.choices)

    class Meta:
        model = ModelVersion
        fields: list[str] = []
