from django.contrib import admin
from django.http import HttpResponse, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.admin import (
    CurationActionForm,
    PipelineRowsAdmin,
    ReadOnlyAdmin,
    WeakerArmSnrFilter,
    curation_actions,
    flag_bit_filter,
)
from core.flags import SPECTRUM_FLAGS

from .models import CurationRecord, SourceFile, Spectrum, SpectrumCopy, Star
from .services.curation import spectra_curate


@admin.register(Star)
class StarAdmin(PipelineRowsAdmin):
    designation_field = "designation"
    list_display = ["designation", "gaia_source_id", "ra", "dec", "created_at"]
    search_fields = ["^designation", "=gaia_source_id"]
    readonly_fields = ["created_at"]

    def has_add_permission(self, request) -> bool:
        return False  # stars come from ingest


class SpectrumCopyInline(admin.TabularInline):
    """Every file that held this spectrum; the row above keeps the best copy."""

    model = SpectrumCopy
    fields = ["source_file", "status", "flags", "snr_blue", "snr_red", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "copies in source files (the spectrum keeps the best)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Spectrum)
class SpectrumAdmin(PipelineRowsAdmin):
    designation_field = "star__designation"
    list_display = [
        "medres_specid", "kind", "star", "objname", "snr_blue", "snr_red", "status", "flag_summary",
    ]
    list_select_related = ["star"]
    list_filter = [
        flag_bit_filter(SPECTRUM_FLAGS, "flags"), WeakerArmSnrFilter, "status", "kind", "file_format",
    ]
    search_fields = ["=medres_specid", "^star__designation", "=star__gaia_source_id", "=objname", "=obsid"]
    action_form = CurationActionForm
    actions = curation_actions("spectrum", spectra_curate)
    raw_id_fields = ["star"]
    readonly_fields = ["figure", "flag_summary"] + [field.name for field in Spectrum._meta.fields]
    inlines = [SpectrumCopyInline]

    @admin.display(description="flags")
    def flag_summary(self, spectrum: Spectrum) -> str:
        return ", ".join(SPECTRUM_FLAGS.names(spectrum.flags)) or "-"

    @admin.display(description="spectrum")
    def figure(self, spectrum: Spectrum) -> str:
        url = reverse("admin:spectra_spectrum_figure", args=[spectrum.pk])
        return format_html('<img src="{}" alt="spectrum figure" style="max-width:100%">', url)

    def get_urls(self):
        figure = path("<int:pk>/figure.png", self.admin_site.admin_view(self.figure_view), name="spectra_spectrum_figure")
        return [figure, *super().get_urls()]

    def figure_view(self, request, pk: int):
        """The spectrum's figure as PNG, from its stored arrays; a missing spectrum or missing arrays is a JSON 404."""
        from .plots import PlotUnavailable, spectrum_figure_png

        spectrum = Spectrum.objects.select_related("star").filter(pk=pk).first()
        if spectrum is None:
            return JsonResponse({"detail": f"no spectrum with id {pk}"}, status=404)
        try:
            return HttpResponse(spectrum_figure_png(spectrum), content_type="image/png")
        except PlotUnavailable as error:
            return JsonResponse({"detail": str(error)}, status=404)

    def has_add_permission(self, request) -> bool:
        return False  # spectra come from ingest


@admin.register(CurationRecord)
class CurationRecordAdmin(ReadOnlyAdmin):
    """The curation log: never added, edited or deleted by hand."""

    list_display = ["created_at", "user", "action", "target_type", "target_id", "reason"]
    list_filter = ["action", "target_type"]
    list_select_related = ["user"]
    search_fields = ["=target_id", "reason"]


@admin.register(SourceFile)
class SourceFileAdmin(ReadOnlyAdmin):
    """Every file ingest has seen, and why the failed ones failed."""

    list_display = ["path", "status", "error_kind", "spectra_count", "reader", "updated_at"]
    list_filter = ["status", "error_kind", "reader"]
    search_fields = ["path", "=sha256"]
