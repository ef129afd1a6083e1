"""Public formats of the reference surveys: which column is which label, id and flag.

A format is a ``spectra.refcat.formats.CatalogFormat`` (one description for training
labels and surveys). Labels are given as [X/H] (``"x_h"``), as [X/Fe] converted with the
row's [Fe/H] (``"x_fe"``), or as-is for Teff, log g and [Fe/H]. Missing columns leave that
label out (the survey does not measure it); missing values (NaN, masked, or the survey's
sentinel such as -9999) become NaN, never zero. The quality cuts are in
``validation.quality``. Pure (astropy and numpy).
"""

from pathlib import Path

from core.labels import LABELS
from spectra.refcat.formats import CatalogFormat, CatalogFormatError, format_from_survey_mapping
from spectra.refcat.reading import CatalogReadError, CatalogTable, catalog_read

from .quality import APOGEE, GALAH_DR2, GALAH_DR3, QUALITY_CUTS, RAVE_DR5

_ABUNDANCES = [label for label in LABELS if label.is_abundance and label.field != "fe_h"]

SurveyFormat = CatalogFormat


class SurveyFormatError(Exception):
    """The file cannot be read, or does not have the columns its format names."""


def survey_format_from_mapping(mapping: dict) -> CatalogFormat:
    """A survey-dialect column mapping (``id_column``, ``labels {field: [column, kind]}``,
    ``flag_columns``, ``quality_cut``) as a format."""
    try:
        return format_from_survey_mapping(mapping, QUALITY_CUTS)
    except CatalogFormatError as error:
        raise SurveyFormatError(str(error)) from error


def _apogee(data_release: str, gaia_column: str) -> CatalogFormat:
    labels = {"teff": ("TEFF", "direct"), "logg": ("LOGG", "direct"), "fe_h": ("FE_H", "direct")}
    labels |= {label.field: (f"{label.element.upper()}_FE", "x_fe") for label in _ABUNDANCES}
    return CatalogFormat("apogee", data_release, "APOGEE_ID", "RA", "DEC", gaia_column, labels, APOGEE,
                         record_columns=("EXTRATARG",))


def _galah(data_release: str, ra: str, dec: str, gaia: str, cut) -> CatalogFormat:
    labels = {"teff": ("teff", "direct"), "logg": ("logg", "direct"), "fe_h": ("fe_h", "direct")}
    labels |= {label.field: (f"{label.element.lower()}_fe", "x_fe") for label in _ABUNDANCES}
    return CatalogFormat("galah", data_release, "sobject_id", ra, dec, gaia, labels, cut)


def _rave_dr5() -> CatalogFormat:
    # RAVE DR5 (Kunder et al. 2017): the chemical pipeline's [X/H] for Mg, Al, Si, Ti, Ni.
    labels = {"teff": ("Teff_K", "direct"), "logg": ("logg_K", "direct"), "fe_h": ("Met_K", "direct")}
    labels |= {field: (field[:-2].capitalize(), "x_h") for field in ("mg_h", "al_h", "si_h", "ti_h", "ni_h")}
    return CatalogFormat("rave", "DR5", "RAVE_OBS_ID", "RAdeg", "DEdeg", None, labels, RAVE_DR5)


SURVEY_FORMATS: dict[str, CatalogFormat] = {
    "apogee-dr14": _apogee("DR14", "GAIA_SOURCE_ID"),
    "apogee-dr17": _apogee("DR17", "GAIAEDR3_SOURCE_ID"),
    "galah-dr2": _galah("DR2", "ra", "dec", "source_id", GALAH_DR2),
    "galah-dr3": _galah("DR3", "ra_dr2", "dec_dr2", "dr3_source_id", GALAH_DR3),
    "rave-dr5": _rave_dr5(),
}


def survey_table_read(path: str | Path, survey_format: CatalogFormat) -> CatalogTable:
    """Read a survey file (FITS, or CSV by extension) through its format: labels as [X/H],
    the quality cut applied per row and per label, repeated ids resolved, exact Gaia ids."""
    try:
        return catalog_read(path, survey_format)
    except CatalogReadError as error:
        raise SurveyFormatError(str(error)) from error
