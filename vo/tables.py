"""The tables of the VO services, from the one column definition (inference/columns.py).

TAP exposes two views in the schema ``spcanet``, over the published releases only:
``spcanet.entries`` (one row per spectrum and release, :data:`CATALOG_COLUMNS`) and
``spcanet.stars`` (one row per star and release, :data:`STAR_COLUMNS`), each with a
``release`` column first. TAP_SCHEMA, the VOSI table set and the VOTable fields are all
generated from :data:`TAP_TABLES`; nothing here lists a column by hand except
``release``.
"""

from dataclasses import dataclass

from inference.columns import CATALOG_COLUMNS, STAR_COLUMNS, CatalogColumn

SCHEMA = "spcanet"

RELEASE_COLUMN = CatalogColumn(
    "release", "release", "str", None, "meta.dataset",
    "Name of the published release the row belongs to (/api/v1/releases/<name>/)", nullable=False,
)

# VOTable / TAP_SCHEMA datatypes of the column dtypes (VOTable 1.4 section 2.1).
VOTABLE_DATATYPES = {"str": "char", "int16": "short", "int32": "int", "int64": "long",
                     "float32": "float", "float64": "double"}


@dataclass(frozen=True)
class TapTable:
    """One table of the TAP service: ``name`` qualified (``spcanet.entries``), the Django
    model it reads and the columns it shows (``column.field`` is the model's database column
    name for concrete fields, ``<fk>_id`` for foreign keys)."""

    name: str
    description: str
    model_label: str
    columns: tuple[CatalogColumn, ...]
    # Columns with an index on (release, ...): TAP_SCHEMA.columns.indexed.
    indexed: frozenset[str]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]


TAP_TABLES: tuple[TapTable, ...] = (
    TapTable(
        f"{SCHEMA}.entries",
        "SPCANet labels of LAMOST-II MRS spectra: one row per spectrum and published release "
        "(paper Table 2 with uncertainties; flag = 1 rows are the good ones)",
        "inference.CatalogEntry",
        (RELEASE_COLUMN, *CATALOG_COLUMNS),
        frozenset({"release", "ra", "dec", "flag", "teff", "gaia_source_id", "designation", "medres_specid"}),
    ),
    TapTable(
        f"{SCHEMA}.stars",
        "SPCANet star table: one row per star and published release, its flag = 1 spectra combined "
        "(inverse-variance weighted means)",
        "inference.CatalogStar",
        (RELEASE_COLUMN, *STAR_COLUMNS),
        frozenset({"release", "ra", "dec", "flag", "teff", "gaia_source_id", "designation"}),
    ),
)
TABLES_BY_NAME: dict[str, TapTable] = {table.name: table for table in TAP_TABLES}


def votable_datatype(column: CatalogColumn) -> tuple[str, str | None]:
    """(datatype, arraysize) of a column in VOTable and TAP_SCHEMA."""
    return VOTABLE_DATATYPES[column.dtype], ("*" if column.dtype == "str" else None)


def known_column(name: str, tables: list[TapTable] | tuple[TapTable, ...] = TAP_TABLES) -> CatalogColumn | None:
    """The definition of a result column named ``name``: from the first of ``tables``
    that has it (the tables a query reads), else None."""
    for table in tables:
        for column in table.columns:
            if column.name == name:
                return column
    return None
