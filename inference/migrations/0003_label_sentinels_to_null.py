"""Missing labels are NULL: turn the old -9999 sentinel (any value <= -9990) into NULL.

Releases built before this change published hot stars' abundances as -9999, which range
filters matched and means counted. No label or uncertainty of ours can be that low, so
every such value in the label tables is a sentinel. Not reversible (nothing to restore).
"""

from django.db import migrations
from django.db.models import Case, F, FloatField, Q, Value, When

# Frozen here (not imported from core.labels) so that the migration never changes.
LABEL_FIELDS = (
    "teff", "logg", "fe_h", "c_h", "n_h", "o_h", "mg_h", "al_h", "si_h", "s_h", "ca_h", "ti_h", "cr_h", "ni_h", "cu_h",
)
ERROR_FIELDS = tuple(f"{field}_err" for field in LABEL_FIELDS)
SENTINEL_AT_OR_BELOW = -9990.0


def sentinels_to_null(apps, schema_editor):
    tables = {
        "CatalogEntry": LABEL_FIELDS + ERROR_FIELDS,
        "LabelSet": LABEL_FIELDS + ERROR_FIELDS,
        "ReferenceLabel": LABEL_FIELDS,
    }
    for model_name, fields in tables.items():
        model = apps.get_model("inference", model_name)
        any_sentinel = Q()
        for field in fields:
            any_sentinel |= Q(**{f"{field}__lte": SENTINEL_AT_OR_BELOW})
        # One pass over the table: every column of a matching row at once.
        model.objects.filter(any_sentinel).update(
            **{
                field: Case(
                    When(**{f"{field}__lte": SENTINEL_AT_OR_BELOW}, then=Value(None)),
                    default=F(field),
                    output_field=FloatField(),
                )
                for field in fields
            }
        )


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_reference_labels"),
    ]

    operations = [
        migrations.RunPython(sentinels_to_null, migrations.RunPython.noop, elidable=True),
    ]
