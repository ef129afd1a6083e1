"""Reference labels for training: import a catalog, match its stars to ours.

A reference catalog is described by a column mapping (which column is the id, the
position, the Gaia id, each label and the quality flag), so any APOGEE-Payne-like table
can be imported, CSV or FITS. The default mapping is that of APOGEE-Payne (Ting et al.
2019) as the mock survey writes it. Reading, quality rules, repeated ids and matching are
the ones validation surveys use (``spectra.refcat``); a mapping may name one of the
surveys' documented cuts (``"quality_cut": "apogee_clean"``, ``validation.quality``)
instead of a ``quality`` column.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS, LABELS
from spectra.refcat.formats import CatalogFormat, CatalogFormatError, format_from_label_mapping
from spectra.refcat.matching import reference_rows_match
from spectra.refcat.reading import CatalogReadError, catalog_read
from spectra.refcat.storage import reference_rows_store
from validation.quality import QUALITY_CUTS

from ..models import ReferenceCatalog, ReferenceLabel

APOGEE_PAYNE_MAPPING: dict = {
    "id": "APOGEE_ID",
    "ra": "RA",
    "dec": "DEC",
    "gaia_source_id": "GAIA_SOURCE_ID",
    "labels": {
        "teff": "TEFF",
        "logg": "LOGG",
        **{label.field: f"{label.element.upper()}_H" for label in LABELS if label.is_abundance},
    },
    # Each label's 1-sigma error: the noise model subtracts it from the residuals' scatter
    # (a catalog without these columns imports, and its import notes say what it lacks).
    "errors": {
        "teff": "TEFF_ERR",
        "logg": "LOGG_ERR",
        **{label.field: f"{label.element.upper()}_H_ERR" for label in LABELS if label.is_abundance},
    },
    # Ting et al. (2019) mark reliable fits "good"; the paper trained on those only.
    "quality": {"column": "quality_flag", "good": ["good"]},
}

# Repeated identifiers listed in a catalog's import notes (all are counted).
DUPLICATES_RECORDED = 100


class ReferenceImportError(Exception):
    """The reference catalog cannot be read or does not fit its column mapping."""


@dataclass(frozen=True)
class ReferenceImportSummary:
    rows: int
    good: int
    matched: int
    matched_by_gaia: int
    matched_by_position: int
    duplicates_dropped: int = 0
    gaia_refused: int = 0
    errors_absent: tuple[str, ...] = ()  # labels the mapping gives an error column for that the file lacks

    def __str__(self) -> str:
        text = (f"{self.rows} reference rows, {self.good} pass the quality flag, {self.matched} matched to stars "
                f"({self.matched_by_gaia} by Gaia id, {self.matched_by_position} by position)")
        if self.gaia_refused:
            text += f"; {self.gaia_refused} Gaia-id matches refused as too far apart"
        if self.duplicates_dropped:
            text += f"; {self.duplicates_dropped} rows repeating an identifier dropped"
        if self.errors_absent:
            text += (f"; no error column for {', '.join(self.errors_absent)}: their uncertainties are calibrated "
                     "without the reference's own errors")
        return text


def reference_format(mapping: dict) -> CatalogFormat:
    """A training-label column mapping as the shared catalog format."""
    try:
        return format_from_label_mapping(mapping, QUALITY_CUTS)
    except CatalogFormatError as error:
        raise ReferenceImportError(str(error)) from error


def mapping_check(mapping: dict) -> None:
    reference_format(mapping)


def reference_catalog_import(*, name: str, path: str | Path, mapping: dict | None = None) -> ReferenceImportSummary:
    """Import (or re-import) a reference catalog and match it to the stars; idempotent, and
    only new and changed rows are written.

    Gaia ids are read and stored exactly (never through float64); a repeated identifier
    keeps one row (the cut's duplicate policy, else the first) and the rest are counted.
    The labels' errors are stored where the mapping names their columns; the error columns
    the file lacks are listed in the import notes (``errors_absent``) and the summary.
    """
    path = Path(path)
    mapping = mapping or APOGEE_PAYNE_MAPPING
    catalog_format = reference_format(mapping)
    try:
        table = catalog_read(path, catalog_format)
        payload = path.read_bytes()
    except (CatalogReadError, OSError) as error:
        raise ReferenceImportError(str(error) if isinstance(error, CatalogReadError)
                                   else f"{path}: cannot read the reference catalog ({error})") from error
    single_column = [t.column for t in catalog_format.quality.rows]
    if len(single_column) == 1:  # the raw flag, as the catalog gives it
        quality_value = [str(row.get(single_column[0], "") or "")[:64] for row in table.recorded_flags]
    else:
        quality_value = [reason[:64] for reason in table.row_reasons]
    columns: dict = {
        "source_id": table.source_ids,
        "ra": table.ra,
        "dec": table.dec,
        "gaia_source_id": table.gaia,
        "quality_value": quality_value,
        "quality_ok": table.row_ok.tolist(),
        "flagged_labels": table.flagged_labels,
        **{field: table.labels[:, k] for k, field in enumerate(LABEL_FIELDS)},
        **{field: table.errors[:, k] for k, field in enumerate(LABEL_ERROR_FIELDS)},
    }
    with transaction.atomic():
        catalog, _ = ReferenceCatalog.objects.update_or_create(
            name=name,
            defaults={"source_path": str(path), "source_sha256": hashlib.sha256(payload).hexdigest(),
                      "column_mapping": json.loads(json.dumps(mapping)),
                      "duplicate_count": table.duplicates_dropped,
                      "import_notes": {"rows_in_file": table.rows_in_file, "duplicate_rule": table.duplicate_rule,
                                       "duplicates": table.duplicate_groups[:DUPLICATES_RECORDED],
                                       "errors_read": table.present_errors, "errors_absent": table.absent_errors}},
        )
        reference_rows_store(model=ReferenceLabel, parent_field="catalog_id", parent_id=catalog.pk, columns=columns)
    return reference_catalog_match(catalog=catalog)


def reference_catalog_match(*, catalog: ReferenceCatalog) -> ReferenceImportSummary:
    """(Re)match every row of a reference catalog to the stars now in the database; only
    the rows whose match changed are written."""
    with transaction.atomic():
        match = reference_rows_match(rows=ReferenceLabel.objects.filter(catalog=catalog))
        rows = ReferenceLabel.objects.filter(catalog=catalog)
        catalog.row_count = rows.count()
        catalog.good_count = rows.filter(quality_ok=True).count()
        catalog.matched_count = match.matched
        catalog.save(update_fields=["row_count", "good_count", "matched_count", "imported_at"])
    return ReferenceImportSummary(
        rows=catalog.row_count, good=catalog.good_count, matched=catalog.matched_count,
        matched_by_gaia=match.by_gaia, matched_by_position=match.by_position,
        duplicates_dropped=catalog.duplicate_count, gaia_refused=match.gaia_refused,
        errors_absent=tuple((catalog.import_notes or {}).get("errors_absent", {})),
    )
