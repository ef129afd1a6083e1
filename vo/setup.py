"""The database side of TAP: the views of the published releases, TAP_SCHEMA, and the
read-only role that TAP queries run as.

Run after every ``migrate`` (vo/apps.py, ``post_migrate``) and by ``manage.py vo_setup``;
idempotent. The views are dropped before a migration (``pre_migrate``) so that a
migration may change the columns they read, and made again after it.

The role (``TAP_DB_ROLE``, NOLOGIN) gets USAGE on the schemas ``spcanet`` and
``tap_schema`` and SELECT on their tables and views, nothing else: not the Django
tables (auth, sessions, drafts), which only their owner may read. The views belong to
the site's database user and read only published releases.
"""

from django.apps import apps
from django.db import connection as default_connection

from inference.models import CatalogRelease

from .conf import vo_setting
from .tables import SCHEMA, TAP_TABLES, TapTable, votable_datatype

TAP_SCHEMA = "tap_schema"
_SQL_TYPES = {"str": "text", "int16": "smallint", "int32": "integer", "int64": "bigint"}

# TAP_SCHEMA's own tables (TAP 1.1 section 4): name -> [(column, datatype, description)].
_TAP_SCHEMA_TABLES = {
    "schemas": [("schema_name", "char", "schema name for reference to tap_schema.schemas"),
                ("utype", "char", "lists the utypes of schemas"),
                ("description", "char", "describes schemas in the tableset"),
                ("schema_index", "int", "recommended sort order when listing schemas")],
    "tables": [("schema_name", "char", "the schema this table belongs to"),
               ("table_name", "char", "the fully qualified table name"),
               ("table_type", "char", "one of: table view"),
               ("utype", "char", "lists the utype of tables in the tableset"),
               ("description", "char", "describes tables in the tableset"),
               ("table_index", "int", "recommended sort order when listing tables")],
    "columns": [("table_name", "char", "the table this column belongs to"),
                ("column_name", "char", "the column name"),
                ("utype", "char", "lists the utypes of columns in the tableset"),
                ("ucd", "char", "lists the UCDs of columns in the tableset"),
                ("unit", "char", "lists the unit used for column values in the tableset"),
                ("description", "char", "describes the columns in the tableset"),
                ("datatype", "char", "lists the ADQL datatype of columns in the tableset"),
                ("arraysize", "char", "lists the size of variable-length columns in the tableset"),
                ("xtype", "char", "a DALI or custom extended type annotation"),
                ("size", "int", "deprecated: use arraysize"),
                ("principal", "int", "a principal column; 1 means 1, 0 means 0"),
                ("indexed", "int", "an indexed column; 1 means 1, 0 means 0"),
                ("std", "int", "a standard column; 1 means 1, 0 means 0"),
                ("column_index", "int", "recommended sort order when listing columns")],
    "keys": [("key_id", "char", "unique key identifier"),
             ("from_table", "char", "fully qualified table name"),
             ("target_table", "char", "fully qualified table name"),
             ("utype", "char", "lists the utype of keys in the tableset"),
             ("description", "char", "describes keys in the tableset")],
    "key_columns": [("key_id", "char", "key identifier from tap_schema.keys"),
                    ("from_column", "char", "column in the from_table"),
                    ("target_column", "char", "column in the target_table")],
}
SCHEMA_DESCRIPTIONS = {
    SCHEMA: "SPCANet catalog of LAMOST-II MRS stellar labels: the published releases",
    TAP_SCHEMA: "Description of the tables and columns of this TAP service (TAP 1.1)",
}
TAP_SCHEMA_DESCRIPTIONS = {
    "schemas": "description of schemas in this tableset", "tables": "description of tables in this tableset",
    "columns": "description of columns in this tableset", "keys": "description of foreign keys in this tableset",
    "key_columns": "description of foreign key columns in this tableset",
}

# The principal columns of each table (TAP_SCHEMA.columns.principal; the default columns of
# a cone search, vo/scs.py).
PRINCIPAL = frozenset({"release", "designation", "gaia_source_id", "medres_specid", "star", "ra", "dec", "flag",
                       "n_spectra", "teff", "teff_err", "logg", "logg_err", "fe_h", "fe_h_err", "snr_blue",
                       "snr_red"})


def allowed_tables() -> set[str]:
    return {table.name for table in TAP_TABLES} | {f"{TAP_SCHEMA}.{name}" for name in _TAP_SCHEMA_TABLES}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_sql(table: TapTable) -> str:
    model = apps.get_model(table.model_label)
    release_table = CatalogRelease._meta.db_table
    selects = []
    for column in table.columns:
        if column.name == "release":
            expression = "r.name::text"
        else:
            expression = f"t.{_quote(column.field)}"
            cast = _SQL_TYPES.get(column.dtype)
            if cast:
                expression += f"::{cast}"
        selects.append(f"{expression} AS {_quote(column.name)}")
    return (
        f"CREATE VIEW {table.name} AS SELECT {', '.join(selects)} FROM {_quote(model._meta.db_table)} AS t "
        f"JOIN {_quote(release_table)} AS r ON r.id = t.release_id "
        f"WHERE r.status = '{CatalogRelease.Status.PUBLISHED.value}'"
    )


def tap_schema_rows() -> dict[str, list[tuple]]:
    """The rows of TAP_SCHEMA's five tables, from inference/columns.py through vo/tables.py."""
    schemas = [(SCHEMA, None, SCHEMA_DESCRIPTIONS[SCHEMA], 0), (TAP_SCHEMA, None, SCHEMA_DESCRIPTIONS[TAP_SCHEMA], 1)]
    tables, columns = [], []
    for index, table in enumerate(TAP_TABLES):
        tables.append((SCHEMA, table.name, "view", None, table.description, index))
        for column_index, column in enumerate(table.columns):
            datatype, arraysize = votable_datatype(column)
            columns.append((table.name, column.name, None, column.ucd, column.unit, column.description, datatype,
                            arraysize, None, None, int(column.name in PRINCIPAL),
                            int(column.name in table.indexed), 0, column_index))
    for index, (name, definition) in enumerate(_TAP_SCHEMA_TABLES.items()):
        qualified = f"{TAP_SCHEMA}.{name}"
        tables.append((TAP_SCHEMA, qualified, "table", None, TAP_SCHEMA_DESCRIPTIONS[name], 100 + index))
        for column_index, (column, datatype, description) in enumerate(definition):
            columns.append((qualified, column, None, None, None, description, datatype,
                            "*" if datatype == "char" else None, None, None, 1, 0, 1, column_index))
    return {"schemas": schemas, "tables": tables, "columns": columns, "keys": [], "key_columns": []}


def drop_views(connection=default_connection) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def setup_tap(connection=default_connection) -> None:
    """Make (again) the views, TAP_SCHEMA and the role; PostgreSQL only."""
    if connection.vendor != "postgresql":
        return
    role = vo_setting("TAP_DB_ROLE")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cursor.execute(f"CREATE SCHEMA {SCHEMA}")
        for table in TAP_TABLES:
            cursor.execute(view_sql(table))
        cursor.execute(f"DROP SCHEMA IF EXISTS {TAP_SCHEMA} CASCADE")
        cursor.execute(f"CREATE SCHEMA {TAP_SCHEMA}")
        sql_types = {"char": "text", "int": "integer"}
        for name, definition in _TAP_SCHEMA_TABLES.items():
            columns = ", ".join(f"{_quote(column)} {sql_types[datatype]}" for column, datatype, _ in definition)
            cursor.execute(f"CREATE TABLE {TAP_SCHEMA}.{name} ({columns})")
        for name, rows in tap_schema_rows().items():
            if rows:
                placeholders = ", ".join(["%s"] * len(rows[0]))
                cursor.executemany(f"INSERT INTO {TAP_SCHEMA}.{name} VALUES ({placeholders})", rows)
        # The role is shared by every database of the cluster: made once, races tolerated.
        cursor.execute(
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {_quote(role)} NOLOGIN; "
            "END IF; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
        cursor.execute(f"SELECT pg_has_role(current_user, '{role}', 'MEMBER')")
        if not cursor.fetchone()[0]:
            cursor.execute(f"GRANT {_quote(role)} TO current_user")
        cursor.execute(f"GRANT USAGE ON SCHEMA {SCHEMA}, {TAP_SCHEMA} TO {_quote(role)}")
        cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA}, {TAP_SCHEMA} TO {_quote(role)}")
