"""FITS files held in memory: headers as plain dicts, binary tables as numpy views.

Reading a LAMOST MRS file through ``astropy.io.fits.open`` builds an HDU object, a
FITS_rec and column objects for each of up to 20 tables, and every header value access
goes through astropy's configuration machinery; together that costs several times the
decompression. Here the file is decompressed once, each header's value cards are parsed
into a dict (``parse_header``, checked card for card against astropy's parser on the real
files in the tests), and each binary table's rows are viewed in place with a numpy
structured dtype built from its TFORMn cards: no copies until the reader converts the
few columns it needs. Writing files stays with astropy (``lamost_writer``).
"""

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from isal import isal_zlib

from .errors import CorruptFileError, NotFitsError

BLOCK = 2880
CARD = 80
_END_CARD = b"END" + b" " * 77
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCM])")
_FITS_TYPES = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "A": "S1", "E": ">f4", "D": ">f8"}


_VALUE_CARD = re.compile(rb"([A-Z0-9_-]{1,8}) *= ")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def _card_value(text: str):
    """The value of a fixed-format FITS value field (columns 11-80)."""
    stripped = text.lstrip()
    if stripped.startswith("'"):
        out, i = [], 1
        while i < len(stripped):
            char = stripped[i]
            if char == "'":
                if stripped[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(char)
            i += 1
        return "".join(out).rstrip()
    token = stripped.split("/", 1)[0].strip()
    if token == "T":
        return True
    if token == "F":
        return False
    if _INTEGER.match(token):
        return int(token)
    if _NUMBER.match(token):
        return float(token.replace("D", "E").replace("d", "e"))
    return None if token == "" else token


def parse_header(block: bytes) -> dict[str, object]:
    """Keyword -> value of every value card of a header (COMMENT, HISTORY and blank
    cards are skipped; a repeated keyword keeps its first value, as astropy's lookup does)."""
    header: dict[str, object] = {}
    for start in range(0, len(block), CARD):
        card = block[start : start + CARD]
        match = _VALUE_CARD.match(card)
        if match is None:
            continue
        keyword = match.group(1).decode("ascii")
        if keyword not in header:
            header[keyword] = _card_value(card[10:].decode("ascii", errors="replace"))
    return header


@dataclass
class Hdu:
    header: dict[str, object]
    data: memoryview  # this HDU's data bytes (without padding)

    @property
    def name(self) -> str:
        return str(self.header.get("EXTNAME", "")).strip().upper()

    @property
    def is_table(self) -> bool:
        return str(self.header.get("XTENSION", "")).strip() == "BINTABLE"

    @cached_property
    def columns(self) -> dict[str, np.ndarray]:
        """The binary table's columns by upper-case name, scaled by TSCALn/TZEROn if present."""
        header = self.header
        n_fields = int(header.get("TFIELDS", 0))
        names, formats, offsets, offset = [], [], [], 0
        for i in range(1, n_fields + 1):
            match = _TFORM.match(str(header.get(f"TFORM{i}", "")))
            if match is None or match.group(2) not in _FITS_TYPES:
                raise ValueError(f"unsupported TFORM{i} {header.get(f'TFORM{i}')!r}")
            repeat = int(match.group(1) or 1)
            base = np.dtype(_FITS_TYPES[match.group(2)])
            names.append(str(header.get(f"TTYPE{i}", f"COL{i}")).strip().upper())
            formats.append((base, (repeat,)) if repeat != 1 else base)
            offsets.append(offset)
            offset += base.itemsize * repeat
        row_bytes, n_rows = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
        if offset != row_bytes:
            raise ValueError(f"columns take {offset} bytes per row but NAXIS1 is {row_bytes}")
        dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": row_bytes})
        rows = np.frombuffer(self.data, dtype=dtype, count=n_rows)
        columns = {}
        for i, name in enumerate(names, start=1):
            values = rows[name]
            scale, zero = header.get(f"TSCAL{i}"), header.get(f"TZERO{i}")
            if scale is not None or zero is not None:
                values = values * float(scale if scale is not None else 1.0) + float(zero or 0.0)
            columns[name] = values
        return columns


@dataclass
class FitsFile:
    path: str
    hdus: list[Hdu]

    @property
    def primary(self) -> dict[str, object]:
        return self.hdus[0].header

    def by_name(self) -> dict[str, Hdu]:
        return {hdu.name: hdu for hdu in self.hdus[1:]}


# Largest file the readers accept, compressed or decompressed: LAMOST MRS files are 1-5 MB,
# so 64 MiB leaves room for any real layout while a gzip bomb (a few MB inflating to GBs)
# is stopped after 64 MiB of output. ``settings.SPECTRUM_FILE_MAX_BYTES`` overrides it.
MAX_FILE_BYTES = 64 * 2**20
# Output produced per inflate call: memory stays within max_bytes plus one step.
_INFLATE_STEP = 2**20


def decompress(path: str, data: bytes, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, gunzipped when they are gzip.

    Parameters
    ----------
    path : str
        Named in errors.
    data : bytes
        The file's content, plain FITS or gzip (one or several members).
    max_bytes : int
        Largest decompressed size accepted. Inflation is streamed in steps of 1 MiB and
        stops as soon as the output passes this size, so a gzip bomb costs at most
        ``max_bytes`` of memory.

    Raises
    ------
    CorruptFileError
        Corrupt or truncated gzip data, or content larger than ``max_bytes``.
    """
    if data[:2] != b"\x1f\x8b":
        if len(data) > max_bytes:
            raise CorruptFileError(path, f"{len(data)} bytes, more than the {max_bytes} a spectrum file may have")
        return data
    out, size, pending = [], 0, data
    try:
        while pending:
            inflater = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)  # one per gzip member
            while True:
                chunk = inflater.decompress(pending, _INFLATE_STEP)
                pending = inflater.unconsumed_tail
                size += len(chunk)
                if size > max_bytes:
                    raise CorruptFileError(
                        path, f"gzip data inflate to more than {max_bytes} bytes (a spectrum file is a few MB); "
                        "not decompressed further"
                    )
                out.append(chunk)
                if inflater.eof or (not chunk and not pending):
                    break
            if not inflater.eof:
                raise CorruptFileError(path, "truncated gzip stream (the file ends before the compressed data does)")
            pending = inflater.unused_data
            if not pending.strip(b"\x00"):
                break  # zero padding after the last member
    except isal_zlib.error as error:
        raise CorruptFileError(path, f"corrupt gzip data ({error})") from error
    return b"".join(out)


def open_fits_bytes(path: str, data: bytes, *, max_bytes: int = MAX_FILE_BYTES) -> FitsFile:
    """Split a (possibly gzipped) FITS file into header + data units (``decompress`` caps its size)."""
    raw = decompress(path, data, max_bytes=max_bytes)
    if not raw.startswith(b"SIMPLE  ="):
        raise NotFitsError(path, "not a FITS file (it does not start with a SIMPLE card)")
    view = memoryview(raw)
    hdus, position = [], 0
    while position < len(raw):
        if not raw[position:position + CARD].strip(b" \x00"):
            break  # trailing padding after the last HDU
        end = _find_end(raw, position)
        if end is None:
            raise CorruptFileError(path, f"header at byte {position} has no END card (file cut short?)")
        header_bytes = ((end + CARD - position + BLOCK - 1) // BLOCK) * BLOCK
        header = parse_header(raw[position:end])
        data_start = position + header_bytes
        data_size = _data_size(path, header)
        if data_start + data_size > len(raw):
            raise CorruptFileError(
                path, f"HDU {len(hdus)} ({header.get('EXTNAME', 'primary')}) needs {data_size} data bytes, "
                f"the file has {max(0, len(raw) - data_start)}"
            )
        hdus.append(Hdu(header=header, data=view[data_start:data_start + data_size]))
        position = data_start + ((data_size + BLOCK - 1) // BLOCK) * BLOCK
    return FitsFile(path=path, hdus=hdus)


def _find_end(raw: bytes, start: int) -> int | None:
    position = start
    while position + BLOCK <= len(raw):
        block = raw[position:position + BLOCK]
        index = block.find(_END_CARD)
        while index != -1 and index % CARD:
            index = block.find(_END_CARD, index + 1)
        if index != -1:
            return position + index
        position += BLOCK
    return None


def _data_size(path: str, header: dict) -> int:
    try:
        naxis = int(header.get("NAXIS", 0))
        if naxis == 0:
            return 0
        size = abs(int(header.get("BITPIX", 8))) // 8
        for axis in range(1, naxis + 1):
            size *= int(header.get(f"NAXIS{axis}", 0))
        return size + int(header.get("PCOUNT", 0) or 0)
    except (TypeError, ValueError) as error:
        raise CorruptFileError(path, f"malformed NAXIS/BITPIX/PCOUNT cards ({error})") from error
