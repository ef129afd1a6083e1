"""A release (or any filter of it) in the formats of the field, streamed in bounded memory.

CSV (RFC 4180; :mod:`inference.export`), ECSV, FITS binary table, VOTable (BINARY2) and
Parquet, every one with the columns of :data:`inference.columns.CATALOG_COLUMNS`: the
same names, units, UCDs, descriptions, types and rounding. Missing values are null in
each format's own way (FITS ``TNULL`` for integers and NaN for floats, VOTable null
flags, Parquet and ECSV nulls, an empty CSV cell); Gaia ids are exact 64-bit integers.

Rows come in blocks: on PostgreSQL from the same cancellable ``COPY`` as the CSV, parsed
block by block by pyarrow's CSV reader; elsewhere from a server-side cursor. Each block
is written out before the next is read, so memory does not grow with the release. The
headers (FITS, VOTable, ECSV) are made by astropy, the Parquet file by pyarrow; only the
rows of FITS and VOTable are packed here, with numpy, in the layout those standards fix.
"""

import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.io.votable import tree as votable_tree
from astropy.table import Table
from django.db import connection
from django.db.models import Count, Max, QuerySet
from django.db.models.functions import Coalesce, Length

from spectra.flags import CATALOG_FLAGS

from .columns import CATALOG_COLUMNS, CatalogColumn
from .export import copy_blocks, copy_sql, csv_rows, stream_csv
from .models import CatalogRelease

ARROW_TYPES = {
    "str": pa.string(), "int16": pa.int16(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(),
}
# FITS TFORM and the big-endian numpy type of its bytes (FITS standard 4.0, section 7.3).
_FITS_FORMATS = {"int16": ("I", ">i2"), "int64": ("K", ">i8"), "float32": ("E", ">f4"), "float64": ("D", ">f8")}
# The FITS null of a nullable integer column (TNULLn): the most negative value, which no
# id or flag word takes.
FITS_INT_NULL = {"int16": -(2**15), "int64": -(2**63)}
_VOTABLE_TYPES = {"str": "char", "int16": "short", "int64": "long", "float32": "float", "float64": "double"}
# Parquet row groups: large enough for fast scans, small enough for bounded memory.
PARQUET_ROW_GROUP_ROWS = 100_000
# Bytes of COPY output parsed at a time for the typed formats (about 20,000 rows).
ARROW_BLOCK_BYTES = 8 << 20


# --- provenance ---------------------------------------------------------------------------


def release_provenance(release: CatalogRelease, filters: dict) -> dict:
    """What every download says about where its rows come from."""
    return {
        "catalog": "SPCANet catalog of LAMOST-II MRS stellar labels",
        "release": release.name,
        "status": release.status,
        "published": release.published_at.isoformat() if release.published_at else None,
        "formal_model": release.formal_model.name,
        "formal_model_sha256": release.formal_model.artifact_sha256,
        "alternate_model": release.alternate_model.name,
        "alternate_model_sha256": release.alternate_model.artifact_sha256,
        "rules": dict(sorted(release.rules.items())),
        "filters": {key: str(value) for key, value in sorted(filters.items())},
        "flag_bits": {flag.name: {"bit": flag.bit, "level": flag.level.value, "meaning": flag.meaning}
                      for flag in CATALOG_FLAGS},
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def csvw_metadata(release: CatalogRelease, csv_url: str, filters: dict) -> dict:
    """The CSV's sidecar, as CSV on the Web metadata (W3C, 'Metadata Vocabulary for
    Tabular Data'): the columns with their units and UCDs, and the release's provenance."""
    return {
        "@context": "http://www.w3.org/ns/csvw",
        "url": csv_url,
        "dc:title": f"SPCANet catalog release {release.name}",
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
                for column in CATALOG_COLUMNS
            ],
        },
    }


# --- rows as Arrow tables ------------------------------------------------------------------


def _arrow_schema(columns: tuple[CatalogColumn, ...] = CATALOG_COLUMNS) -> pa.Schema:
    return pa.schema([
        pa.field(column.name, ARROW_TYPES[column.dtype], nullable=column.nullable, metadata={
            "unit": column.unit or "", "ucd": column.ucd, "description": column.description,
        })
        for column in columns
    ])


def arrow_tables(entries: QuerySet, chunk_size: int) -> Iterator[pa.Table]:
    """The rows of ``entries`` in id order as Arrow tables of a few thousand rows each,
    typed and rounded as :data:`CATALOG_COLUMNS` says, null where there is no value."""
    schema = _arrow_schema()
    if connection.vendor == "postgresql":
        read_options = pa_csv.ReadOptions(column_names=schema.names, block_size=1 << 22)
        convert_options = pa_csv.ConvertOptions(
            column_types={field.name: field.type for field in schema}, null_values=[""],
            strings_can_be_null=False, quoted_strings_can_be_null=False,
        )
        blocks: list[bytes] = []
        size = 0
        for block in copy_blocks(copy_sql(entries, CATALOG_COLUMNS, spreadsheet=False)):
            blocks.append(block)
            size += len(block)
            if size < ARROW_BLOCK_BYTES:
                continue
            data = b"".join(blocks)
            cut = data.rfind(b"\n") + 1  # COPY writes no newline inside our values (ids are ASCII header words)
            blocks, size = [data[cut:]], len(data) - cut
            yield _parsed(data[:cut], schema, read_options, convert_options)
        data = b"".join(blocks)
        if data and not data.endswith(b"\n"):
            raise RuntimeError("the COPY ended in the middle of a row")
        if data:
            yield _parsed(data, schema, read_options, convert_options)
        return
    fields = [column.field for column in CATALOG_COLUMNS]
    rows = entries.order_by("id").values_list(*fields).iterator(chunk_size=chunk_size)
    block: list[tuple] = []
    for row in rows:
        block.append(row)
        if len(block) >= chunk_size:
            yield _rows_table(block, schema)
            block = []
    if block:
        yield _rows_table(block, schema)


def _parsed(data: bytes, schema: pa.Schema, read_options, convert_options) -> pa.Table:
    table = pa_csv.read_csv(pa.py_buffer(data), read_options=read_options, convert_options=convert_options)
    return table.cast(schema).combine_chunks()


def _rows_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    arrays = []
    for values, column, field in zip(zip(*rows, strict=True), CATALOG_COLUMNS, schema, strict=True):
        if column.is_float:  # as the COPY path rounds (inference.export.rounded_sql)
            scale = 10.0**column.decimals
            array = pa.array(
                [None if value is None else round(value * scale) / scale + 0.0 for value in values], type=pa.float64()
            ).cast(field.type)
        else:
            array = pa.array(values, type=field.type)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


def _text_widths(entries: QuerySet) -> tuple[int, dict[str, int]]:
    """The number of rows and the longest value (bytes) of each text column: FITS and the
    VOTable's fixed-width fields need them before the first row is written."""
    text = [column for column in CATALOG_COLUMNS if column.dtype == "str"]
    aggregate = entries.order_by().aggregate(
        rows=Count("id"), **{f"width_{c.field}": Coalesce(Max(Length(c.field)), 0) for c in text})
    # Length counts characters; ids are ASCII, and a wider value is refused when packed.
    return aggregate["rows"], {c.name: max(1, aggregate[f"width_{c.field}"]) for c in text}


def _packed_strings(array: pa.ChunkedArray, width: int) -> np.ndarray:
    """Text as fixed-width bytes padded with NUL (the FITS and VOTable char layout)."""
    padded = pc.utf8_rpad(array.combine_chunks().fill_null(""), width=width, padding="\0")
    if len(padded) == 0:
        return np.zeros(0, dtype=f"S{width}")
    lengths = pc.binary_length(padded)
    if pc.min(lengths).as_py() != width or pc.max(lengths).as_py() != width:
        raise ValueError(f"a text value is longer than the {width} bytes counted before writing")
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32, count=len(padded) + 1, offset=padded.offset * 4)
    return np.frombuffer(padded.buffers()[2], dtype=f"S{width}", count=len(padded), offset=int(offsets[0]))


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


def _pandas_metadata() -> bytes:
    """pandas' own schema metadata (as pyarrow writes it for a DataFrame), so that
    ``pandas.read_parquet`` gives the nullable Gaia id as ``Int64``, never float64."""
    numpy_types = {"str": "object", "int16": "int16", "int64": "Int64", "float32": "float32", "float64": "float64"}
    pandas_types = {"str": "unicode", "int16": "int16", "int64": "int64", "float32": "float32", "float64": "float64"}
    return json.dumps({
        "index_columns": [], "column_indexes": [],
        "columns": [
            {"name": c.name, "field_name": c.name, "pandas_type": pandas_types[c.dtype],
             "numpy_type": numpy_types[c.dtype] if c.nullable else numpy_types[c.dtype].lower(), "metadata": None}
            for c in CATALOG_COLUMNS
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }).encode()


def stream_parquet(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[bytes]:
    schema = _arrow_schema().with_metadata({
        "spcanet": json.dumps(release_provenance(release, filters)), "pandas": _pandas_metadata(),
    })
    sink = _ByteSink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in arrow_tables(entries, chunk_size):
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


def _fits_keywords(header: fits.Header, release: CatalogRelease, filters: dict) -> None:
    provenance = release_provenance(release, filters)
    header["ORIGIN"] = ("SPCANet catalog", "organisation or software that wrote the file")
    header["TELESCOP"] = "LAMOST"
    header["INSTRUME"] = ("MRS", "LAMOST-II Medium Resolution Survey")
    header["DATE"] = (provenance["written"][:19], "file written (UTC)")
    header["RELEASE"] = (release.name, "catalog release")
    header["RELSTAT"] = (release.status, "release status")
    header["RELDATE"] = (provenance["published"] or "", "release published (UTC)")
    header["FORMAL"] = (release.formal_model.name, "formal model (published labels)")
    header["FORMSHA"] = release.formal_model.artifact_sha256  # sha256 of the formal model's artifact
    header["ALTERN"] = (release.alternate_model.name, "alternate model (agreement test)")
    header["ALTSHA"] = release.alternate_model.artifact_sha256
    header["FILTERS"] = json.dumps(provenance["filters"]) if filters else "none"  # the API filters applied
    header["RULES"] = json.dumps(provenance["rules"])  # the catalog rules' thresholds
    for flag in CATALOG_FLAGS:
        header.add_comment(f"flag_bits bit {flag.bit} {flag.name} [{flag.level.value}]: {flag.meaning}")


def stream_fits(release: CatalogRelease, entries: QuerySet, filters: dict, chunk_size: int) -> Iterator[bytes]:
    """A primary HDU, then one binary table whose NAXIS2 is counted before the rows stream."""
    n_rows, widths = _text_widths(entries)
    fits_columns, row_dtype = [], []
    for column in CATALOG_COLUMNS:
        if column.dtype == "str":
            tform, numpy_type = f"{widths[column.name]}A", f"S{widths[column.name]}"
        else:
            tform, numpy_type = _FITS_FORMATS[column.dtype]
        null = FITS_INT_NULL[column.dtype] if column.nullable and column.dtype in FITS_INT_NULL else None
        fits_columns.append(fits.Column(name=column.name, format=tform, unit=column.unit, null=null))
        row_dtype.append((column.name, numpy_type))
    hdu = fits.BinTableHDU.from_columns(fits_columns, nrows=0, name="CATALOG")
    header = hdu.header
    for i, column in enumerate(CATALOG_COLUMNS, start=1):
        header.insert(f"TFORM{i}", (f"TUCD{i}", column.ucd, "UCD"), after=True)
        header.insert(f"TUCD{i}", (f"TCOMM{i}", column.description), after=True)
    _fits_keywords(header, release, filters)
    header["NAXIS2"] = n_rows
    primary = fits.PrimaryHDU()
    _fits_keywords(primary.header, release, filters)
    yield primary.header.tostring().encode("ascii")
    yield header.tostring().encode("ascii")

    dtype = np.dtype(row_dtype)
    written = 0
    for table in arrow_tables(entries, chunk_size):
        if written + table.num_rows > n_rows:
            break  # more rows than counted: reported below
        rows = np.empty(table.num_rows, dtype=dtype)
        for column in CATALOG_COLUMNS:
            values = table.column(column.name)
            if column.dtype == "str":
                rows[column.name] = _packed_strings(values, widths[column.name])
            elif column.is_float:
                rows[column.name] = values.to_numpy(zero_copy_only=False)  # null is NaN
            else:
                if column.nullable:
                    values = values.fill_null(FITS_INT_NULL[column.dtype])
                rows[column.name] = values.to_numpy(zero_copy_only=False)
        written += table.num_rows
        yield rows.tobytes()
    if written != n_rows:
        # The rows changed between the count and the copy (a draft being rebuilt): the
        # file would be corrupt, so the download ends unfinished instead.
        raise RuntimeError(f"FITS export of {release.name}: counted {n_rows} rows, got others")
    yield b"\0" * (-(n_rows * dtype.itemsize) % 2880)  # records of 2880 bytes


# --- VOTable -------------------------------------------------------------------------------


def _votable_document(release: CatalogRelease, filters: dict, widths: dict[str, int]) -> tuple[str, str]:
    """The VOTable before and after its rows (astropy writes the document, without data)."""
    document = votable_tree.VOTableFile()
    resource = votable_tree.Resource()
    document.resources.append(resource)
    provenance = release_provenance(release, filters)
    for key in ("catalog", "release", "status", "published", "formal_model", "formal_model_sha256",
                "alternate_model", "alternate_model_sha256", "written"):
        resource.infos.append(votable_tree.Info(name=key, value=str(provenance[key] or "")))
    resource.infos.append(votable_tree.Info(name="rules", value=json.dumps(provenance["rules"])))
    resource.infos.append(votable_tree.Info(name="filters", value=json.dumps(provenance["filters"])))
    table = votable_tree.TableElement(document, name=f"spcanet_{release.name}".replace("-", "_"))
    table.description = f"SPCANet catalog of LAMOST-II MRS stellar labels, release {release.name}"
    resource.tables.append(table)
    for column in CATALOG_COLUMNS:
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
    _, widths = _text_widths(entries)
    head, tail = _votable_document(release, filters, widths)
    yield head
    n_flag_bytes = (len(CATALOG_COLUMNS) + 7) // 8
    row_dtype = [("nulls", "u1", (n_flag_bytes,))]
    for column in CATALOG_COLUMNS:
        row_dtype.append((column.name, f"S{widths[column.name]}" if column.dtype == "str"
                          else _FITS_FORMATS[column.dtype][1]))
    dtype = np.dtype(row_dtype)
    carry = b""  # base64 works on 3-byte groups; what is left over waits for the next block
    for table in arrow_tables(entries, chunk_size):
        rows = np.zeros(table.num_rows, dtype=dtype)
        nulls = np.zeros((table.num_rows, n_flag_bytes * 8), dtype=bool)
        for i, column in enumerate(CATALOG_COLUMNS):
            values = table.column(column.name)
            if column.dtype == "str":
                rows[column.name] = _packed_strings(values, widths[column.name])
                continue
            if column.nullable:
                nulls[:, i] = values.is_null().to_numpy(zero_copy_only=False)
            if column.is_float:
                rows[column.name] = values.to_numpy(zero_copy_only=False)
            else:
                rows[column.name] = values.fill_null(0).to_numpy(zero_copy_only=False)
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
    empty = Table(masked=True)
    for column in CATALOG_COLUMNS:
        dtype = "str" if column.dtype == "str" else column.dtype
        empty.add_column(np.zeros(0, dtype=dtype), name=column.name)
        empty[column.name].unit = column.unit
        empty[column.name].description = column.description
        empty[column.name].meta["ucd"] = column.ucd
    empty.meta.update(release_provenance(release, filters))
    text = io.StringIO()
    empty.write(text, format="ascii.ecsv", delimiter=",")
    yield text.getvalue()
    yield from csv_rows(entries, CATALOG_COLUMNS, chunk_size, spreadsheet=False)


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
