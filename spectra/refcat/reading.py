"""Read a reference catalog (FITS or CSV) through its format: typed columns, quality, duplicates.

Identifiers are never routed through float64: CSV is read as text and each column is
converted for its use (floats for positions and labels, exact Python/int64 integers for
Gaia source ids, text for catalog ids, integers for flags); an id column stored as
floating point in the file itself is refused when its values are too large to be exact.
Pure (astropy and numpy); no Django.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table

from core.labels import LABEL_FIELDS

from .formats import CatalogFormat
from .quality import QualityRuleError, duplicates_resolve, float_values, int_flags, quality_evaluate, text_flags

# Largest integer a float64 holds exactly; a larger id stored as float has lost digits.
FLOAT64_EXACT_INTEGER = 2**53
CSV_SUFFIXES = (".csv", ".txt")


class CatalogReadError(ValueError):
    """The file cannot be read, lacks a column its format names, or holds unusable values."""


@dataclass
class CatalogTable:
    """A catalog read through its format, one row per kept source (duplicates dropped)."""

    source_ids: list[str]  # (n,) the catalog's own identifiers, as text
    ra: np.ndarray  # (n,) float64, degrees
    dec: np.ndarray  # (n,) float64, degrees
    gaia: list[int | None]  # (n,) exact Gaia source ids, None where unknown
    labels: np.ndarray  # (n, 15) float64 in our convention ([X/H]), NaN where missing; before label flags
    present_labels: list[str]  # labels the file has a column for
    errors: np.ndarray  # (n, 15) float64 1-sigma uncertainties of ``labels``, NaN where not given, not finite or not > 0
    present_errors: list[str]  # labels whose error column the file has
    absent_errors: dict[str, str]  # label -> error column the format names and the file lacks
    row_ok: np.ndarray  # (n,) bool: passes the per-row tests
    row_reasons: list[str]  # (n,) the failing per-row tests, '' when the row passes
    flagged_labels: list[list[str]]  # (n,) label fields with a value that a per-label test rejects
    recorded_flags: list[dict]  # (n,) raw values of the flag columns read
    rows_in_file: int
    duplicate_groups: list[dict]  # one per repeated identifier: id, kept row, dropped rows (file rows, 1-based)
    duplicate_rule: str

    @property
    def duplicates_dropped(self) -> int:
        return sum(len(group["dropped_rows"]) for group in self.duplicate_groups)

    def labels_usable(self) -> np.ndarray:
        """(n, 15) labels with the per-label rejections set to NaN."""
        labels = self.labels.copy()
        for i, fields in enumerate(self.flagged_labels):
            for name in fields:
                labels[i, LABEL_FIELDS.index(name)] = np.nan
        return labels


class _Columns:
    """Raw columns by name; exact name first, else a unique case-insensitive match
    (GALAH DR3 spells ``Mg_fe`` what DR2 spells ``mg_fe``)."""

    def __init__(self, columns: dict[str, np.ndarray], n: int):
        self.columns, self.n = columns, n
        folded: dict[str, list[str]] = {}
        for name in columns:
            folded.setdefault(name.lower(), []).append(name)
        self.folded = folded

    def resolve(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name in self.columns:
            return name
        candidates = self.folded.get(name.lower(), [])
        return candidates[0] if len(candidates) == 1 else None

    def get(self, name: str | None) -> np.ndarray | None:
        resolved = self.resolve(name)
        return None if resolved is None else self.columns[resolved]


def _read_csv(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Every column as text: nothing is guessed numeric, so nothing is rounded."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        lines = (line for line in handle if not line.startswith("#"))
        reader = csv.reader(lines)
        header = next(reader, None)
        if not header:
            raise CatalogReadError(f"{path}: empty file, no header line")
        header = [name.strip() for name in header]
        rows = list(reader)
    rows = [row for row in rows if row]
    bad = [i for i, row in enumerate(rows) if len(row) != len(header)]
    if bad:
        raise CatalogReadError(f"{path}: {len(bad)} rows do not have {len(header)} fields (first: data row {bad[0] + 1})")
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    return {name: np.array(values, dtype=str) for name, values in zip(header, columns, strict=True)}, len(rows)


def _read_table(path: Path) -> tuple[dict[str, np.ndarray], int]:
    table = Table.read(path)
    columns = {name: (np.ma.MaskedArray(table[name]) if isinstance(table[name], MaskedColumn) else np.asarray(table[name]))
               for name in table.colnames}
    return columns, len(table)


def catalog_columns_read(path: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """The raw columns of a catalog file: CSV (``.csv``, ``.txt``) as text, anything else
    through astropy (FITS and the other formats astropy recognises) with its own types."""
    path = Path(path)
    try:
        return _read_csv(path) if path.suffix.lower() in CSV_SUFFIXES else _read_table(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        if isinstance(error, CatalogReadError):
            raise
        raise CatalogReadError(f"{path}: cannot read the catalog ({error})") from error


def exact_ids(raw: np.ndarray, column: str) -> list[int | None]:
    """Positive integer ids (Gaia source ids) exactly, None where missing (blank, masked, <= 0).

    Integer columns are taken as they are; text is parsed digit by digit; a floating-point
    column is accepted only while its values are below 2**53, where float64 is still exact.
    """
    if np.ma.isMaskedArray(raw):
        mask = np.ma.getmaskarray(raw).reshape(raw.shape[0], -1)[:, 0]
        values = np.asarray(raw.data)
    else:
        values, mask = np.asarray(raw), np.zeros(raw.shape[0], dtype=bool)
    values = values.reshape(values.shape[0], -1)[:, 0] if values.ndim > 1 else values
    if values.dtype.kind in "iu":
        if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
            raise CatalogReadError(f"column {column!r} holds ids beyond 64-bit signed integers")
        ids = values.tolist()
    elif values.dtype.kind == "f":
        finite = np.isfinite(values) & ~mask
        if np.any(np.abs(values[finite]) >= FLOAT64_EXACT_INTEGER) or np.any(values[finite] != np.round(values[finite])):
            raise CatalogReadError(f"column {column!r} holds ids as floating-point numbers, which cannot hold 19-digit "
                                   "Gaia ids exactly (digits already lost in the file); give them as integers or text")
        ids = [int(v) if ok else None for v, ok in zip(values.tolist(), finite.tolist(), strict=True)]
    else:
        ids = []
        for text in text_flags(values).tolist():
            if text.isdigit():
                ids.append(int(text))
            elif text == "" or text.lower() in ("nan", "null", "none", "--") or (text.startswith("-") and text[1:].isdigit()):
                ids.append(None)
            else:
                whole, _, fraction = text.partition(".")
                if whole.isdigit() and fraction.strip("0") == "":
                    ids.append(int(whole))
                else:
                    raise CatalogReadError(f"column {column!r} holds {text!r}, not an integer id")
    return [None if m or v is None or v <= 0 else int(v) for v, m in zip(ids, mask.tolist(), strict=True)]


def _text_ids(raw: np.ndarray) -> np.ndarray:
    values = np.asarray(raw.filled(0) if np.ma.isMaskedArray(raw) and raw.dtype.kind in "iuf" else raw)
    if values.dtype.kind in "iu":
        return np.array([str(v) for v in values.tolist()], dtype=object)
    if values.dtype.kind == "f":
        return np.array([str(int(v)) if np.isfinite(v) and v == int(v) and abs(v) < FLOAT64_EXACT_INTEGER else str(v)
                         for v in values.tolist()], dtype=object)
    return text_flags(np.ma.filled(raw, "") if np.ma.isMaskedArray(raw) else values).astype(object)


def _json_column(raw: np.ndarray) -> list:
    """A raw column as JSON-ready Python values (lists for array columns, None where masked)."""
    values = np.asarray(raw.data if np.ma.isMaskedArray(raw) else raw)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", "replace")
    python = values.tolist()
    if np.ma.isMaskedArray(raw):
        masked = np.ma.getmaskarray(raw).reshape(values.shape[0], -1).all(axis=1).tolist()
        python = [None if m else v for v, m in zip(python, masked, strict=True)]
    return python


def _errors_read(columns: "_Columns", fmt: CatalogFormat, present: list[str],
                 n: int) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """(n, 15) float64 errors in the labels' source convention, NaN where missing, a
    sentinel, not finite or not > 0; the labels whose error column was read; the error
    columns absent (an [X/Fe] label's too when the [Fe/H] error is absent or unmapped,
    as its [X/H] error cannot be formed).

    An absent error column is not an error: the catalog is usable without it, and the
    caller records which uncertainties it lacks.
    """
    errors = np.full((n, len(LABEL_FIELDS)), np.nan)
    read, absent = [], {}
    for name, source in fmt.errors.items():
        if name not in present:
            continue
        values = columns.get(source)
        if values is None:
            absent[name] = source
            continue
        values = float_values(values, source).reshape(n, -1)[:, 0]
        for sentinel in fmt.sentinels:
            values = np.where(np.isclose(values, sentinel), np.nan, values)
        with np.errstate(invalid="ignore"):
            errors[:, LABEL_FIELDS.index(name)] = np.where(np.isfinite(values) & (values > 0), values, np.nan)
        read.append(name)
    # An [X/Fe] label's error needs the [Fe/H] error: without that column there is none.
    if "fe_h" not in read:
        reason = (f"the [Fe/H] error column {fmt.errors['fe_h']} is absent" if "fe_h" in fmt.errors
                  else "the mapping names no [Fe/H] error")
        for name in [name for name in read if fmt.labels[name][1] == "x_fe"]:
            read.remove(name)
            absent[name] = f"{fmt.errors[name]} (an [X/Fe] error: {reason})"
    return errors, [name for name in LABEL_FIELDS if name in read], absent


def catalog_read(path: str | Path, catalog_format: CatalogFormat) -> CatalogTable:
    """Read a catalog through its format.

    Returns
    -------
    CatalogTable
        One row per identifier (repeats resolved by the format's duplicate policy and
        recorded), labels in our convention ([X/Fe] converted with the row's [Fe/H]),
        their errors where the format names error columns (an [X/Fe] error combined with
        the [Fe/H] error in quadrature; a missing, sentinel, infinite or non-positive error,
        or one whose label is missing, is NaN),
        the per-row and per-label quality outcome, exact Gaia ids.

    Raises
    ------
    CatalogReadError
        Unreadable file, a missing column the format needs, non-numeric values where
        numbers are expected, ids that cannot be exact, rows without identifier or position.
    """
    path = Path(path)
    fmt = catalog_format
    raw, n = catalog_columns_read(path)
    columns = _Columns(raw, n)

    def need(name: str) -> np.ndarray:
        values = columns.get(name)
        if values is None:
            raise CatalogReadError(f"{path}: no column {name!r} for format {fmt.survey} "
                                   f"(columns: {', '.join(list(raw)[:30])})")
        return values

    try:
        ids = _text_ids(need(fmt.id_column))
        ra = float_values(need(fmt.ra_column), fmt.ra_column).reshape(n, -1)[:, 0]
        dec = float_values(need(fmt.dec_column), fmt.dec_column).reshape(n, -1)[:, 0]
        gaia_raw = columns.get(fmt.gaia_column)
        gaia = exact_ids(gaia_raw, fmt.gaia_column) if gaia_raw is not None else [None] * n
        labels = np.full((n, len(LABEL_FIELDS)), np.nan)
        present = []
        for k, name in enumerate(LABEL_FIELDS):
            if name not in fmt.labels:
                continue
            source = fmt.labels[name][0]
            values = need(source) if fmt.labels_required else columns.get(source)
            if values is None:
                continue
            values = float_values(values, source).reshape(n, -1)[:, 0]
            for sentinel in fmt.sentinels:
                values = np.where(np.isclose(values, sentinel), np.nan, values)
            labels[:, k] = values
            present.append(name)
        errors, present_errors, absent_errors = _errors_read(columns, fmt, present, n)
        fe_h = labels[:, LABEL_FIELDS.index("fe_h")].copy()
        x_fe = [LABEL_FIELDS.index(f) for f in present if fmt.labels[f][1] == "x_fe"]
        labels[:, x_fe] = labels[:, x_fe] + fe_h[:, None]
        # [X/H] = [X/Fe] + [Fe/H]: the two errors added in quadrature (taken as independent).
        fe_h_error = errors[:, LABEL_FIELDS.index("fe_h")].copy()
        errors[:, x_fe] = np.hypot(errors[:, x_fe], fe_h_error[:, None])
        errors[~np.isfinite(labels)] = np.nan  # no error without its label
        quality = quality_evaluate(fmt.quality, columns.get, n, {f: fmt.labels[f] for f in present}, LABEL_FIELDS)
    except QualityRuleError as error:
        raise CatalogReadError(f"{path}: {error}") from error
    except CatalogReadError as error:
        if str(error).startswith(str(path)):
            raise
        raise CatalogReadError(f"{path}: {error}") from error
    label_ok = quality.label_ok
    if x_fe:  # [X/H] = [X/Fe] + [Fe/H]: a rejected [Fe/H] takes every [X/Fe]-derived label with it
        label_ok[:, x_fe] &= label_ok[:, [LABEL_FIELDS.index("fe_h")]]
    bad_position = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad_position.any():
        raise CatalogReadError(f"{path}: {int(bad_position.sum())} rows have no valid RA/Dec")
    blank = np.array([not s for s in ids.tolist()], dtype=bool)
    if blank.any():
        raise CatalogReadError(f"{path}: {int(blank.sum())} rows have no identifier in column {fmt.id_column!r}")

    policy = fmt.quality.duplicates
    secondary_raw = columns.get(policy.secondary_column)
    rank_raw = columns.get(policy.rank_column)
    secondary = ((int_flags(secondary_raw, policy.secondary_column).reshape(n, -1)[:, 0]
                  & np.int64(policy.secondary_bits)) != 0) if secondary_raw is not None else None
    rank = float_values(rank_raw, policy.rank_column).reshape(n, -1)[:, 0] if rank_raw is not None else None
    keep, groups = duplicates_resolve(ids.astype(str), secondary, rank)
    rule = "; ".join(part for part in (
        f"rows with any of {policy.secondary_column} bits "
        f"{', '.join(str(b) for b in range(64) if policy.secondary_bits >> b & 1)} set "
        f"(mask {policy.secondary_bits}) are dropped first"
        if secondary is not None else "",
        f"then the highest {policy.rank_column} is kept" if rank is not None else "",
        "then the first row in the file") if part)
    duplicate_groups = [{"id": str(ids[kept]), "kept_row": kept + 1, "dropped_rows": [d + 1 for d in dropped]}
                        for kept, dropped in groups]

    rows = np.flatnonzero(keep)
    recorded_names = list(quality.recorded) + [c for c in fmt.record_columns if columns.resolve(c) not in quality.recorded]
    recorded = {name: quality.recorded.get(name, columns.get(name)) for name in recorded_names}
    recorded = {name: values for name, values in recorded.items() if values is not None}
    present_index = np.array([LABEL_FIELDS.index(f) for f in present], dtype=np.int64)
    rejected = np.zeros(labels.shape, dtype=bool)
    rejected[:, present_index] = ~label_ok[:, present_index] & np.isfinite(labels[:, present_index])
    flagged = [[] for _ in range(n)]
    for i, k in zip(*np.nonzero(rejected), strict=True):
        flagged[i].append(LABEL_FIELDS[k])
    recorded_python = {name: _json_column(values) for name, values in recorded.items()}
    return CatalogTable(
        source_ids=[str(ids[i]) for i in rows],
        ra=ra[rows], dec=dec[rows],
        gaia=[gaia[i] for i in rows],
        labels=labels[rows],
        present_labels=present,
        errors=errors[rows],
        present_errors=present_errors,
        absent_errors=absent_errors,
        row_ok=quality.row_ok[rows],
        row_reasons=[str(quality.row_reasons[i]) for i in rows],
        flagged_labels=[flagged[i] for i in rows],
        recorded_flags=[{name: values[i] for name, values in recorded_python.items()} for i in rows],
        rows_in_file=n,
        duplicate_groups=duplicate_groups,
        duplicate_rule=rule,
    )
