"""Write LAMOST MRS files in the DR7 (per-pixel rows) or DR9 v1 (one row of arrays) layout.

Used by the mock survey and by tests (for example a DR9 v1 file made from DR7 data).
Red single exposures are written in decreasing wavelength, as the survey's files are.
The FITS bytes are built directly (header cards, then each table's rows as one big-endian
numpy block): going through astropy's table machinery made writing a mock survey several
times slower than generating it. The tests read every layout back with astropy.
"""

import gzip
from pathlib import Path

import numpy as np

from .types import Arm, SpectrumFile

BLOCK = 2880


def _card(keyword: str, value) -> bytes:
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        text = f"{int(value):>20}"
    elif isinstance(value, (float, np.floating)):
        number = repr(float(value)).upper()
        if "." not in number and "E" not in number:
            number += ".0"
        text = f"{number:>20}"
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'"
    card = f"{keyword:<8}= {text}"
    if len(card) > 80:
        raise ValueError(f"FITS card too long: {card!r}")
    return card.ljust(80).encode("ascii")


def _header(cards: list[tuple[str, object]]) -> bytes:
    raw = b"".join(_card(k, v) for k, v in cards) + b"END".ljust(80)
    return raw + b" " * (-len(raw) % BLOCK)


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % BLOCK)


_FORMS = {">f4": "E", ">f8": "D", ">i2": "I", ">i4": "J"}


def _table(name: str, columns: list[tuple[str, np.ndarray]], rows: int, extra: dict) -> bytes:
    """A binary table HDU. Each column is (name, array): 1-D for one value per row, or
    (rows, n) for a cell of n values per row."""
    dtype = np.dtype([(column, array.dtype.str, array.shape[1:]) for column, array in columns])
    records = np.empty(rows, dtype=dtype)
    cards: list[tuple[str, object]] = [
        ("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2), ("NAXIS1", dtype.itemsize), ("NAXIS2", rows),
        ("PCOUNT", 0), ("GCOUNT", 1), ("TFIELDS", len(columns)),
    ]
    for i, (column, array) in enumerate(columns, start=1):
        records[column] = array
        repeat = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
        cards += [(f"TTYPE{i}", column), (f"TFORM{i}", f"{repeat if repeat > 1 else ''}{_FORMS[array.dtype.str]}")]
    cards.append(("EXTNAME", name))
    cards += list(extra.items())
    return _header(cards) + _padded(records.tobytes())


def _arm_table(
    arm: Arm, name: str, layout: str, mask_column: str, extra: dict, reverse: bool, andmask: np.ndarray | None = None
) -> bytes:
    order = slice(None, None, -1) if reverse else slice(None)
    flux, ivar = arm.flux[order].astype(">f4"), arm.ivar[order].astype(">f4")
    mask = arm.mask[order].astype(">i2")
    extra = dict(extra)
    if arm.header_snr is not None:
        extra["SNR"] = round(float(arm.header_snr), 2)
    if layout == "dr9v1":
        columns = [("FLUX", flux[None, :]), ("IVAR", ivar[None, :]),
                   ("WAVELENGTH", arm.wavelength[order].astype(">f8")[None, :]), (mask_column, mask[None, :])]
        return _table(name, columns, 1, extra)
    columns = [("FLUX", flux), ("IVAR", ivar), ("LOGLAM", np.log10(arm.wavelength[order]).astype(">f4"))]
    if mask_column == "ORMASK":
        columns.append(("ANDMASK", np.zeros_like(mask) if andmask is None else andmask[order].astype(">i2")))
    columns.append((mask_column, mask))
    return _table(name, columns, flux.size, extra)


def write_lamost_mrs(
    spectrum_file: SpectrumFile, path: str | Path, *, layout: str = "dr7", compresslevel: int = 6,
    coadd_andmask: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``spectrum_file`` to ``path`` (gzipped when the name ends in .gz).

    ``coadd_andmask`` gives the coadd's ANDMASK per arm ("blue", "red"; int16, one value
    per pixel) for the DR7 layout; without it ANDMASK is written as zeros. (The DR9 v1
    layout has no ANDMASK column.)
    """
    coadd_andmask = coadd_andmask or {}
    if layout not in ("dr7", "dr9v1"):
        raise ValueError(f"unknown layout {layout!r}")
    sf = spectrum_file
    exposures = [s for s in sf.spectra if s.kind == "exposure"]
    primary = [
        ("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True), ("EXTNAME", "Information"),
        ("TELESCOP", "LAMOST"), ("OBSID", sf.obsid or 0), ("DESIG", sf.designation), ("RA", float(sf.ra)),
        ("DEC", float(sf.dec)), ("OBJNAME", sf.objname), ("PLANID", sf.plan_id), ("LMJD", sf.lmjd), ("MJD", sf.mjd),
        ("SPID", sf.spectrograph), ("FIBERID", sf.fiber), ("DATA_V", sf.data_release or "LAMOST DR7"),
        ("VACUUM", bool(sf.vacuum)),
        ("NEXP_B", sum(1 for s in exposures if s.blue is not None)),
        ("NEXP_R", sum(1 for s in exposures if s.red is not None)),
        *sf.header.items(),
    ]
    parts = [_header(primary)]
    for spectrum in sf.spectra:
        if spectrum.kind == "coadd":
            lmjms = "-".join(str(s.lmjm) for s in exposures)[:68]
            for arm, name, arm_name in ((spectrum.blue, "COADD_B", "blue"), (spectrum.red, "COADD_R", "red")):
                if arm is not None:
                    parts.append(_arm_table(arm, name, layout, "ORMASK", {"LMJMLIS0": lmjms}, reverse=False,
                                            andmask=coadd_andmask.get(arm_name)))
    for spectrum in exposures:
        extra = {"LMJM": str(spectrum.lmjm), "EXPTIME": float(spectrum.exptime or 0.0)}
        if spectrum.blue is not None:
            parts.append(_arm_table(spectrum.blue, f"B-{spectrum.lmjm}", layout, "PIXMASK", extra, reverse=False))
        if spectrum.red is not None:
            parts.append(_arm_table(spectrum.red, f"R-{spectrum.lmjm}", layout, "PIXMASK", extra, reverse=layout == "dr7"))
    data = b"".join(parts)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=compresslevel, mtime=0)  # mtime 0: same input, same bytes
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path
