from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from core.api.serializers import DirectRepresentationMixin
from core.flags import CATALOG_FLAGS, LABEL_FLAGS
from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS

from .columns import STAR_COLUMNS, api_field_help
from .models import CatalogEntry, CatalogRelease, CatalogStar, LabelSet, ModelVersion
from .services.release_files import ENTRIES, release_files_list


@extend_schema_field(OpenApiTypes.URI)
class SpectrumArraysLinkField(serializers.Field):
    """The URL of a spectrum's normalised arrays (``arrays.json`` or ``arrays.fits``), from its id."""

    def __init__(self, *, fmt: str, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)
        self.fmt = fmt

    _ID = 918273645546372819  # stands for the id in the URL reversed once per request

    def to_representation(self, spectrum_id):
        request = self.context.get("request")
        cached = getattr(self, "_template", None)
        if cached is None or cached[0] is not request:
            url = reverse(f"spectrum-arrays-{self.fmt}", kwargs={"pk": self._ID}, request=request)
            cached = self._template = (request, url.replace(str(self._ID), "{}"))
        return cached[1].format(int(spectrum_id))


class ModelVersionSerializer(serializers.ModelSerializer):
    reference_catalog = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    evaluation_plot = serializers.HyperlinkedIdentityField(
        view_name="model-version-evaluation-plot", lookup_field="name", read_only=True
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "role", "artifact_sha256", "config", "training_set_hash", "reference_catalog", "metrics",
            "evaluation_plot", "code_version", "preprocessing_version", "created_at",
        ]


class ReleaseFileSerializer(serializers.Serializer):
    """One written whole-table file of a published release (inference.services.release_files)."""

    name = serializers.CharField(help_text="File name (as in SHA256SUMS).")
    table = serializers.ChoiceField(choices=["entries", "stars"])
    format = serializers.CharField(help_text="The download format (the `format` query value).")
    rows = serializers.IntegerField()
    bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    written = serializers.DateTimeField()
    url = serializers.URLField(help_text="The download that serves this file.")


class CatalogReleaseSerializer(serializers.ModelSerializer):
    formal_model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    alternate_model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    kiel_diagram = serializers.HyperlinkedIdentityField(
        view_name="release-kiel-diagram", lookup_field="name", read_only=True
    )
    entries = serializers.HyperlinkedIdentityField(
        view_name="release-entry-list", lookup_field="name", lookup_url_kwarg="release_name", read_only=True
    )
    stars = serializers.HyperlinkedIdentityField(
        view_name="release-star-list", lookup_field="name", lookup_url_kwarg="release_name", read_only=True
    )
    files = serializers.SerializerMethodField(
        help_text="The whole tables written as files, which unfiltered downloads are served from, with checksums."
    )

    class Meta:
        model = CatalogRelease
        fields = [
            "id", "name", "description", "status", "formal_model", "alternate_model", "rules",
            "entry_count", "good_count", "star_count", "good_star_count", "entries", "stars", "kiel_diagram",
            "created_at", "published_at", "files",
        ]

    @extend_schema_field(ReleaseFileSerializer(many=True))
    def get_files(self, release: CatalogRelease) -> list[dict]:
        """The release's written whole-table files (none for a draft, or before they are written)."""
        request = self.context.get("request")
        files = []
        for written in release_files_list(release=release):
            view = "release-download" if written.table == ENTRIES else "release-stars-download"
            url = reverse(view, kwargs={"release_name": release.name}, request=request) + f"?format={written.format}"
            files.append({"name": written.name, "table": written.table, "format": written.format,
                          "rows": written.rows, "bytes": written.bytes, "sha256": written.sha256,
                          "written": written.written, "url": url})
        return files


class LabelSetSerializer(serializers.ModelSerializer):
    model_version = serializers.SlugRelatedField(slug_field="name", read_only=True)
    flag_names = serializers.SerializerMethodField()

    class Meta:
        model = LabelSet
        fields = ["id", "spectrum", "model_version", *LABEL_FIELDS, *LABEL_ERROR_FIELDS, "flags", "flag_names", "predicted_at"]

    def get_flag_names(self, label_set: LabelSet) -> list[str]:
        return LABEL_FLAGS.names(label_set.flags)


_ENTRY_FIELDS = [
    "id", "spectrum", "designation", "gaia_source_id", "medres_specid", "medid_blue", "medid_red",
    "ra", "dec", "snr_blue", "snr_red", "rv_blue", "rv_blue_err", "rv_red", "rv_red_err", *LABEL_FIELDS,
    *LABEL_ERROR_FIELDS,
    "flag", "flag_bits", "flag_names", "spectrum_arrays_json", "spectrum_arrays_fits",
]


class CatalogEntrySerializer(DirectRepresentationMixin, serializers.ModelSerializer):
    flag_names = serializers.SerializerMethodField()
    spectrum_arrays_json = SpectrumArraysLinkField(fmt="json", source="spectrum_id")
    spectrum_arrays_fits = SpectrumArraysLinkField(fmt="fits", source="spectrum_id")

    class Meta:
        model = CatalogEntry
        fields = _ENTRY_FIELDS
        extra_kwargs = api_field_help()  # descriptions, units and UCDs of the downloads' columns

    def get_flag_names(self, entry: CatalogEntry) -> list[str]:
        return CATALOG_FLAGS.names(entry.flag_bits)


class CatalogEntryDetailSerializer(CatalogEntrySerializer):
    """One entry with both models' labels, so the agreement test can be checked."""

    formal_labels = LabelSetSerializer(read_only=True)
    alternate_labels = LabelSetSerializer(read_only=True)

    class Meta(CatalogEntrySerializer.Meta):
        fields = [*_ENTRY_FIELDS, "formal_labels", "alternate_labels"]


class CatalogStarSerializer(DirectRepresentationMixin, serializers.ModelSerializer):
    """One star of a release: its Flag = 1 spectra combined, and links to its best spectrum."""

    best_spectrum_arrays_json = SpectrumArraysLinkField(fmt="json", source="best_spectrum_id")
    best_spectrum_arrays_fits = SpectrumArraysLinkField(fmt="fits", source="best_spectrum_id")

    class Meta:
        model = CatalogStar
        fields = [
            "id", "star", "designation", "gaia_source_id", "ra", "dec", *LABEL_FIELDS, *LABEL_ERROR_FIELDS,
            *(f"{field}_chi2r" for field in LABEL_FIELDS), "n_spectra", "n_spectra_all", "flag",
            "best_spectrum", "best_medres_specid", "best_spectrum_arrays_json", "best_spectrum_arrays_fits",
        ]
        extra_kwargs = api_field_help(STAR_COLUMNS)  # descriptions, units and UCDs of the downloads' columns
