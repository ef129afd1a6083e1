"""Public formats of the reference surveys: which column is which label, id and flag.

A format is a column mapping. Labels are given as [X/H] (``"x_h"``), as [X/Fe] converted
with the row's [Fe/H] (``"x_fe"``), or as-is for Teff, log g and [Fe/H]. Missing columns
leave that label out (the survey does not measure it); missing values (NaN, masked, or the
survey's sentinel such as -9999) become NaN, never zero. Pure (astropy and numpy).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from spectra.labels import LABEL_FIELDS, LABELS

_ABUNDANCES = [label for label in LABELS if label.is_abundance and label.field != "fe_h"]


class SurveyFormatError(Exception):
    """The file cannot be read, or does not have the columns its format names."""


@dataclass(frozen=True)
class SurveyFormat:
    survey: str
    data_release: str
    id_column: str
    ra_column: str
    dec_column: str
    gaia_column: str | None
    labels: dict  # field -> [column, "direct" | "x_h" | "x_fe"]
    flag_columns: tuple[str, ...]
    quality_cut: str
    sentinels: tuple[float, ...] = (-9999.0, -9999.99)

    @classmethod
    def from_mapping(cls, mapping: dict) -> "SurveyFormat":
        required = {"survey", "id_column", "ra_column", "dec_column", "labels"}
        missing = required - set(mapping)
        if missing:
            raise SurveyFormatError(f"the column mapping needs {sorted(missing)}")
        unknown = set(mapping["labels"]) - set(LABEL_FIELDS)
        if unknown:
            raise SurveyFormatError(f"the column mapping names unknown labels {sorted(unknown)}")
        return cls(
            survey=mapping["survey"], data_release=mapping.get("data_release", ""),
            id_column=mapping["id_column"], ra_column=mapping["ra_column"], dec_column=mapping["dec_column"],
            gaia_column=mapping.get("gaia_column"), labels={k: list(v) for k, v in mapping["labels"].items()},
            flag_columns=tuple(mapping.get("flag_columns", ())), quality_cut=mapping.get("quality_cut", "none"),
            sentinels=tuple(mapping.get("sentinels", (-9999.0, -9999.99))),
        )

    def as_dict(self) -> dict:
        return {"survey": self.survey, "data_release": self.data_release, "id_column": self.id_column,
                "ra_column": self.ra_column, "dec_column": self.dec_column, "gaia_column": self.gaia_column,
                "labels": self.labels, "flag_columns": list(self.flag_columns), "quality_cut": self.quality_cut,
                "sentinels": list(self.sentinels)}


def _apogee(data_release: str, gaia_column: str) -> SurveyFormat:
    labels = {"teff": ["TEFF", "direct"], "logg": ["LOGG", "direct"], "fe_h": ["FE_H", "direct"]}
    labels |= {label.field: [f"{label.element.upper()}_FE", "x_fe"] for label in _ABUNDANCES}
    return SurveyFormat("apogee", data_release, "APOGEE_ID", "RA", "DEC", gaia_column, labels,
                        ("ASPCAPFLAG", "STARFLAG", "PARAMFLAG"), "apogee_clean")


def _galah(data_release: str, ra: str, dec: str, gaia: str, flags: tuple[str, ...], cut: str) -> SurveyFormat:
    labels = {"teff": ["teff", "direct"], "logg": ["logg", "direct"], "fe_h": ["fe_h", "direct"]}
    labels |= {label.field: [f"{label.element.lower()}_fe", "x_fe"] for label in _ABUNDANCES}
    return SurveyFormat("galah", data_release, "sobject_id", ra, dec, gaia, labels, flags, cut)


def _rave_dr5() -> SurveyFormat:
    # RAVE DR5 (Kunder et al. 2017): the chemical pipeline's [X/H] for Mg, Al, Si, Ti, Ni.
    labels = {"teff": ["Teff_K", "direct"], "logg": ["logg_K", "direct"], "fe_h": ["Met_K", "direct"]}
    labels |= {field: [field[:-2].capitalize(), "x_h"] for field in ("mg_h", "al_h", "si_h", "ti_h", "ni_h")}
    return SurveyFormat("rave", "DR5", "RAVE_OBS_ID", "RAdeg", "DEdeg", None, labels, ("Algo_Conv_K",), "rave_clean")


SURVEY_FORMATS: dict[str, SurveyFormat] = {
    "apogee-dr14": _apogee("DR14", "GAIA_SOURCE_ID"),
    "apogee-dr17": _apogee("DR17", "GAIAEDR3_SOURCE_ID"),
    "galah-dr2": _galah("DR2", "ra", "dec", "source_id", ("flag_cannon",), "galah_dr2_clean"),
    "galah-dr3": _galah("DR3", "ra_dr2", "dec_dr2", "dr3_source_id", ("flag_sp", "flag_fe_h"), "galah_dr3_clean"),
    "rave-dr5": _rave_dr5(),
}


@dataclass
class SurveyTable:
    source_ids: list[str]
    ra: np.ndarray
    dec: np.ndarray
    gaia: np.ndarray  # int64, 0 where unknown
    labels: np.ndarray  # (n, 15) float64, [X/H], NaN where missing
    flags: dict[str, np.ndarray]
    present_labels: list[str]  # labels the file has a column for


def _values(table: Table, name: str, sentinels: tuple[float, ...]) -> np.ndarray:
    column = table[name]
    values = np.asarray(column.astype(np.float64).filled(np.nan) if hasattr(column, "filled") else column, dtype=np.float64)
    values = values.reshape(len(table), -1)[:, 0] if values.ndim > 1 else values
    for sentinel in sentinels:
        values = np.where(np.isclose(values, sentinel), np.nan, values)
    return values


def _gaia_ids(column) -> np.ndarray:
    """int64 Gaia ids, 0 where missing; never through float64, which loses 19-digit ids."""
    array = np.asarray(column.filled(0) if hasattr(column, "filled") else column)
    if array.dtype.kind in "iu":
        return np.where(array > 0, array, 0).astype(np.int64)
    return np.array([int(v) if str(v).strip().isdigit() else 0 for v in array], dtype=np.int64)


def survey_table_read(path: str | Path, survey_format: SurveyFormat) -> SurveyTable:
    """Read a survey file (FITS, or CSV by extension) into typed arrays, labels as [X/H]."""
    path = Path(path)
    try:
        table = Table.read(path, format="ascii.csv" if path.suffix.lower() in (".csv", ".txt") else None)
    except (OSError, ValueError) as error:
        raise SurveyFormatError(f"{path}: cannot read ({error})") from error
    needed = [survey_format.id_column, survey_format.ra_column, survey_format.dec_column]
    missing = [name for name in needed if name not in table.colnames]
    if missing:
        raise SurveyFormatError(f"{path}: no column(s) {', '.join(missing)} for format {survey_format.survey}")
    n = len(table)
    fe_h_column = survey_format.labels.get("fe_h", [None])[0]
    fe_h = _values(table, fe_h_column, survey_format.sentinels) if fe_h_column in table.colnames else np.full(n, np.nan)
    labels = np.full((n, len(LABEL_FIELDS)), np.nan)
    present = []
    for k, field in enumerate(LABEL_FIELDS):
        column, kind = survey_format.labels.get(field, (None, None))
        if column is None or column not in table.colnames:
            continue
        values = _values(table, column, survey_format.sentinels)
        labels[:, k] = values + fe_h if kind == "x_fe" else values
        present.append(field)
    gaia = np.zeros(n, dtype=np.int64)
    if survey_format.gaia_column and survey_format.gaia_column in table.colnames:
        gaia = _gaia_ids(table[survey_format.gaia_column])
    flags = {}
    for name in survey_format.flag_columns:
        if name in table.colnames:
            column = table[name]
            flags[name] = np.asarray(column.filled(-1) if hasattr(column, "filled") else column)
    ra = _values(table, survey_format.ra_column, ())
    dec = _values(table, survey_format.dec_column, ())
    bad = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad.any():
        raise SurveyFormatError(f"{path}: {int(bad.sum())} rows have no valid position")
    ids = [str(v).strip() for v in table[survey_format.id_column]]
    if len(set(ids)) != n:
        raise SurveyFormatError(f"{path}: column {survey_format.id_column} repeats identifiers")
    return SurveyTable(ids, ra, dec, gaia, labels, flags, present)
