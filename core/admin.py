"""Admin building blocks for tables of millions of rows, and for curation."""

import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import F
from django.db.models.functions import Least
from django.utils.functional import cached_property

from core.flags import FlagWord


def table_row_estimate(model) -> int | None:
    """The planner's row estimate of a table (PostgreSQL), without a full count; of a
    partitioned table, the sum over its partitions (its own is not kept up to date)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE((SELECT sum(c.reltuples) FILTER (WHERE c.reltuples >= 0) FROM pg_partition_tree(%s::regclass) t "
            "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf), "
            "(SELECT reltuples FROM pg_class WHERE oid = %s::regclass))::bigint",
            [model._meta.db_table, model._meta.db_table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class LargeTablePaginator(Paginator):
    """Counts at most ``COUNT_LIMIT + 1`` rows; an unfiltered large table uses the planner's estimate.

    A full ``COUNT(*)`` over millions of rows on every list page is what makes admin
    pages slow; a bounded count keeps the page numbers useful for small result sets.
    """

    COUNT_LIMIT = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            estimate = table_row_estimate(queryset.model)
            if estimate is not None and estimate > self.COUNT_LIMIT:
                return estimate
        return queryset.order_by()[: self.COUNT_LIMIT + 1].count()


# A space where the declination's sign belongs is a '+' that a query string decoded.
_DESIGNATION = re.compile(
    r"^\s*(?:LAMOST\s+)?(J\d{2,6}[\d.]*(?:[+-][\d.]*)?|J\d{6}(?:\.\d*)?\s+\d[\d.]*)\s*$", re.IGNORECASE
)


class LargeTableAdmin(admin.ModelAdmin):
    """Admin for big tables: bounded counts, and designations searched as one term.

    ``designation_field`` names the designation column (possibly across a relation);
    a search such as 'LAMOST J192814.09+4355' then matches designations by prefix
    instead of being split into two words.
    """

    paginator = LargeTablePaginator
    show_full_result_count = False
    list_per_page = 100
    designation_field: str | None = None

    def get_search_results(self, request, queryset, search_term):
        match = _DESIGNATION.match(search_term or "")
        if self.designation_field and match:
            prefix = "LAMOST " + re.sub(r"\s+", "+", match.group(1).upper())
            return queryset.filter(**{f"{self.designation_field}__startswith": prefix}), False
        return super().get_search_results(request, queryset, search_term)


class PipelineRowsAdmin(LargeTableAdmin):
    """Rows written by the pipeline (ingest, training, prediction, release builds, imports,
    validation): never deleted here, so no Delete button and no 'delete selected' action.

    A curator takes a spectrum out of use with the logged curation actions instead:
    flag the spectrum (every release built afterwards gives it Flag = 0), or flag its
    entry in a draft release (Flag = 0 there at once). Published releases never change.
    """

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(PipelineRowsAdmin):
    """Rows written by the pipeline: browsable and searchable, never added, edited or deleted here."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def flag_bit_filter(word: FlagWord, field: str) -> type[admin.SimpleListFilter]:
    """A list filter on one bit of a flag word, or on 'no reject bit'."""

    class FlagBitFilter(admin.SimpleListFilter):
        title = f"{word.name} flag"
        parameter_name = f"{field}_bit"

        def lookups(self, request, model_admin):
            return [("clean", "No reject flag")] + [(flag.name, flag.name) for flag in word]

        def queryset(self, request, queryset):
            value = self.value()
            if value is None:
                return queryset
            mask = word.reject_mask() if value == "clean" else word.mask(value) if value in word else None
            if mask is None:
                return queryset.none()
            queryset = queryset.alias(_admin_flag_mask=F(field).bitand(mask))
            return queryset.filter(_admin_flag_mask=0) if value == "clean" else queryset.filter(_admin_flag_mask=mask)

    return FlagBitFilter


class WeakerArmSnrFilter(admin.SimpleListFilter):
    """S/N bins of the weaker arm (the S/N > 10 rule applies to both arms)."""

    title = "S/N (weaker arm)"
    parameter_name = "snr"
    BINS = {"0-10": (None, 10), "10-30": (10, 30), "30-50": (30, 50), "50-100": (50, 100), "100-": (100, None)}

    def lookups(self, request, model_admin):
        return [(key, key.replace("-", " to ") if not key.endswith("-") else "above 100") for key in self.BINS]

    def queryset(self, request, queryset):
        if self.value() not in self.BINS:
            return queryset
        low, high = self.BINS[self.value()]
        queryset = queryset.alias(_weaker_snr=Least(F("snr_blue"), F("snr_red")))
        if low is not None:
            queryset = queryset.filter(_weaker_snr__gt=low)
        if high is not None:
            queryset = queryset.filter(_weaker_snr__lte=high)
        return queryset


class CurationActionForm(ActionForm):
    reason = forms.CharField(
        required=False, max_length=500, label="Reason",
        widget=forms.TextInput(attrs={"size": 40, "placeholder": "Reason (required to flag or unflag)"}),
    )


def curation_actions(target_type: str, apply):
    """The 'flag bad' and 'remove flag' admin actions; ``apply(user, ids, flagged, reason)``."""

    def run(modeladmin, request, queryset, flagged: bool):
        reason = (request.POST.get("reason") or "").strip()
        if not reason:
            modeladmin.message_user(request, "Give a reason to flag or unflag.", messages.ERROR)
            return
        try:
            changed = apply(user=request.user, ids=list(queryset.values_list("pk", flat=True)), flagged=flagged, reason=reason)
        except ValueError as error:
            modeladmin.message_user(request, str(error), messages.ERROR)
            return
        verb = "Flagged" if flagged else "Unflagged"
        modeladmin.message_user(request, f"{verb} {changed} {target_type}(s); recorded in the curation log.")

    @admin.action(description="Flag selected as bad (reason required)")
    def flag_bad(modeladmin, request, queryset):
        run(modeladmin, request, queryset, True)

    @admin.action(description="Remove curator flag from selected (reason required)")
    def unflag(modeladmin, request, queryset):
        run(modeladmin, request, queryset, False)

    return [flag_bad, unflag]
