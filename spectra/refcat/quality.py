"""Quality rules of reference catalogs: per-row tests, per-label tests, repeated ids.

A survey's documented rules are data: a ``QualityCut`` made of ``FlagTest``s. A row test
rejects the whole row; a label test rejects one label of the row (its value stays NULL
for training and validation); a ``DuplicatePolicy`` says which of several rows of one
star to keep. The surveys' own cuts, each with its source document, are in
``validation/quality.py``. Pure numpy; no Django.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Column = Callable[[str], np.ndarray | None]  # a raw column by name (None: the file has none)


class QualityRuleError(ValueError):
    """A quality cut needs a column the file does not have, or a flag value is not a number."""


def _filled(raw: np.ndarray, fill) -> np.ndarray:
    return np.asarray(raw.filled(fill)) if np.ma.isMaskedArray(raw) else np.asarray(raw)


def int_flags(raw: np.ndarray, column: str) -> np.ndarray:
    """A flag or bitmask column as int64 (same shape); a missing value becomes -1 (every bit set).

    Unsigned 64-bit bitmasks keep their bits (viewed, not converted); text (CSV) is parsed
    as integers, an empty field being missing.
    """
    values = _filled(raw, -1)
    if values.dtype.kind == "u":
        return values.astype(np.uint64).view(np.int64) if values.dtype.itemsize == 8 else values.astype(np.int64)
    if values.dtype.kind in "ib":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        return np.where(np.isfinite(values), values, -1).astype(np.int64)
    text = np.char.strip(values.astype(str))
    try:
        return np.array([int(float(v)) if v else -1 for v in text.ravel().tolist()], dtype=np.int64).reshape(text.shape)
    except ValueError as error:
        raise QualityRuleError(f"flag column {column!r} holds a value that is not an integer ({error})") from error


def text_flags(raw: np.ndarray) -> np.ndarray:
    """A categorical flag column as stripped text; a missing value becomes ''."""
    values = _filled(raw, "")
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", "replace")
    return np.char.strip(values.astype(str))


def float_values(raw: np.ndarray, column: str) -> np.ndarray:
    """A numeric column as float64 (same shape), missing values NaN; text is parsed."""
    if np.ma.isMaskedArray(raw):
        if raw.dtype.kind in "fiub":
            return np.asarray(raw.astype(np.float64).filled(np.nan))
        raw = text_flags(raw)
    values = np.asarray(raw)
    if values.dtype.kind in "fiub":
        return values.astype(np.float64)
    text = text_flags(values)
    text = np.where(text == "", "nan", text)
    try:
        return text.astype(np.float64)
    except ValueError as error:
        raise QualityRuleError(f"column {column!r} holds a value that is not a number ({error})") from error


@dataclass(frozen=True)
class FlagTest:
    """One documented test on one column; ``failing`` says which rows it rejects.

    ``column`` may contain ``{column}``, replaced by a label's source column (APOGEE
    ``"{column}_FLAG"`` for ``MG_FE`` is ``MG_FE_FLAG``). Exactly one of: ``bits`` (reject
    when ``value & bits != 0``), ``good`` (reject a value, as text, not among these),
    ``above`` (reject a value not above it, or missing); with none of them, any non-zero
    value rejects. ``index`` picks one element of an array column (APOGEE ``PARAMFLAG[1]``).
    ``required``: a missing column is an error, else the test is skipped.
    """

    column: str
    name: str
    bits: int | None = None
    good: tuple[str, ...] | None = None
    above: float | None = None
    index: int | None = None
    required: bool = True

    def failing(self, raw: np.ndarray, column: str, n: int) -> np.ndarray:
        """(n,) bool: rows this test rejects, given the column's raw values."""
        if self.good is not None:
            values = text_flags(raw)
            values = values.reshape(n, -1)[:, self.index or 0]
            return ~np.isin(values, [str(v) for v in self.good])
        if self.above is not None:
            values = float_values(raw, column).reshape(n, -1)[:, self.index or 0]
            return ~(values > self.above)
        values = int_flags(raw, column).reshape(n, -1)
        values = values[:, self.index] if self.index is not None else values
        if values.ndim > 1 and values.shape[1] == 0:  # an index beyond a short array column
            return np.zeros(n, dtype=bool)
        bad = (values & np.int64(self.bits)) != 0 if self.bits is not None else values != 0
        return bad.reshape(n, -1).any(axis=1)


@dataclass(frozen=True)
class LabelTest:
    """A test whose failure rejects some labels of a row, not the row.

    ``fields``: our label fields it applies to; ``None`` for every label of one of ``kinds``
    that the format reads (``"x_fe"`` for every [X/Fe] abundance).
    """

    test: FlagTest
    fields: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = ("direct", "x_h", "x_fe")


@dataclass(frozen=True)
class DuplicatePolicy:
    """Which row of a repeated identifier is kept: rows without ``secondary_bits`` in
    ``secondary_column`` first (APOGEE EXTRATARG DUPLICATE), then the highest
    ``rank_column`` (S/N), then the first in the file. The others are dropped and counted."""

    secondary_column: str | None = None
    secondary_bits: int = 0
    rank_column: str | None = None
    source: str = ""


@dataclass(frozen=True)
class QualityCut:
    name: str
    source: str
    rows: tuple[FlagTest, ...] = ()
    labels: tuple[LabelTest, ...] = ()
    duplicates: DuplicatePolicy = field(default_factory=DuplicatePolicy)

    def as_dict(self) -> dict:
        """What the cut does, for the record kept with an imported catalog."""
        def test(t: FlagTest) -> dict:
            return {k: v for k, v in {"column": t.column, "name": t.name, "bits": t.bits,
                                      "good": list(t.good) if t.good is not None else None, "above": t.above,
                                      "index": t.index}.items() if v is not None}

        return {"name": self.name, "source": self.source, "rows": [test(t) for t in self.rows],
                "labels": [{**test(lt.test), "fields": list(lt.fields) if lt.fields else None, "kinds": list(lt.kinds)}
                           for lt in self.labels],
                "duplicates": {"secondary_column": self.duplicates.secondary_column,
                               "secondary_bits": self.duplicates.secondary_bits,
                               "rank_column": self.duplicates.rank_column}}


NO_CUT = QualityCut("none", "no quality cut")


@dataclass
class QualityResult:
    """Outcome of a cut over n rows and the label fields of a format."""

    row_ok: np.ndarray  # (n,) bool
    row_reasons: np.ndarray  # (n,) object: the names of the failing row tests, '' when the row passes
    label_ok: np.ndarray  # (n, n_fields) bool, in the order of the ``fields`` given
    recorded: dict[str, np.ndarray]  # raw values of every flag column read, for the record


def quality_evaluate(
    cut: QualityCut, column: Column, n: int, labels: dict[str, tuple[str, str]], fields: list[str]
) -> QualityResult:
    """Apply a cut to a table.

    Parameters
    ----------
    cut : QualityCut
    column : callable
        ``column(name)`` gives the raw (n,) or (n, k) values of a column, None if absent.
    n : int
        Number of rows.
    labels : dict
        Our field -> (source column, kind) as the format reads them.
    fields : list of str
        The label fields, in the order of ``label_ok``'s columns.

    Raises
    ------
    QualityRuleError
        A required column is missing.
    """
    recorded: dict[str, np.ndarray] = {}

    def run(test: FlagTest, name: str) -> np.ndarray | None:
        raw = column(name)
        if raw is None:
            if test.required:
                raise QualityRuleError(f"the quality cut {cut.name!r} needs the flag column {name!r}")
            return None
        recorded[name] = raw
        return test.failing(raw, name, n)

    row_ok = np.ones(n, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    for test in cut.rows:
        failing = run(test, test.column)
        if failing is not None and failing.any():
            row_ok &= ~failing
            reasons[failing] = reasons[failing] + np.where(reasons[failing] == "", "", ", ") + test.name
    label_ok = np.ones((n, len(fields)), dtype=bool)
    for label_test in cut.labels:
        targets = label_test.fields or [f for f, (_, kind) in labels.items() if kind in label_test.kinds]
        for target in targets:
            if target not in labels or target not in fields:
                continue
            name = label_test.test.column.replace("{column}", labels[target][0])
            failing = run(label_test.test, name)
            if failing is not None:
                label_ok[:, fields.index(target)] &= ~failing
    return QualityResult(row_ok, reasons, label_ok, recorded)


def duplicates_resolve(
    ids: np.ndarray, secondary: np.ndarray | None = None, rank: np.ndarray | None = None
) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """Keep one row per identifier.

    Parameters
    ----------
    ids : (n,) str
    secondary : (n,) bool or None
        Rows the survey marks as non-primary observations (kept only when nothing else is).
    rank : (n,) float64 or None
        Higher is better (S/N); NaN ranks last.

    Returns
    -------
    keep : (n,) bool
    groups : list of (kept row, dropped rows), row indices, for each repeated identifier
    """
    n = ids.shape[0]
    secondary = np.zeros(n, dtype=bool) if secondary is None else np.asarray(secondary, dtype=bool)
    rank = np.zeros(n) if rank is None else np.where(np.isfinite(rank), rank, -np.inf)
    order = np.lexsort((np.arange(n), -rank, secondary, ids))  # the last key sorts first
    sorted_ids = ids[order]
    first = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]] if n else np.zeros(0, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    groups = []
    if keep.sum() != n:
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], n]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if end - start > 1:
                groups.append((int(order[start]), sorted(order[start + 1 : end].tolist())))
    return keep, groups
