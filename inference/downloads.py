"""A release (or any filter of it) in the formats of the field, streamed in bounded memory.

CSV (RFC 4180; :mod:`inference.export`), ECSV, FITS binary table, VOTable (BINARY2) and
Parquet, every one with the columns of :data:`inference.columns.CATALOG_COLUMNS` (the
star table's rows: :data:`~inference.columns.STAR_COLUMNS`, see ``table_columns``): the
same names, units, UCDs, descriptions, types and rounding. Missing values are null in
each format's own way (FITS ``TNULL`` for integers and NaN for floats, VOTable null
flags, Parquet and ECSV nulls, an empty CSV cell); Gaia ids are exact 64-bit integers.

Rows come in blocks: on PostgreSQL from one cancellable binary ``COPY`` whose rows all
have the same size (read with numpy, floats rounded by numpy as PostgreSQL rounds the
CSV's); elsewhere from a server-side cursor. Each block is written out before the next is
read, so memory does not grow with the release. The
headers (FITS, VOTable, ECSV) are made by astropy, the Parquet file by pyarrow; only the
rows of FITS and VOTable are packed here, with numpy, in the layout those standards fix.
"""

import base64
import io
import json
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from itertools import islice

import numpy as np
from django.db import connection
from django.db.models import Count, Func, IntegerField, Max, QuerySet
from django.db.models.functions import Coalesce

from core.flags import CATALOG_FLAGS
from core.rules import CatalogRules, flag_thresholds

from .columns import CATALOG_COLUMNS, STAR_COLUMNS, CatalogColumn
from .export import copy_available, copy_blocks, csv_rows, select_sql, stream_csv, table_columns
from .models import CatalogRelease

# pyarrow (about 40 MB of memory once imported) is imported by the Parquet writer only, and
# astropy's FITS, VOTable and Table modules (about 35 MB) by the writers that use them: a
# download holds only its own format's libraries.
# FITS TFORM and the big-endian numpy type of its bytes (FITS standard 4.0, section 7.3).
_FITS_FORMATS = {"int16": "I", "int64": "K", "float32": "E", "float64": "D"}
_NUMPY_TYPES = {"int16": ">i2", "int64": ">i8", "float32": ">f4", "float64": ">f8"}
_PG_INT_TYPES = {"int16": "int2", "int64": "int8"}
# The FITS null of a nullable integer column (TNULLn): the most negative value, which no
# id or flag word takes.
FITS_INT_NULL = {"int16": -(2**15), "int64": -(2**63)}
_VOTABLE_TYPES = {"str": "char", "int16": "short", "int64": "long", "float32": "float", "float64": "double"}
# Parquet row groups: large enough for fast scans, small enough for bounded memory.
PARQUET_ROW_GROUP_ROWS = 65_536
# Snappy, and dictionary pages for text and integer columns only: measured on 149,457 rows
# (writer CPU time; file size), snappy without float dictionaries took 0.28 s (21.6 MB)
# against zstd with every column's dictionary 0.52 s (12.6 MB), snappy with all 0.41 s
# (15.5 MB), no compression 0.16-0.26 s (36-54 MB).
PARQUET_COMPRESSION = "snappy"
# Bytes of binary COPY output taken at a time by the typed formats (about 8,000 rows).
ROW_BLOCK_BYTES = 4 << 20


# --- provenance ---------------------------------------------------------------------------


def release_provenance(release: CatalogRelease, filters: dict) -> dict:
    """What every download says about where its rows come from; the flag texts state the
    thresholds this release applied."""
    thresholds = flag_thresholds(catalog=CatalogRules.from_mapping(release.rules))
    return {
        "catalog": "SPCANet catalog of LAMOST-II MRS stellar labels",
        "release": release.name,
        "status": str(release.status),
        "published": release.published_at.isoformat() if release.published_at else None,
        "formal_model": release.formal_model.name,
        "formal_model_sha256": release.formal_model.artifact_sha256,
        "alternate_model": release.alternate_model.name,
        "alternate_model_sha256": release.alternate_model.artifact_sha256,
        "rules": dict(sorted(release.rules.items())),
        "filters": {key: str(value) for key, value in sorted(filters.items())},
        "flag_bits": {flag.name: {"bit": flag.bit, "level": flag.level.value, "meaning": flag.meaning_for(thresholds)}
                      for flag in CATALOG_FLAGS},
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def csvw_metadata(release: CatalogRelease, csv_url: str, filters: dict,
                  columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS) -> dict:
    """The CSV's sidecar, as CSV on the Web metadata (W3C, 'Metadata Vocabulary for
    Tabular Data'): the columns with their units and UCDs, and the release's provenance."""
    return {
        "@context": "http://www.w3.org/ns/csvw",
        "url": csv_url,
        "dc:title": f"SPCANet catalog release {release.name}{_title_suffix(columns)}",
        "dc:provenance": release_provenance(release, filters),
        "dialect": {"header": True, "doubleQuote": True, "encoding": "utf-8"},
        "tableSchema": {
            "columns": [
                {
                    "name": column.name,
                    "titles": column.name,
                    "datatype": {"str": "string", "int16": "short", "int64": "long",
                                 "float32": "float", "float64": "double"}[column.dtype],
                    "required": not column.nullable,
                    "null": "",
                    "dc:description": column.description,
                    "unit": column.unit,
                    "ucd": column.ucd,
                    "decimals": column.decimals,
                }
                for column in columns
            ],
        },
    }


def _title_suffix(columns: tuple[CatalogColumn, ...]) -> str:
    return ", star table (one row per star)" if columns is STAR_COLUMNS else ""


# --- rows as fixed-layout numpy blocks -----------------------------------------------------


def _numpy_type(column: CatalogColumn, widths: dict[str, int]) -> str:
    return f"S{widths[column.name]}" if column.dtype == "str" else _NUMPY_TYPES[column.dtype]


def row_dtype(widths: dict[str, int], columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS) -> np.dtype:
    """One row as the typed formats store it: big-endian numbers, text as NUL-padded bytes
    (FITS binary table layout; FITS standard 4.0, section 7.3)."""
    return np.dtype([(column.name, _numpy_type(column, widths)) for column in columns])


def null_mask(block: np.ndarray, column: CatalogColumn) -> np.ndarray | None:
    """Where ``column`` has no value in ``block``: NaN for floats, the FITS null for
    integers; None for a column that is never null."""
    if not column.nullable or column.dtype == "str":
        return None
    if column.is_float:
        return np.isnan(block[column.name])
    return block[column.name] == FITS_INT_NULL[column.dtype]


class _OctetLength(Func):
    function = "octet_length"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="length(CAST(%(expressions)s AS BLOB))", **extra_context)


def text_widths(entries: QuerySet) -> tuple[int, dict[str, int]]:
    """The number of rows and the longest value (bytes, UTF-8) of each text column: the
    fixed-width layout needs them before the first row is written."""
    text = [column for column in table_columns(entries) if column.dtype == "str"]
    aggregate = entries.order_by().aggregate(
        rows=Count("id"), **{f"width_{c.field}": Coalesce(Max(_OctetLength(c.field)), 0) for c in text})
    return aggregate["rows"], {c.name: max(1, aggregate[f"width_{c.field}"]) for c in text}


def _binary_column_sql(alias: str, column: CatalogColumn, width: int | None) -> str:
    """A column as a fixed-size binary COPY field, never NULL (see :func:`null_mask`)."""
    if column.dtype == "str":
        padding = "\\x" + "00" * width
        return f"substring(convert_to(coalesce({alias}, ''), 'UTF8') || '{padding}'::bytea from 1 for {width})"
    if column.is_float:  # as stored: rounded here, by numpy (see :func:`rounded`)
        return f"coalesce({alias}::float8, float8 'NaN')"
    kind = _PG_INT_TYPES[column.dtype]
    if column.nullable:
        return f"coalesce({alias}::{kind}, {kind} '{FITS_INT_NULL[column.dtype]}')"
    return f"{alias}::{kind}"


def binary_copy_sql(entries: QuerySet, widths: dict[str, int]) -> str:
    """``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` of ``entries`` in id order with every
    row the same size: floats as the doubles stored (not yet rounded), integers typed as
    their columns say, NULL as NaN or the FITS integer null, text as NUL-padded UTF-8 of
    a fixed width.

    Rounding is left to the client: 38 ``round`` expressions per row took most of the
    server's time for this statement, while numpy rounds a block's column at once (the
    two give the same doubles: :func:`rounded`)."""
    columns = table_columns(entries)
    fields = [column.field for column in columns]
    inner_sql, params = select_sql(entries, fields)
    aliases = [f"c{i}" for i in range(len(fields))]
    outer = [
        _binary_column_sql(alias, column, widths.get(column.name))
        for alias, column in zip(aliases, columns, strict=True)
    ]
    with connection.cursor() as cursor:
        query = cursor.mogrify(f"SELECT {', '.join(outer)} FROM ({inner_sql}) AS rows ({', '.join(aliases)})", params)
    return f"COPY ({query.decode()}) TO STDOUT WITH (FORMAT binary)"


# PostgreSQL's binary COPY: an 11-byte signature, flags and a header extension, then per
# row a field count and, per field, its length and bytes; a -1 field count ends the data
# (PostgreSQL documentation, COPY, "Binary Format").
_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_PGCOPY_TRAILER = b"\xff\xff"


def _wire_dtype(widths: dict[str, int], columns: tuple[CatalogColumn, ...]) -> np.dtype:
    fields: list[tuple[str, str]] = [("_count", ">i2")]
    for i, column in enumerate(columns):
        fields += [(f"_length{i}", ">i4"), (column.name, ">f8" if column.is_float else _numpy_type(column, widths))]
    return np.dtype(fields)


def rounded(values: np.ndarray, decimals: int) -> np.ndarray:
    """``values`` (doubles, any byte order; shape (n,)) rounded to ``decimals`` digits,
    as float64 (shape (n,)): the same doubles as :func:`inference.export.rounded_sql` on
    PostgreSQL, whose ``round(double precision)`` is ``rint`` (half to even, as
    ``numpy.rint``), then the same IEEE multiply, divide and ``+ 0.0`` (-0 becomes 0).
    NaN stays NaN."""
    out = values.astype(np.float64)
    if decimals == 0:
        np.rint(out, out=out)
    else:
        scale = 10.0**decimals
        out *= scale
        np.rint(out, out=out)
        out /= scale
    out += 0.0
    return out


def _typed_rows(wire_block: np.ndarray, columns: tuple[CatalogColumn, ...], dtype: np.dtype) -> np.ndarray:
    """Rows of the binary COPY as :func:`row_dtype` rows: floats rounded to their columns'
    digits and typed (float32 from the rounded double, as a cast on the server would)."""
    out = np.empty(len(wire_block), dtype=dtype)
    for column in columns:
        values = wire_block[column.name]
        out[column.name] = rounded(values, column.decimals) if column.is_float else values
    return out


def _checked(block: np.ndarray, wire: np.dtype) -> np.ndarray:
    """The rows, after checking the fixed layout: every row's field count, and the length
    of every field in the block's first and last rows. A row of another size would shift
    every row after it, so the field counts and the last row would no longer match (and
    the COPY's trailer would not follow the last row, which :func:`_wire_rows` checks)."""
    names = [name for name in wire.names if not name.startswith("_")]
    ends = block[[0, -1]]
    ok = bool((block["_count"] == len(names)).all())
    for i, name in enumerate(names):
        ok = ok and bool((ends[f"_length{i}"] == wire.fields[name][0].itemsize).all())
    if not ok:
        raise RuntimeError("the binary COPY's rows are not of the expected layout")
    return block


def row_blocks(entries: QuerySet, widths: dict[str, int], chunk_size: int) -> Iterator[np.ndarray]:
    """The rows of ``entries`` in id order, in blocks, as structured arrays whose fields
    are :func:`row_dtype`'s (no value: see :func:`null_mask`).

    On PostgreSQL one binary COPY whose rows all have the same size (no text formatting
    on the server, no parsing here: the bytes are the rows), cancelled if the client goes
    away; elsewhere a server-side cursor, ``chunk_size`` rows at a time.
    """
    if not copy_available():
        yield from _python_row_blocks(entries, widths, chunk_size)
        return
    columns = table_columns(entries)
    dtype = row_dtype(widths, columns)
    for block in _wire_blocks(entries, widths):
        yield _typed_rows(block, columns, dtype)


def column_blocks(entries: QuerySet, widths: dict[str, int], chunk_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The rows of :func:`row_blocks`, in blocks of columns: each a contiguous array in
    native byte order (floats rounded, float32 or float64; integers with the FITS null for
    no value; text ``S<width>``). For writers that want columns (Parquet): from the
    binary COPY they are cut out once, not through the big-endian rows."""
    columns = table_columns(entries)
    if not copy_available():
        for block in _python_row_blocks(entries, widths, chunk_size):
            yield {column.name: _native(block[column.name]) for column in columns}
        return
    for block in _wire_blocks(entries, widths):
        yield {
            column.name: (rounded(block[column.name], column.decimals).astype(column.dtype, copy=False)
                          if column.is_float else _native(block[column.name]))
            for column in columns
        }


def _native(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))


def _wire_blocks(entries: QuerySet, widths: dict[str, int]) -> Iterator[np.ndarray]:
    wire = _wire_dtype(widths, table_columns(entries))
    with closing(copy_blocks(binary_copy_sql(entries, widths))) as copy:  # closing it cancels the COPY
        yield from _wire_rows(copy, wire)


def _wire_rows(copy: Iterator[bytes], wire: np.dtype) -> Iterator[np.ndarray]:
    pending = b""
    header_done = False
    parts: list[bytes] = []
    size = 0
    for block in copy:
        parts.append(block)
        size += len(block)
        if size < ROW_BLOCK_BYTES and header_done:
            continue
        data = pending + b"".join(parts)
        parts, size = [], 0
        if not header_done:
            if len(data) < 19:
                pending = data
                continue
            if not data.startswith(_PGCOPY_SIGNATURE):
                raise RuntimeError("not a PostgreSQL binary COPY")
            data = data[19 + int.from_bytes(data[15:19], "big"):]
            header_done = True
        n_rows = len(data) // wire.itemsize
        pending = data[n_rows * wire.itemsize:]
        if n_rows:
            yield _checked(np.frombuffer(data, dtype=wire, count=n_rows), wire)
    data = pending + b"".join(parts)
    n_rows = max(0, (len(data) - len(_PGCOPY_TRAILER)) // wire.itemsize)
    if n_rows:
        yield _checked(np.frombuffer(data, dtype=wire, count=n_rows), wire)
    if data[n_rows * wire.itemsize:] != _PGCOPY_TRAILER:
        raise RuntimeError("the binary COPY ended in the middle of a row")


def _python_row_blocks(entries: QuerySet, widths: dict[str, int], chunk_size: int) -> Iterator[np.ndarray]:
    columns = table_columns(entries)
    dtype = row_dtype(widths, columns)
    fields = [column.field for column in columns]
    rows = entries.order_by("id").values_list(*fields).iterator(chunk_size=chunk_size)
    while block := list(islice(rows, chunk_size)):
        out = np.empty(len(block), dtype=dtype)
        for values, column in zip(zip(*block, strict=True), columns, strict=True):
            if column.dtype == "str":
                encoded = [(value or "").encode() for value in values]
                if max(len(value) for value in encoded) > widths[column.name]:
                    raise RuntimeError(f"{column.name}: a value is wider than counted before writing")
                out[column.name] = encoded
            elif column.is_float:  # rounded as on PostgreSQL (inference.export.rounded_sql)
                scale = 10.0**column.decimals
                out[column.name] = [np.nan if v is None else round(v * scale) / scale + 0.0 for v in values]
            else:
                out[column.name] = [FITS_INT_NULL.get(column.dtype) if v is None else v for v in values]
        yield out


def arrow_strings(values: np.ndarray):
    """A fixed-width text column (``S<width>``, NUL-padded UTF-8; shape (n,)) as an Arrow
    string array without the padding: offsets and bytes cut out with numpy.

    Text has no NUL of its own (PostgreSQL text cannot hold one), so a value ends after
    its last non-NUL byte; an empty value (no text) is the empty string.
    """
    import pyarrow as pa

    n_rows, width = len(values), values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n_rows, width)
    if n_rows and raw[:, -1].all():  # every value fills the width (identifiers often do)
        offsets = np.arange(0, (n_rows + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n_rows, pa.py_buffer(offsets), pa.py_buffer(raw))
    filled = raw != 0
    lengths = np.where(filled.any(axis=1), width - np.argmax(filled[:, ::-1], axis=1), 0)
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = raw[np.arange(width) < lengths[:, None]]  # row by row, each value's bytes
    return pa.StringArray.from_buffers(n_rows, pa.py_buffer(offsets), pa.py_buffer(data))


def arrow_numbers(values: np.ndarray, column: CatalogColumn, arrow_type):
    """A numeric column (native byte order, contiguous; shape (n,)) as an Arrow array over
    the same memory, with a validity bitmap where it has nulls (NaN, or the FITS integer
    null)."""
    import pyarrow as pa

    mask = None
    if column.nullable:
        mask = np.isnan(values) if column.is_float else values == FITS_INT_NULL[column.dtype]
    n_nulls = 0 if mask is None else int(np.count_nonzero(mask))
    validity = pa.py_buffer(np.packbits(~mask, bitorder="little")) if n_nulls else None
    return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(values)], null_count=n_nulls)


def arrow_table(block: dict[str, np.ndarray], schema, columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS):
    """A block of :func:`column_blocks` as an Arrow table, nulls as nulls."""
    import pyarrow as pa

    return pa.Table.from_arrays([
        arrow_strings(block[column.name]) if column.dtype == "str"
        else arrow_numbers(block[column.name], column, field.type)
        for column, field in zip(columns, schema, strict=True)
    ], schema=schema)


def _arrow_schema(columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS):
    import pyarrow as pa

    return pa.schema([
        pa.field(column.name, getattr(pa, "string" if column.dtype == "str" else column.dtype)(),
                 nullable=column.nullable, metadata={
            "unit": column.unit or "", "ucd": column.ucd, "description": column.description,
        })
        for column in columns
    ])


# --- Parquet -------------------------------------------------------------------------------


class _ByteSink(io.RawIOBase):
    """A write-only file that keeps what is written until it is taken."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self._parts.append(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _pandas_metadata(columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS) -> bytes:
    """pandas' own schema metadata (as pyarrow writes it for a DataFrame), so that
    ``pandas.read_parquet`` gives the nullable Gaia id as ``Int64``, never float64."""
    numpy_types = {"str": "object", "int16": "int16", "int64": "Int64", "float32": "float32", "float64": "float64"}
    pandas_types = {"str": "unicode", "int16": "int16", "int64": "int64", "float32": "float32", "float64": "float64"}
    return json.dumps({
        "index_columns": [], "column_indexes": [],
        "columns": [
            {"name": c.name, "field_name": c.name, "pandas_type": pandas_types[c.dtype],
             "numpy_type": numpy_types[c.dtype] if c.nullable else numpy_types[c.dtype].lower(), "metadata": None}
            for c in columns
        ],
        "creator": {"library": "pyarrow", "version": version("pyarrow")},
    }).encode()


def stream_parquet(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = table_columns(entries)
    schema = _arrow_schema(columns).with_metadata({
        "spcanet": json.dumps(release_provenance(release, filters)), "pandas": _pandas_metadata(columns),
    })
    _, widths = text_widths(entries)
    sink = _ByteSink()
    dictionary = [column.name for column in columns if not column.is_float]
    writer = pq.ParquetWriter(sink, schema, compression=PARQUET_COMPRESSION, use_dictionary=dictionary)
    pending: list = []
    pending_rows = 0
    for block in column_blocks(entries, widths, chunk_size):
        table = arrow_table(block, schema, columns)
        pending.append(table)
        pending_rows += table.num_rows
        if pending_rows >= PARQUET_ROW_GROUP_ROWS:
            writer.write_table(pa.concat_tables(pending).replace_schema_metadata(schema.metadata))
            pending, pending_rows = [], 0
            yield sink.take()
    if pending:
        writer.write_table(pa.concat_tables(pending).replace_schema_metadata(schema.metadata))
    writer.close()
    yield sink.take()


# --- FITS ----------------------------------------------------------------------------------


def _fits_keywords(header, release: CatalogRelease, filters: dict) -> None:
    provenance = release_provenance(release, filters)
    header["ORIGIN"] = ("SPCANet catalog", "organisation or software that wrote the file")
    header["TELESCOP"] = "LAMOST"
    header["INSTRUME"] = ("MRS", "LAMOST-II Medium Resolution Survey")
    header["DATE"] = (provenance["written"][:19], "file written (UTC)")
    header["RELEASE"] = (release.name, "catalog release")
    header["RELSTAT"] = (str(release.status), "release status")
    header["RELDATE"] = (provenance["published"] or "", "release published (UTC)")
    header["FORMAL"] = (release.formal_model.name, "formal model (published labels)")
    header["FORMSHA"] = release.formal_model.artifact_sha256  # sha256 of the formal model's artifact
    header["ALTERN"] = (release.alternate_model.name, "alternate model (agreement test)")
    header["ALTSHA"] = release.alternate_model.artifact_sha256
    header["FILTERS"] = json.dumps(provenance["filters"]) if filters else "none"  # the API filters applied
    header["RULES"] = json.dumps(provenance["rules"])  # the catalog rules' thresholds
    for flag in CATALOG_FLAGS:
        header.add_comment(f"flag_bits bit {flag.bit} {flag.name} [{flag.level.value}]: {provenance['flag_bits'][flag.name]['meaning']}")


def stream_fits(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[bytes]:
    """A primary HDU, then one binary table whose NAXIS2 is counted before the rows stream."""
    from astropy.io import fits

    n_rows, widths = text_widths(entries)
    columns = table_columns(entries)
    fits_columns = []
    for column in columns:
        tform = f"{widths[column.name]}A" if column.dtype == "str" else _FITS_FORMATS[column.dtype]
        null = FITS_INT_NULL[column.dtype] if column.nullable and column.dtype in FITS_INT_NULL else None
        fits_columns.append(fits.Column(name=column.name, format=tform, unit=column.unit, null=null))
    hdu = fits.BinTableHDU.from_columns(fits_columns, nrows=0, name="STARS" if columns is STAR_COLUMNS else "CATALOG")
    header = hdu.header
    for i, column in enumerate(columns, start=1):
        header.insert(f"TFORM{i}", (f"TUCD{i}", column.ucd, "UCD"), after=True)
        header.insert(f"TUCD{i}", (f"TCOMM{i}", column.description), after=True)
    _fits_keywords(header, release, filters)
    header["NAXIS2"] = n_rows
    primary = fits.PrimaryHDU()
    _fits_keywords(primary.header, release, filters)
    yield primary.header.tostring().encode("ascii")
    yield header.tostring().encode("ascii")

    dtype = row_dtype(widths, columns)  # the rows' bytes are the table's: NaN and TNULL for no value
    written = 0
    for block in row_blocks(entries, widths, chunk_size):
        if written + len(block) > n_rows:
            break  # more rows than counted: reported below
        written += len(block)
        yield np.ascontiguousarray(block, dtype=dtype).tobytes()  # row_blocks' rows are the table's
    if written != n_rows:
        # The rows changed between the count and the copy (a draft being rebuilt): the
        # file would be corrupt, so the download ends unfinished instead.
        raise RuntimeError(f"FITS export of {release.name}: counted {n_rows} rows, got others")
    yield b"\0" * (-(n_rows * dtype.itemsize) % 2880)  # records of 2880 bytes


# --- VOTable -------------------------------------------------------------------------------


def _votable_document(release: CatalogRelease, filters: dict, widths: dict[str, int],
                      columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS) -> tuple[str, str]:
    """The VOTable before and after its rows (astropy writes the document, without data)."""
    from astropy.io.votable import tree as votable_tree

    document = votable_tree.VOTableFile()
    resource = votable_tree.Resource()
    document.resources.append(resource)
    provenance = release_provenance(release, filters)
    for key in ("catalog", "release", "status", "published", "formal_model", "formal_model_sha256",
                "alternate_model", "alternate_model_sha256", "written"):
        resource.infos.append(votable_tree.Info(name=key, value=str(provenance[key] or "")))
    resource.infos.append(votable_tree.Info(name="rules", value=json.dumps(provenance["rules"])))
    resource.infos.append(votable_tree.Info(name="filters", value=json.dumps(provenance["filters"])))
    stars = "_stars" if columns is STAR_COLUMNS else ""
    table = votable_tree.TableElement(document, name=f"spcanet_{release.name}{stars}".replace("-", "_"))
    table.description = (f"SPCANet catalog of LAMOST-II MRS stellar labels, release {release.name}"
                         f"{_title_suffix(columns)}")
    resource.tables.append(table)
    for column in columns:
        field = votable_tree.Field(
            document, name=column.name, datatype=_VOTABLE_TYPES[column.dtype], unit=column.unit, ucd=column.ucd,
            arraysize=str(widths[column.name]) if column.dtype == "str" else None,
        )
        field.description = column.description
        table.fields.append(field)
    table.create_arrays(0)
    text = io.BytesIO()
    document.to_xml(text, tabledata_format="binary2")
    xml = text.getvalue().decode()
    cut = xml.rindex("</TABLE>")
    return xml[:cut] + '<DATA><BINARY2><STREAM encoding="base64">\n', "</STREAM></BINARY2></DATA>\n" + xml[cut:]


def stream_votable(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[str]:
    """VOTable 1.4 with the rows as BINARY2 (a null flag per cell, big-endian values)."""
    _, widths = text_widths(entries)
    columns = table_columns(entries)
    head, tail = _votable_document(release, filters, widths, columns)
    yield head
    n_flag_bytes = (len(columns) + 7) // 8
    dtype = np.dtype([("nulls", "u1", (n_flag_bytes,)), *row_dtype(widths, columns).descr])
    carry = b""  # base64 works on 3-byte groups; what is left over waits for the next block
    for block in row_blocks(entries, widths, chunk_size):
        rows = np.empty(len(block), dtype=dtype)
        nulls = np.zeros((len(block), n_flag_bytes * 8), dtype=bool)
        for i, column in enumerate(columns):
            rows[column.name] = block[column.name]
            mask = null_mask(block, column)
            if mask is not None:
                nulls[:, i] = mask
        rows["nulls"] = np.packbits(nulls, axis=1)  # the first column is the first byte's top bit
        data = carry + rows.tobytes()
        keep = len(data) - len(data) % 3
        carry = data[keep:]
        yield base64.encodebytes(data[:keep]).decode("ascii")
    if carry:
        yield base64.encodebytes(carry).decode("ascii")
    yield tail


# --- ECSV ----------------------------------------------------------------------------------


def stream_ecsv(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[str | bytes]:
    """ECSV 1.0 (astropy's header, comma-delimited), then the same rows as the CSV
    without the spreadsheet prefix; an empty cell is a masked (null) value."""
    from astropy.table import Table

    columns = table_columns(entries)
    empty = Table(masked=True)
    for column in columns:
        dtype = "str" if column.dtype == "str" else column.dtype
        empty.add_column(np.zeros(0, dtype=dtype), name=column.name)
        empty[column.name].unit = column.unit
        empty[column.name].description = column.description
        empty[column.name].meta["ucd"] = column.ucd
    empty.meta.update(release_provenance(release, filters))
    text = io.StringIO()
    empty.write(text, format="ascii.ecsv", delimiter=",")
    yield text.getvalue()
    yield from csv_rows(entries, columns, chunk_size, spreadsheet=False)


# --- the formats ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadFormat:
    """``name`` the ``format`` query value; ``media_type`` the response's Content-Type;
    ``extension`` of the file name (and of the ``export.<extension>`` URL, when it has one)."""

    name: str
    media_type: str
    extension: str
    description: str
    stream: Callable[[CatalogRelease, QuerySet, dict, int], Iterator[str | bytes]]


def download_file_name(release: CatalogRelease, fmt: DownloadFormat, *, stars: bool = False) -> str:
    """The file name of a download of ``release`` (its star table where ``stars``) in ``fmt``:
    the name a browser saves and the name of the release's written file."""
    table = "-stars" if stars else ""
    paper = "-paper" if fmt.name == "csv-paper" else ""
    return f"spcanet-{release.name}{table}{paper}.{fmt.extension}"


def _stream_csv_paper(release, entries, filters, chunk_size):
    return stream_csv(release, entries, filters, chunk_size, paper=True)


FORMATS: dict[str, DownloadFormat] = {
    fmt.name: fmt
    for fmt in (
        DownloadFormat("csv", "text/csv", "csv",
                       "CSV (RFC 4180): one header row, empty cell for no value; metadata in export.csv-metadata.json",
                       stream_csv),
        DownloadFormat("csv-paper", "text/csv", "csv",
                       "CSV in the paper's Table 2 names and order, -9999 for no value", _stream_csv_paper),
        DownloadFormat("ecsv", "text/x-ecsv", "ecsv", "ECSV 1.0 (astropy): typed columns, units, metadata",
                       stream_ecsv),
        DownloadFormat("fits", "application/fits", "fits",
                       "FITS binary table: TUNIT, TNULL, TUCD, provenance keywords", stream_fits),
        DownloadFormat("votable", "application/x-votable+xml", "vot",
                       "VOTable 1.4 (BINARY2): units, UCDs, descriptions", stream_votable),
        DownloadFormat("parquet", "application/vnd.apache.parquet", "parquet",
                       "Parquet: typed, nullable columns; units, UCDs and provenance in the schema metadata",
                       stream_parquet),
    )
}
