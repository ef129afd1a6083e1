"""The catalog entries and star tables partitioned by release (PostgreSQL only).

Each release's rows live in a partition of their own, ``<table>_r<id>``; a release build
fills a new table without indexes or foreign-key triggers and attaches it in place of the
old one (``inference.partitions``), so that its rows are indexed by one sort per index and
its keys checked by one join each, instead of a B-tree insert per index and a trigger per
key for every row. Rows written otherwise (the ORM, a release without a build yet) land
in the default partition, ``<table>_default``. Existing rows get their release's partition.

Each parent keeps the table's name, columns, identity, indexes and constraints under their
names, so the ORM and later migrations see the same table. Its primary key becomes
(id, release_id): a partitioned table's unique keys must hold the partition key; ids stay
unique, drawn from the one identity sequence. On other databases nothing changes.
"""

from django.db import migrations

TABLES = ("inference_catalogentry", "inference_catalogstar")


def partition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    for table in TABLES:
        _partition_table(connection, table)


def _partition_table(connection, table: str) -> None:
    old = f"{table}_unpartitioned"
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [table])
        if cursor.fetchone()[0] == "p":
            return
        cursor.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass ORDER BY contype, conname", [table])
        constraints = cursor.fetchall()
        owned = {name for name, _, _ in constraints}
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
            "ORDER BY indexname", [table])
        indexes = [(name, definition) for name, definition in cursor.fetchall() if name not in owned]
        cursor.execute(f"ALTER TABLE {table} RENAME TO {old}")
        cursor.execute(
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY LIST (release_id)")
        cursor.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        cursor.execute(f"SELECT DISTINCT release_id FROM {old} ORDER BY 1")
        for (release_id,) in cursor.fetchall():
            cursor.execute(f"CREATE TABLE {table}_r{int(release_id)} PARTITION OF {table} FOR VALUES IN ({int(release_id)})")
        cursor.execute(f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM {old}")
        cursor.execute(f"SELECT pg_get_serial_sequence('{old}', 'id')")
        old_sequence = cursor.fetchone()[0]
        cursor.execute(f"SELECT last_value, is_called FROM {old_sequence}")
        last_value, is_called = cursor.fetchone()
        cursor.execute(f"DROP TABLE {old}")
        cursor.execute(f"SELECT pg_get_serial_sequence('{table}', 'id')")
        sequence = cursor.fetchone()[0]
        cursor.execute("SELECT setval(%s, %s, %s)", [sequence, last_value, is_called])
        if sequence.split(".")[-1] != f"{table}_id_seq":
            cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {table}_id_seq")
        for name, kind, definition in constraints:
            if kind == "p":
                definition = "PRIMARY KEY (id, release_id)"
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            cursor.execute(definition)


class Migration(migrations.Migration):
    dependencies = [("inference", "0008_covering_indexes")]

    # The reverse leaves the partitioned table: the ORM sees the same columns and indexes.
    operations = [migrations.RunPython(partition, migrations.RunPython.noop, elidable=False)]
