"""VOTable and CSV answers of the VO services: results, and errors as VOTable.

Results are VOTable 1.4 with the rows as BINARY2 (a null flag per cell, so a missing
integer or float is null, never a sentinel), written by astropy. A column that the
query took from a published table keeps the definition of inference/columns.py: its
type, unit, UCD, description and the digits it carries; any other column (an
expression) is typed from the database's answer.
"""

import base64
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from astropy.io.votable import tree as vo_tree

from inference.columns import CatalogColumn

from .tables import votable_datatype

VOTABLE_CONTENT_TYPE = "application/x-votable+xml"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class ResultField:
    """One column of an answer."""

    name: str
    datatype: str  # VOTable datatype: char, unicodeChar, boolean, short, int, long, float, double
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    decimals: int | None = None

    @classmethod
    def from_column(cls, column: CatalogColumn, *, name: str | None = None, ucd: str | None = None) -> "ResultField":
        datatype, _ = votable_datatype(column)
        return cls(name or column.name, datatype, column.unit, ucd or column.ucd, column.description, column.decimals)


# PostgreSQL type OIDs (pg_type) of the answers of a query, as VOTable datatypes.
_PG_TYPES = {16: "boolean", 20: "long", 21: "short", 23: "int", 26: "long", 700: "float", 701: "double",
             1700: "double"}
_NUMPY = {"boolean": np.bool_, "short": np.int16, "int": np.int32, "long": np.int64, "float": np.float32,
          "double": np.float64}


def field_for_database_column(name: str, type_code: int, known: CatalogColumn | None) -> ResultField:
    """The field of an answer column named ``name`` of PostgreSQL type ``type_code``: the
    definition of the published column of that name when its type fits, else typed from
    the database."""
    datatype = _PG_TYPES.get(type_code, "char")
    if known is not None:
        known_type, _ = votable_datatype(known)
        numeric = {"short", "int", "long", "float", "double"}
        if (known_type == "char") == (datatype == "char") and (known_type in numeric) == (datatype in numeric):
            if known_type in ("float", "double") and datatype not in ("float", "double"):
                return ResultField(name, datatype, known.unit, known.ucd, known.description)
            return ResultField.from_column(known, name=name)
    return ResultField(name, datatype)


def _column_array(field: ResultField, values: list) -> tuple[np.ndarray, np.ndarray]:
    mask = np.fromiter((value is None for value in values), dtype=bool, count=len(values))
    if field.datatype in ("char", "unicodeChar"):
        data = np.array(["" if value is None else str(value) for value in values], dtype=object)
    elif field.datatype in ("float", "double"):
        data = np.array([np.nan if value is None else float(value) for value in values], dtype=np.float64)
        if field.decimals is not None:
            data = np.round(data, field.decimals)
        data = data.astype(_NUMPY[field.datatype])
    else:
        data = np.array([0 if value is None else value for value in values]).astype(_NUMPY[field.datatype])
    return data, mask


@dataclass
class Columns:
    """An answer column by column: per field its values (numpy; text as an object array
    of str, '' where null) and its null mask. Kept instead of rows so that a large
    answer holds numpy arrays, not a Python object per cell."""

    data: list[np.ndarray]
    masks: list[np.ndarray]

    @property
    def n_rows(self) -> int:
        return len(self.data[0]) if self.data else 0

    def head(self, n: int) -> "Columns":
        return Columns([values[:n] for values in self.data], [mask[:n] for mask in self.masks])

    @classmethod
    def from_rows(cls, fields: Sequence[ResultField], rows: Sequence[Sequence]) -> "Columns":
        pairs = [_column_array(field, [row[i] for row in rows]) for i, field in enumerate(fields)]
        return cls([data for data, _ in pairs], [mask for _, mask in pairs])

    @classmethod
    def concatenate(cls, blocks: list["Columns"], n_fields: int) -> "Columns":
        if not blocks:
            return cls([np.zeros(0) for _ in range(n_fields)], [np.zeros(0, dtype=bool) for _ in range(n_fields)])
        return cls([np.concatenate([block.data[i] for block in blocks]) for i in range(n_fields)],
                   [np.concatenate([block.masks[i] for block in blocks]) for i in range(n_fields)])


def _as_columns(fields: Sequence[ResultField], table) -> Columns:
    return table if isinstance(table, Columns) else Columns.from_rows(fields, table)


def _ascii(values) -> bool:
    return all(str(value).isascii() for value in values)


_BINARY = {"short": ">i2", "int": ">i4", "long": ">i8", "float": ">f4", "double": ">f8", "boolean": "S1"}


_ROWS_PER_BLOCK = 20_000
_BASE64_GROUP = 57 * 16_384  # whole base64 lines (57 bytes each) per piece


def _binary2_blocks(fields: Sequence[ResultField], table: Columns, widths: dict[str, int]) -> Iterator[bytes]:
    """The rows as BINARY2 (VOTable 1.4 section 5.5), a block of rows at a time: per row
    the null flags (a bit per column, the first column the top bit of the first byte),
    then each cell big-endian; text as fixed-width NUL-padded bytes."""
    n_flag_bytes = (len(fields) + 7) // 8
    descr = [("_nulls", "u1", (n_flag_bytes,))]
    for i, field in enumerate(fields):
        descr.append((f"c{i}", f"S{widths[field.name]}" if field.datatype == "char" else _BINARY[field.datatype]))
    dtype = np.dtype(descr)
    for start in range(0, table.n_rows, _ROWS_PER_BLOCK):
        stop = min(start + _ROWS_PER_BLOCK, table.n_rows)
        rows = np.zeros(stop - start, dtype=dtype)
        nulls = np.zeros((stop - start, n_flag_bytes * 8), dtype=bool)
        for i, (field, data, mask) in enumerate(zip(fields, table.data, table.masks, strict=True)):
            data, mask = data[start:stop], mask[start:stop]
            if field.datatype == "char":
                rows[f"c{i}"] = data.astype(str).astype(f"S{widths[field.name]}")
            elif field.datatype == "boolean":
                rows[f"c{i}"] = np.where(mask, b"?", np.where(data.astype(bool), b"T", b"F"))
            else:
                rows[f"c{i}"] = data
            nulls[:, i] = mask
        rows["_nulls"] = np.packbits(nulls, axis=1)
        yield rows.tobytes()


def _base64_pieces(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """``base64.encodebytes`` of the blocks joined, in pieces of whole lines."""
    carry = b""
    for block in blocks:
        data = carry + block
        cut = len(data) - len(data) % _BASE64_GROUP
        for start in range(0, cut, _BASE64_GROUP):
            yield base64.encodebytes(data[start:start + _BASE64_GROUP])
        carry = data[cut:]
    if carry:
        yield base64.encodebytes(carry)


def results_votable(fields: Sequence[ResultField], rows: "Columns | Sequence[Sequence]", **options) -> bytes:
    """:func:`results_votable_pieces` as one bytes object."""
    return b"".join(results_votable_pieces(fields, rows, **options))


def results_votable_pieces(fields: Sequence[ResultField], rows: "Columns | Sequence[Sequence]", *,
                           overflow: bool = False, infos: Sequence[tuple[str, str]] = (),
                           table_name: str = "results", description: str | None = None) -> Iterator[bytes]:
    """A VOTable 1.4 answer, rows as BINARY2: ``QUERY_STATUS`` OK before the table, and
    an ``OVERFLOW`` one after it when more rows matched than were returned (TAP 1.1
    section 5.5, DALI section 4.4.1). astropy writes the document; the rows are packed
    with numpy (astropy's own BINARY2 writer goes cell by cell in Python: 170 ms for
    1,000 rows of 11 columns, against a few ms here)."""
    table_columns = _as_columns(fields, rows)
    fields = [replace(field, datatype="unicodeChar") if field.datatype == "char" and not _ascii(values) else field
              for field, values in zip(fields, table_columns.data, strict=True)]
    fast = all(field.datatype != "unicodeChar" for field in fields)
    widths = {field.name: max([1, *(len(value) for value in values)])
              for field, values in zip(fields, table_columns.data, strict=True) if field.datatype == "char"}
    document = vo_tree.VOTableFile(version="1.4")
    resource = vo_tree.Resource(type="results")
    document.resources.append(resource)
    resource.infos.append(vo_tree.Info(name="QUERY_STATUS", value="OK"))
    for name, value in infos:
        resource.infos.append(vo_tree.Info(name=name, value=value))
    table = vo_tree.TableElement(document, name=table_name)
    if description:
        table.description = description
    resource.tables.append(table)
    for field in fields:
        arraysize = None
        if field.datatype == "char":
            arraysize = str(widths[field.name]) if fast else "*"
        elif field.datatype == "unicodeChar":
            arraysize = "*"
        element = vo_tree.Field(document, name=field.name, datatype=field.datatype, unit=field.unit, ucd=field.ucd,
                                arraysize=arraysize)
        if field.description:
            element.description = field.description
        table.fields.append(element)
    table.create_arrays(0 if fast else table_columns.n_rows)
    if not fast:
        for field, data, mask in zip(fields, table_columns.data, table_columns.masks, strict=True):
            table.array[field.name] = data
            table.array.mask[field.name] = mask
    buffer = io.BytesIO()
    document.to_xml(buffer, tabledata_format="binary2")
    xml = buffer.getvalue()
    cut = xml.rindex(b"</TABLE>")
    head, tail = xml[:cut], xml[cut:]
    if overflow:
        end = len(b"</TABLE>")
        tail = tail[:end] + b'\n   <INFO name="QUERY_STATUS" value="OVERFLOW"/>' + tail[end:]
    yield head
    if fast and table_columns.n_rows:
        yield b'<DATA><BINARY2><STREAM encoding="base64">\n'
        yield from _base64_pieces(_binary2_blocks(fields, table_columns, widths))
        yield b"</STREAM></BINARY2></DATA>\n"
    yield tail


def results_csv(fields: Sequence[ResultField], rows: "Columns | Sequence[Sequence]") -> bytes:
    """RFC 4180 CSV: one header row of the column names, null as an empty cell, floats
    with the digits their column carries."""
    table = _as_columns(fields, rows)
    cells = []
    for field, data, mask in zip(fields, table.data, table.masks, strict=True):
        if field.datatype in ("float", "double"):
            text = ([f"{value:.{field.decimals}f}" for value in data.tolist()] if field.decimals is not None
                    else [repr(value) for value in data.tolist()])
        elif field.datatype in ("char", "unicodeChar"):
            text = data.tolist()
        else:
            text = [str(value) for value in data.tolist()]
        cells.append(["" if null else value for value, null in zip(text, mask.tolist(), strict=True)])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([field.name for field in fields])
    writer.writerows(zip(*cells, strict=True))
    return out.getvalue().encode()


def error_votable(message: str, *, scs: bool = False) -> bytes:
    """An error as a VOTable: ``QUERY_STATUS`` ERROR in the results resource (DALI
    section 4.4.1), and for Simple Cone Search 1.03 (section 3.3) also the ``Error``
    INFO under the root element."""
    scs_info = f'  <INFO name="Error" value={quoteattr(message)}/>\n' if scs else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        f"{scs_info}"
        '  <RESOURCE type="results">\n'
        f'    <INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        "  </RESOURCE>\n"
        "</VOTABLE>\n"
    ).encode()
