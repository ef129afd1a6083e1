"""The columns of a published catalog row, defined once.

Every download format (CSV, ECSV, FITS, VOTable, Parquet), the API's field descriptions
and ``docs/catalog_columns.md`` are generated from :data:`CATALOG_COLUMNS`. Pure Python,
no Django imports.

Names are the API's field names (``teff``, ``teff_err``, ``fe_h``, ``snr_blue``): plain
identifiers, so TOPCAT/STILTS expressions, pandas attributes and SQL can use them as
they are. Each label is followed by its uncertainty (``<label>_err``), each RV by its own.

Rounding. A float column is written with ``decimals`` digits after the point, chosen so
that one unit of the last digit is at most a tenth of the smallest uncertainty the
column carries (rounding then adds a uniform error of standard deviation
``10**-decimals / sqrt(12)``, under 3% of that uncertainty and far less of a typical one):
Teff and its error to 1 K (errors are tens of K), log g and the abundances and their errors
to 0.001 dex (errors are a few hundredths of a dex at best), RVs and their errors to
0.01 km/s, S/N to 0.01 (as LAMOST writes it), positions to 1e-7 deg (0.4 mas).
"""

from dataclasses import dataclass

from core.labels import LABELS, Label


@dataclass(frozen=True)
class CatalogColumn:
    """One column of the downloads.

    ``name`` the column name in every format and the API field; ``field`` the
    CatalogEntry field it comes from; ``dtype`` one of ``str``, ``int16``, ``int64``,
    ``float32``, ``float64`` (the type in the typed formats); ``unit`` an astropy/VOUnit
    string or None; ``ucd`` the IVOA UCD1+; ``decimals`` digits kept after the point
    (floats only); ``nullable`` whether the column can be null (null, never a sentinel,
    in every format but the paper CSV); ``paper`` the paper's Table 2 header, None for a
    column that Table 2 does not have.
    """

    name: str
    field: str
    dtype: str
    unit: str | None
    ucd: str
    description: str
    decimals: int | None = None
    nullable: bool = True
    paper: str | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype in ("float32", "float64")


# Digits after the point of each label and of its uncertainty (see the module docstring).
_LABEL_DECIMALS = {"teff": 0}
_DEFAULT_LABEL_DECIMALS = 3
_LABEL_UCD = {"teff": "phys.temperature.effective", "logg": "phys.gravity"}


def _label_ucd(label: Label) -> str:
    if label.is_abundance:
        return f"phys.abund.{label.element}" if label.element == "Fe" else "phys.abund"
    return _LABEL_UCD[label.field]


def _label_columns(label: Label) -> tuple[CatalogColumn, CatalogColumn]:
    decimals = _LABEL_DECIMALS.get(label.field, _DEFAULT_LABEL_DECIMALS)
    ucd = _label_ucd(label)
    what = f"{label.description} ([{label.element}/H])" if label.is_abundance else label.description
    return (
        CatalogColumn(label.field, label.field, "float32", label.unit, f"{ucd};meta.main" if label.field == "teff" else ucd,
                      f"{what}, formal model; null where the catalog gives no value", decimals, paper=label.column),
        CatalogColumn(label.error_field, label.error_field, "float32", label.unit, f"stat.error;{ucd}",
                      f"Uncertainty (1 sigma) of {label.field}", decimals),
    )


CATALOG_COLUMNS: tuple[CatalogColumn, ...] = (
    CatalogColumn("designation", "designation", "str", None, "meta.id;meta.main",
                  "LAMOST designation, LAMOST Jhhmmss.ss+ddmmss.s", nullable=False, paper="starid"),
    CatalogColumn("gaia_source_id", "gaia_source_id", "int64", None, "meta.id.cross",
                  "Gaia source_id (exact 64-bit integer)", paper="Gaia_source_id"),
    CatalogColumn("medres_specid", "medres_specid", "str", None, "meta.id",
                  "LAMOST MRS spectrum id", nullable=False, paper="medres_specid"),
    CatalogColumn("medid_blue", "medid_blue", "str", None, "meta.id",
                  "Blue-arm spectrum id", nullable=False, paper="medid_blue"),
    CatalogColumn("medid_red", "medid_red", "str", None, "meta.id",
                  "Red-arm spectrum id", nullable=False, paper="medid_red"),
    CatalogColumn("ra", "ra", "float64", "deg", "pos.eq.ra;meta.main",
                  "Right ascension (ICRS, J2000)", 7, nullable=False, paper="RA"),
    CatalogColumn("dec", "dec", "float64", "deg", "pos.eq.dec;meta.main",
                  "Declination (ICRS, J2000)", 7, nullable=False, paper="Dec"),
    CatalogColumn("snr_blue", "snr_blue", "float32", None, "stat.snr",
                  "Signal-to-noise ratio of the blue arm", 2, paper="S/N_blue"),
    CatalogColumn("snr_red", "snr_red", "float32", None, "stat.snr",
                  "Signal-to-noise ratio of the red arm", 2, paper="S/N_red"),
    CatalogColumn("rv_blue", "rv_blue", "float32", "km/s", "spect.dopplerVeloc.opt",
                  "Radial velocity from the blue arm (uncalibrated)", 2, paper="RV_blue"),
    CatalogColumn("rv_blue_err", "rv_blue_err", "float32", "km/s", "stat.error;spect.dopplerVeloc.opt",
                  "Uncertainty (1 sigma) of rv_blue", 2),
    CatalogColumn("rv_red", "rv_red", "float32", "km/s", "spect.dopplerVeloc.opt",
                  "Radial velocity from the red arm (uncalibrated)", 2, paper="RV_red"),
    CatalogColumn("rv_red_err", "rv_red_err", "float32", "km/s", "stat.error;spect.dopplerVeloc.opt",
                  "Uncertainty (1 sigma) of rv_red", 2),
    *(column for label in LABELS for column in _label_columns(label)),
    CatalogColumn("flag", "flag", "int16", None, "meta.code.qual",
                  "1 good, 0 bad (paper Table 2 Flag)", nullable=False, paper="Flag"),
    CatalogColumn("flag_bits", "flag_bits", "int64", None, "meta.code.qual",
                  "Catalog flag bits: why a row is good or bad (docs/flags.md)", nullable=False),
)

COLUMNS_BY_NAME: dict[str, CatalogColumn] = {column.name: column for column in CATALOG_COLUMNS}

# The paper's Table 2 in its order (then Flag_bits), for the paper-format CSV.
PAPER_COLUMNS: tuple[CatalogColumn, ...] = (
    *(column for column in CATALOG_COLUMNS if column.paper is not None),
    COLUMNS_BY_NAME["flag_bits"],
)
# What the paper-format CSV writes for no value (the paper's convention; the other
# formats write null).
PAPER_MISSING = -9999


def paper_header(column: CatalogColumn) -> str:
    return column.paper if column.paper is not None else "Flag_bits"


def columns_markdown() -> str:
    """``docs/catalog_columns.md``: the column table, from :data:`CATALOG_COLUMNS`."""
    lines = [
        "# Catalog columns",
        "",
        "Generated from `inference/columns.py` (`python manage.py catalog_columns_doc`); do not edit by hand.",
        "Every download format (CSV, ECSV, FITS, VOTable, Parquet) and the API's entry fields use these",
        "names, units, UCDs and descriptions. A float is written with the decimals shown (one unit of the",
        "last digit is at most a tenth of the smallest uncertainty the column carries). Missing values",
        "are null: an empty CSV cell, a masked ECSV value, `TNULL` or NaN in FITS, a VOTable null, a",
        "Parquet null. Only the paper-format CSV (`format=csv-paper`: Table 2 names and order) writes",
        f"{PAPER_MISSING} for no value.",
        "",
        "| name | type | unit | UCD | decimals | Table 2 | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for column in CATALOG_COLUMNS:
        lines.append(
            f"| `{column.name}` | {column.dtype} | {column.unit or ''} | `{column.ucd}` | "
            f"{'' if column.decimals is None else column.decimals} | {column.paper or ''} | {column.description} |"
        )
    lines += [
        "",
        "## Star table",
        "",
        "One row per star and release (`/api/v1/releases/<name>/stars/`, downloads at `.../stars/export/`",
        "in every format above but the paper's): the star's Flag = 1 spectra combined, each label as their",
        "inverse-variance weighted mean with uncertainty 1/sqrt(sum of the weights) (README, the star table).",
        "",
        "| name | type | unit | UCD | decimals | description |",
        "|---|---|---|---|---|---|",
    ]
    for column in STAR_COLUMNS:
        lines.append(
            f"| `{column.name}` | {column.dtype} | {column.unit or ''} | `{column.ucd}` | "
            f"{'' if column.decimals is None else column.decimals} | {column.description} |"
        )
    return "\n".join(lines) + "\n"


def api_field_help(columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS) -> dict[str, dict[str, str]]:
    """``extra_kwargs`` of a serializer (the entries', or the star table's with
    :data:`STAR_COLUMNS`): each field's description, unit and UCD, so that the API schema
    says what the downloads say."""
    return {
        column.name: {"help_text": f"{column.description}{f' ({column.unit})' if column.unit else ''}. UCD {column.ucd}."}
        for column in columns
    }


# --- the star table: one row per star and release (inference.models.CatalogStar) ---------

_CHI2R_DECIMALS = 2


def _star_label_columns(label: Label) -> tuple[CatalogColumn, CatalogColumn, CatalogColumn]:
    decimals = _LABEL_DECIMALS.get(label.field, _DEFAULT_LABEL_DECIMALS)
    ucd = _label_ucd(label)
    what = f"{label.description} ([{label.element}/H])" if label.is_abundance else label.description
    return (
        CatalogColumn(label.field, label.field, "float32", label.unit, f"{ucd};meta.main" if label.field == "teff" else ucd,
                      f"{what}: inverse-variance weighted mean over the star's Flag = 1 spectra; "
                      "null where none has a value", decimals),
        CatalogColumn(label.error_field, label.error_field, "float32", label.unit, f"stat.error;{ucd}",
                      f"Uncertainty (1 sigma) of {label.field}: 1/sqrt(sum of the weights 1/sigma_i^2)", decimals),
        CatalogColumn(f"{label.field}_chi2r", f"{label.field}_chi2r", "float32", None, "stat.fit.chi2",
                      f"Reduced chi-square of the Flag = 1 spectra's {label.field} about the mean; "
                      "null below two spectra", _CHI2R_DECIMALS),
    )


STAR_COLUMNS: tuple[CatalogColumn, ...] = (
    CatalogColumn("star", "star_id", "int64", None, "meta.id",
                  "Star id in this catalog (/api/v1/stars/<id>/); null only in a published release whose "
                  "star was later merged into one that has its own row"),
    COLUMNS_BY_NAME["designation"],
    COLUMNS_BY_NAME["gaia_source_id"],
    COLUMNS_BY_NAME["ra"],
    COLUMNS_BY_NAME["dec"],
    CatalogColumn("n_spectra", "n_spectra", "int16", None, "meta.number",
                  "Flag = 1 spectra of the star, combined in this row", nullable=False),
    CatalogColumn("n_spectra_all", "n_spectra_all", "int16", None, "meta.number",
                  "Spectra of the star in the release, any flag", nullable=False),
    *(column for label in LABELS for column in _star_label_columns(label)),
    CatalogColumn("flag", "flag", "int16", None, "meta.code.qual",
                  "1 when the star has a Flag = 1 spectrum; 0 when it has none (labels null)", nullable=False),
    CatalogColumn("best_spectrum", "best_spectrum_id", "int64", None, "meta.id",
                  "Id of the best spectrum: the Flag = 1 one with the highest S/N in the weaker arm (of any "
                  "flag when none is Flag = 1); its arrays at /api/v1/spectra/<id>/arrays.fits", nullable=False),
    CatalogColumn("best_medres_specid", "best_medres_specid", "str", None, "meta.id",
                  "LAMOST MRS spectrum id of the best spectrum", nullable=False),
)
