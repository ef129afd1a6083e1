from django import forms
from django.contrib import admin, messages
from django.db import router, transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from core.admin import (
    CurationActionForm,
    PipelineRowsAdmin,
    ReadOnlyAdmin,
    WeakerArmSnrFilter,
    curation_actions,
    flag_bit_filter,
)
from core.flags import CATALOG_FLAGS, LABEL_FLAGS
from core.labels import LABEL_FIELDS, LABELS

from .models import (
    CatalogEntry,
    CatalogRelease,
    CatalogStar,
    LabelSet,
    ModelVersion,
    ReferenceCatalog,
    ReferenceLabel,
)
from .partitions import ReleaseBusyError
from .services.release import (
    ReleaseImmutableError,
    catalog_entries_curate,
    catalog_release_build,
    catalog_release_create,
    catalog_release_models_check,
    catalog_release_publish,
)


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "role", "reference_catalog", "artifact_sha256", "preprocessing_version", "created_at"]
    list_filter = ["role", "preprocessing_version"]
    search_fields = ["name", "=artifact_sha256"]
    readonly_fields = ["evaluation", "evaluation_plot"] + [field.name for field in ModelVersion._meta.fields]

    @admin.display(description="test-set evaluation (S/N > 10)")
    def evaluation(self, version: ModelVersion) -> str:
        metrics = version.metrics or {}
        if "overall" not in metrics:
            return "-"
        rows = []
        for label in LABELS:
            overall = metrics["overall"].get(label.field, {})
            calibration = metrics.get("calibration", {}).get(label.field, {})
            rows.append((label.column, overall.get("n", 0), _number(overall.get("bias")), _number(overall.get("std")),
                         _number(overall.get("robust_std")), _number(calibration.get("z_std"), 2),
                         _number(calibration.get("within_1sigma"), 2)))
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            "<table><tr><th>label</th><th>n</th><th>bias</th><th>sigma</th><th>robust sigma</th>"
            "<th>z spread</th><th>within 1 sigma</th></tr>{}</table>", body)

    @admin.display(description="accuracy and precision against S/N (Fig. 7)")
    def evaluation_plot(self, version: ModelVersion) -> str:
        url = reverse("model-version-evaluation-plot", kwargs={"name": version.name})
        return format_html('<img src="{}" alt="evaluation" style="max-width:100%">', url)


@admin.register(ReferenceCatalog)
class ReferenceCatalogAdmin(ReadOnlyAdmin):
    list_display = ["name", "row_count", "good_count", "matched_count", "source_path", "imported_at"]
    search_fields = ["name"]


@admin.register(ReferenceLabel)
class ReferenceLabelAdmin(ReadOnlyAdmin):
    list_display = ["source_id", "catalog", "star", "match_method", "match_separation_arcsec", "quality_ok", "teff", "teff_err",
                    "logg", "logg_err", "fe_h", "fe_h_err"]
    list_select_related = ["catalog", "star"]
    list_filter = ["catalog", "quality_ok", "match_method"]
    search_fields = ["=source_id", "=gaia_source_id", "^star__designation"]
    raw_id_fields = ["star"]


@admin.register(LabelSet)
class LabelSetAdmin(ReadOnlyAdmin):
    designation_field = "spectrum__star__designation"
    list_display = ["spectrum", "model_version", "teff", "logg", "fe_h", "flags", "predicted_at"]
    list_select_related = ["spectrum", "model_version"]
    list_filter = ["model_version", flag_bit_filter(LABEL_FLAGS, "flags")]
    search_fields = ["=spectrum__medres_specid", "^spectrum__star__designation", "=spectrum__star__gaia_source_id"]
    raw_id_fields = ["spectrum"]


class CatalogReleaseAdminForm(forms.ModelForm):
    class Meta:
        model = CatalogRelease
        fields = ["name", "description", "formal_model", "alternate_model"]

    def clean(self):
        data = super().clean()
        if self.instance.pk is None and data.get("formal_model") and data.get("alternate_model"):
            try:
                catalog_release_models_check(formal_model=data["formal_model"], alternate_model=data["alternate_model"])
            except ValueError as error:
                raise forms.ValidationError(str(error)) from error
        return data


@admin.register(CatalogRelease)
class CatalogReleaseAdmin(admin.ModelAdmin):
    form = CatalogReleaseAdminForm
    list_display = ["name", "status", "formal_model", "alternate_model", "entry_count", "good_count", "created_at", "published_at"]
    list_filter = ["status"]
    list_select_related = ["formal_model", "alternate_model"]
    readonly_fields = ["status", "entry_count", "good_count", "rules", "created_at", "published_at", "created_by",
                       "kiel_diagram"]
    actions = ["build_entries", "publish"]

    @admin.display(description="Kiel diagram (Flag = 1)")
    def kiel_diagram(self, release: CatalogRelease) -> str:
        if release.pk is None or not release.entry_count:
            return "-"
        url = reverse("release-kiel-diagram", kwargs={"name": release.name})
        return format_html('<img src="{}" alt="Kiel diagram" style="max-width:100%">', url)

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            fields += ["name", "formal_model", "alternate_model"]
            if obj.is_published:
                fields.append("description")
        return fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or not obj.is_published)

    def get_deleted_objects(self, objs, request):
        """What the deletion page lists: the releases, and how many rows of each kind go with
        them (entries, star rows, validation results: the release's own rows, counted, not
        listed one by one, as a release holds millions). A published release is refused."""
        releases = list(objs)
        perms_needed = {str(self.opts.verbose_name)} if any(
            not self.has_delete_permission(request, release) for release in releases) else set()
        ids = [release.pk for release in releases]
        model_count = {str(self.opts.verbose_name_plural): len(releases)}
        for relation in self.opts.related_objects:  # (all CASCADE, none with rows of its own below)
            count = relation.related_model._default_manager.filter(**{f"{relation.field.name}__in": ids}).count()
            if count:
                model_count[str(relation.related_model._meta.verbose_name_plural)] = count
        listed = [f"{capfirst(self.opts.verbose_name)}: {release}" for release in releases]
        return listed, model_count, perms_needed, []

    # The checks above read the releases unlocked: a release published meanwhile, or being
    # built, is refused again under the row locks the publication takes too, and the whole
    # deletion (its log entries included) is undone; the page says why.
    def delete_model(self, request, obj):
        with transaction.atomic():
            self._drafts_lock([obj.pk])
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            self._drafts_lock(list(queryset.values_list("pk", flat=True)))
            super().delete_queryset(request, queryset)

    @staticmethod
    def _drafts_lock(ids: list[int]) -> None:
        for release in CatalogRelease.objects.filter(pk__in=ids).order_by("pk").select_for_update():
            if release.is_published:
                raise ReleaseImmutableError(f"release {release.name} is published and cannot be deleted")

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except (ReleaseBusyError, ReleaseImmutableError) as error:
            self.message_user(request, str(error), messages.ERROR)
            opts = self.opts
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id],
                                                current_app=self.admin_site.name))

    def changelist_view(self, request, extra_context=None):
        try:
            if request.method == "POST" and request.POST.get("action") == "delete_selected":
                # (Django's bulk deletion logs the deletions before it deletes: one transaction)
                with transaction.atomic(using=router.db_for_write(self.model)):
                    return super().changelist_view(request, extra_context)
            return super().changelist_view(request, extra_context)
        except (ReleaseBusyError, ReleaseImmutableError) as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new release is made by its service: the model checks, the rules in force, its author.
        created = catalog_release_create(
            name=obj.name, description=obj.description, formal_model=obj.formal_model,
            alternate_model=obj.alternate_model, created_by=request.user,
        )
        obj.pk, obj.rules, obj.created_by, obj.created_at = created.pk, created.rules, created.created_by, created.created_at
        obj._state.adding = False

    @admin.action(description="Build (or rebuild) the entries of selected draft releases")
    def build_entries(self, request, queryset):
        for release in queryset:
            try:
                written = catalog_release_build(release=release)
            except ReleaseImmutableError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            self.message_user(request, f"{release.name}: {written} entries written.")

    @admin.action(description="Publish selected releases (irreversible)")
    def publish(self, request, queryset):
        for release in queryset:
            try:
                catalog_release_publish(release=release)
            except (ReleaseImmutableError, ValueError) as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            self.message_user(request, f"{release.name} published.")


@admin.register(CatalogEntry)
class CatalogEntryAdmin(PipelineRowsAdmin):
    designation_field = "designation"
    list_display = ["medres_specid", "release", "designation", "snr_blue", "snr_red", "teff", "logg", "fe_h", "flag", "reasons"]
    list_select_related = ["release"]
    list_filter = ["release", "flag", flag_bit_filter(CATALOG_FLAGS, "flag_bits"), WeakerArmSnrFilter]
    search_fields = ["=medres_specid", "^designation", "=gaia_source_id"]
    action_form = CurationActionForm
    actions = curation_actions("catalog entry", catalog_entries_curate)
    readonly_fields = [field.name for field in CatalogEntry._meta.fields] + ["reasons"]
    fieldsets = [
        (None, {"fields": ["release", "spectrum", "designation", "gaia_source_id", "medres_specid", "medid_blue", "medid_red", "ra", "dec"]}),
        ("Observation", {"fields": ["snr_blue", "snr_red", "rv_blue", "rv_red"]}),
        ("Published labels", {"fields": list(LABEL_FIELDS)}),
        ("Flag", {"fields": ["flag", "flag_bits", "reasons", "formal_labels", "alternate_labels"]}),
    ]

    @admin.display(description="reasons")
    def reasons(self, entry: CatalogEntry) -> str:
        return ", ".join(CATALOG_FLAGS.names(entry.flag_bits)) or "-"

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(CatalogStar)
class CatalogStarAdmin(ReadOnlyAdmin):
    """The star table: built with the release from its entries, never edited here (curate
    the entries of a draft release instead; the star table follows)."""

    designation_field = "designation"
    list_display = ["designation", "release", "gaia_source_id", "n_spectra", "n_spectra_all", "teff", "logg", "fe_h",
                    "flag", "best_medres_specid"]
    list_select_related = ["release"]
    list_filter = ["release", "flag"]
    search_fields = ["^designation", "=gaia_source_id", "=best_medres_specid"]
    raw_id_fields = ["star", "best_spectrum"]
    readonly_fields = [field.name for field in CatalogStar._meta.fields]
    fieldsets = [
        (None, {"fields": ["release", "star", "designation", "gaia_source_id", "ra", "dec"]}),
        ("Spectra", {"fields": ["n_spectra", "n_spectra_all", "flag", "best_spectrum", "best_medres_specid"]}),
        ("Combined labels", {"fields": list(LABEL_FIELDS)}),
        ("Uncertainties", {"fields": [f"{field}_err" for field in LABEL_FIELDS]}),
        ("Reduced chi-square among spectra", {"fields": [f"{field}_chi2r" for field in LABEL_FIELDS]}),
    ]
