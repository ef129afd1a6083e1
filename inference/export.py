"""The published catalog as CSV: paper Table 2's columns in its order, streamed.

Rows come from the database in chunks through a server-side cursor and leave as text in
blocks, so memory stays constant however many rows a release has. Text cells that a
spreadsheet would read as a formula are neutralised.
"""

import csv
import io
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from spectra.flags import CATALOG_FLAGS, FlagLevel
from spectra.labels import LABELS, MISSING_ABUNDANCE

from .models import CatalogRelease

# (CSV header, entry field, unit or None), in the order of the paper's Table 2.
EXPORT_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("starid", "designation", None),
    ("Gaia_source_id", "gaia_source_id", None),
    ("medres_specid", "medres_specid", None),
    ("medid_blue", "medid_blue", None),
    ("medid_red", "medid_red", None),
    ("RA", "ra", "deg (J2000)"),
    ("Dec", "dec", "deg (J2000)"),
    ("S/N_blue", "snr_blue", None),
    ("S/N_red", "snr_red", None),
    ("RV_blue", "rv_blue", "km/s, uncalibrated"),
    ("RV_red", "rv_red", "km/s, uncalibrated"),
    *((label.column, label.field, label.unit) for label in LABELS),
    ("Flag", "flag", "1 good, 0 bad"),
    ("Flag_bits", "flag_bits", "catalog flag bits, see below"),
)
TEXT_FIELDS = frozenset({"designation", "medres_specid", "medid_blue", "medid_red"})
# Cells starting with these are run as formulas by spreadsheet programs.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def spreadsheet_safe(text: str) -> str:
    """Prefix a quote to text a spreadsheet would otherwise evaluate (OWASP CSV injection)."""
    if text and text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def header_lines(release: CatalogRelease, filters: dict[str, object]) -> list[str]:
    """Comment lines (starting with '#') describing the release, the columns and the flags."""
    lines = [
        f"# SPCANet catalog of LAMOST-II MRS stellar labels, release {release.name} ({release.status})",
        f"# formal model {release.formal_model.name} ({release.formal_model.artifact_sha256[:12]}), "
        f"alternate model {release.alternate_model.name} ({release.alternate_model.artifact_sha256[:12]})",
        f"# published {release.published_at.isoformat() if release.published_at else 'not yet (draft)'}",
        f"# catalog rules: {', '.join(f'{k}={v:g}' for k, v in sorted(release.rules.items()))}",
        f"# filters: {', '.join(f'{k}={v}' for k, v in sorted(filters.items())) or 'none'}",
        f"# abundances of stars above {release.rules.get('abundance_teff_max', 6500):g} K are {MISSING_ABUNDANCE:g}; an empty cell is no value",
        "# columns:",
    ]
    lines += [f"#   {header}: {unit}" for header, _, unit in EXPORT_COLUMNS if unit]
    lines.append("#   abundance columns [X/H]: dex")
    lines.append("# Flag_bits (a row with Flag = 1 carries no 'reject' bit):")
    lines += [
        f"#   bit {flag.bit} (value {flag.mask}) {flag.name} [{flag.level.value}]: {flag.meaning}"
        for flag in CATALOG_FLAGS
    ]
    lines.append(f"#   reject bits: {', '.join(f.name for f in CATALOG_FLAGS if f.level is FlagLevel.REJECT)}")
    return lines


def _safe_rows(rows: Iterable[tuple], text_positions: list[int]) -> Iterator[tuple]:
    for row in rows:
        if any(row[i] and row[i].startswith(_FORMULA_PREFIXES) for i in text_positions):
            row = list(row)
            for i in text_positions:
                if row[i]:
                    row[i] = spreadsheet_safe(row[i])
        yield row


def stream_csv(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[str]:
    """Yield the CSV text of ``entries`` in blocks of ``chunk_size`` rows."""
    yield "\n".join(header_lines(release, filters)) + "\n"
    fields = [field for _, field, _ in EXPORT_COLUMNS]
    text_positions = [i for i, field in enumerate(fields) if field in TEXT_FIELDS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([header for header, _, _ in EXPORT_COLUMNS])
    rows = entries.order_by("id").values_list(*fields).iterator(chunk_size=chunk_size)
    pending = 0
    for row in _safe_rows(rows, text_positions):
        writer.writerow(row)
        pending += 1
        if pending >= chunk_size:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()
