"""The entry and star tables lose their index on the release alone.

Every other index of both tables leads with the release (and on PostgreSQL each release's
rows are a partition of their own), so the release's index served no query; a build made
it for every release. Only the index goes: the foreign key stays as it is (Django's own
AlterField would drop the key and check every row again to add it back).
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = {
    "inference_catalogentry": "inference_catalogentry_release_id_d8e65e1a",
    "inference_catalogstar": "inference_catalogstar_release_id_14e39b69",
}


class Migration(migrations.Migration):

    dependencies = [
        ("inference", "0009_release_partitions"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="catalogentry",
                    name="release",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="entries", to="inference.catalogrelease"),
                ),
                migrations.AlterField(
                    model_name="catalogstar",
                    name="release",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="stars", to="inference.catalogrelease"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(f"DROP INDEX IF EXISTS {index}", f"CREATE INDEX {index} ON {table} (release_id)")
                for table, index in INDEXES.items()
            ],
        ),
    ]
