"""Reference labels for training: import a catalog, match its stars to ours.

A reference catalog is described by a column mapping (which column is the id, the
position, the Gaia id, each label and the quality flag), so any APOGEE-Payne-like table
can be imported, CSV or FITS. The default mapping is that of APOGEE-Payne (Ting et al.
2019) as the mock survey writes it.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table
from django.db import transaction

from spectra.bulk import bulk_upsert
from spectra.labels import LABEL_FIELDS, LABELS
from spectra.selectors import stars_crossmatch

from .models import ReferenceCatalog, ReferenceLabel

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
    # Ting et al. (2019) mark reliable fits "good"; the paper trained on those only.
    "quality": {"column": "quality_flag", "good": ["good"]},
}


class ReferenceImportError(Exception):
    """The reference catalog cannot be read or does not fit its column mapping."""


@dataclass(frozen=True)
class ReferenceImportSummary:
    rows: int
    good: int
    matched: int
    matched_by_gaia: int
    matched_by_position: int

    def __str__(self) -> str:
        return (f"{self.rows} reference rows, {self.good} pass the quality flag, {self.matched} matched to stars "
                f"({self.matched_by_gaia} by Gaia id, {self.matched_by_position} by position)")


def _column(table: Table, name: str, path: Path) -> np.ndarray:
    if name not in table.colnames:
        raise ReferenceImportError(f"{path}: no column {name!r} (columns: {', '.join(table.colnames[:30])})")
    column = table[name]
    if hasattr(column, "filled"):
        if column.dtype.kind in "fiu":
            return np.asarray(column.astype(np.float64).filled(np.nan))
        return np.asarray(column.filled(""))
    return np.asarray(column)


def mapping_check(mapping: dict) -> None:
    for key in ("id", "ra", "dec", "labels"):
        if key not in mapping:
            raise ReferenceImportError(f"the column mapping needs {key!r}")
    unknown = set(mapping["labels"]) - set(LABEL_FIELDS)
    if unknown:
        raise ReferenceImportError(f"the column mapping names unknown labels {sorted(unknown)}; ours: {LABEL_FIELDS}")


def reference_catalog_import(*, name: str, path: str | Path, mapping: dict | None = None) -> ReferenceImportSummary:
    """Import (or re-import) a reference catalog and match it to the stars; idempotent."""
    path = Path(path)
    mapping = mapping or APOGEE_PAYNE_MAPPING
    mapping_check(mapping)
    try:
        payload = path.read_bytes()
        table = Table.read(path, format="ascii.csv" if path.suffix.lower() in (".csv", ".txt") else None)
    except (OSError, ValueError) as error:
        raise ReferenceImportError(f"{path}: cannot read the reference catalog ({error})") from error
    n = len(table)
    ids = np.char.strip(_column(table, mapping["id"], path).astype(str))
    if np.unique(ids).size != n:
        raise ReferenceImportError(f"{path}: column {mapping['id']!r} repeats identifiers")
    columns: dict = {
        "source_id": ids.tolist(),
        "ra": _column(table, mapping["ra"], path).astype(np.float64),
        "dec": _column(table, mapping["dec"], path).astype(np.float64),
    }
    if mapping.get("gaia_source_id"):
        gaia = _column(table, mapping["gaia_source_id"], path).astype(np.float64)
        columns["gaia_source_id"] = [int(g) if np.isfinite(g) and g > 0 else None for g in gaia]
    for field in LABEL_FIELDS:
        source = mapping["labels"].get(field)
        values = _column(table, source, path).astype(np.float64) if source else np.full(n, np.nan)
        columns[field] = np.where(np.isfinite(values), values, np.nan)
    quality = mapping.get("quality")
    if quality:
        raw = np.char.strip(_column(table, quality["column"], path).astype(str))
        columns["quality_value"] = raw.tolist()
        columns["quality_ok"] = np.isin(raw, [str(v) for v in quality["good"]]).tolist()
    else:
        columns["quality_value"] = [""] * n
        columns["quality_ok"] = [True] * n
    bad_position = ~(np.isfinite(columns["ra"]) & np.isfinite(columns["dec"]))
    if bad_position.any():
        raise ReferenceImportError(f"{path}: {int(bad_position.sum())} rows have no valid RA/Dec")
    with transaction.atomic():
        catalog, _ = ReferenceCatalog.objects.update_or_create(
            name=name,
            defaults={"source_path": str(path), "source_sha256": hashlib.sha256(payload).hexdigest(),
                      "column_mapping": json.loads(json.dumps(mapping))},
        )
        columns["catalog_id"] = np.full(n, catalog.pk, dtype=np.int64)
        bulk_upsert(ReferenceLabel, columns, unique_fields=["catalog_id", "source_id"])
        ReferenceLabel.objects.filter(catalog=catalog).exclude(source_id__in=ids.tolist()).delete()
    return reference_catalog_match(catalog=catalog)


def reference_catalog_match(*, catalog: ReferenceCatalog) -> ReferenceImportSummary:
    """(Re)match every row of a reference catalog to the stars now in the database."""
    refs = list(ReferenceLabel.objects.filter(catalog=catalog).order_by("id").values_list(
        "gaia_source_id", "ra", "dec", "quality_ok", "source_id"))
    gaia, ra, dec, quality_ok, source_ids = (list(c) for c in zip(*refs, strict=True)) if refs else ([],) * 5
    matches = stars_crossmatch(gaia=gaia, ra=np.asarray(ra), dec=np.asarray(dec))
    with transaction.atomic():
        bulk_upsert(
            ReferenceLabel,
            {
                "catalog_id": np.full(len(refs), catalog.pk, dtype=np.int64),
                "source_id": source_ids,
                "ra": np.asarray(ra, dtype=np.float64),
                "dec": np.asarray(dec, dtype=np.float64),
                "quality_ok": quality_ok,
                "star_id": [int(s) if s >= 0 else None for s in matches.star_id],
                "match_method": matches.method.tolist(),
                "match_separation_arcsec": matches.separation_arcsec,
            },
            unique_fields=["catalog_id", "source_id"],
        )
        catalog.row_count = len(refs)
        catalog.good_count = int(sum(quality_ok))
        catalog.matched_count = int(matches.matched.sum())
        catalog.save(update_fields=["row_count", "good_count", "matched_count", "imported_at"])
    return ReferenceImportSummary(
        rows=len(refs), good=catalog.good_count, matched=catalog.matched_count,
        matched_by_gaia=matches.by_gaia, matched_by_position=matches.by_position,
    )
