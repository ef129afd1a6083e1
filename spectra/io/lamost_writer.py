"""Write LAMOST MRS files in the DR7 (per-pixel rows) or DR9 v1 (one row of arrays) layout.

Used by the mock survey and by tests (for example a DR9 v1 file made from DR7 data).
Red single exposures are written in decreasing wavelength, as the survey's files are.
"""

import gzip
from pathlib import Path

import numpy as np
from astropy.io import fits

from .types import Arm, SpectrumFile

PRIMARY_KEYS = ("OBSID", "DESIG", "RA", "DEC", "OBJNAME", "PLANID", "LMJD", "MJD", "SPID", "FIBERID", "DATA_V", "VACUUM")


def _arm_table(arm: Arm, name: str, layout: str, mask_column: str, extra: dict, reverse: bool) -> fits.BinTableHDU:
    order = slice(None, None, -1) if reverse else slice(None)
    flux, ivar = arm.flux[order].astype(">f4"), arm.ivar[order].astype(">f4")
    mask = arm.mask[order].astype(">i2")
    if layout == "dr9v1":
        size = flux.size
        columns = [
            fits.Column("FLUX", f"{size}E", array=flux[None, :]),
            fits.Column("IVAR", f"{size}E", array=ivar[None, :]),
            fits.Column("WAVELENGTH", f"{size}D", array=arm.wavelength[order][None, :]),
            fits.Column(mask_column, f"{size}I", array=mask[None, :]),
        ]
    else:
        columns = [
            fits.Column("FLUX", "E", array=flux),
            fits.Column("IVAR", "E", array=ivar),
            fits.Column("LOGLAM", "E", array=np.log10(arm.wavelength[order]).astype(">f4")),
            fits.Column(mask_column, "I", array=mask),
        ]
        if mask_column == "ORMASK":
            columns.insert(3, fits.Column("ANDMASK", "I", array=np.zeros_like(mask)))
    hdu = fits.BinTableHDU.from_columns(columns, name=name)
    for key, value in extra.items():
        hdu.header[key] = value
    if arm.header_snr is not None:
        hdu.header["SNR"] = round(float(arm.header_snr), 2)
    return hdu


def write_lamost_mrs(spectrum_file: SpectrumFile, path: str | Path, *, layout: str = "dr7") -> Path:
    """Write ``spectrum_file`` to ``path`` (gzipped when the name ends in .gz)."""
    if layout not in ("dr7", "dr9v1"):
        raise ValueError(f"unknown layout {layout!r}")
    sf = spectrum_file
    primary = fits.PrimaryHDU()
    header = primary.header
    header["EXTNAME"] = "Information"
    header["TELESCOP"] = "LAMOST"
    values = {
        "OBSID": sf.obsid or 0, "DESIG": sf.designation, "RA": sf.ra, "DEC": sf.dec, "OBJNAME": sf.objname,
        "PLANID": sf.plan_id, "LMJD": sf.lmjd, "MJD": sf.mjd, "SPID": sf.spectrograph, "FIBERID": sf.fiber,
        "DATA_V": sf.data_release or "LAMOST DR7", "VACUUM": sf.vacuum,
    }
    for key in PRIMARY_KEYS:
        header[key] = values[key]
    for key, value in sf.header.items():
        header[key] = value
    exposures = [s for s in sf.spectra if s.kind == "exposure"]
    header["NEXP_B"] = sum(1 for s in exposures if s.blue is not None)
    header["NEXP_R"] = sum(1 for s in exposures if s.red is not None)
    hdus = [primary]
    for spectrum in sf.spectra:
        if spectrum.kind == "coadd":
            lmjms = "-".join(str(s.lmjm) for s in exposures)
            for arm, name in ((spectrum.blue, "COADD_B"), (spectrum.red, "COADD_R")):
                if arm is not None:
                    hdus.append(_arm_table(arm, name, layout, "ORMASK", {"LMJMLIS0": lmjms[:68]}, reverse=False))
    for spectrum in exposures:
        extra = {"LMJM": str(spectrum.lmjm), "EXPTIME": spectrum.exptime or 0}
        if spectrum.blue is not None:
            hdus.append(_arm_table(spectrum.blue, f"B-{spectrum.lmjm}", layout, "PIXMASK", extra, reverse=False))
        if spectrum.red is not None:
            hdus.append(_arm_table(spectrum.red, f"R-{spectrum.lmjm}", layout, "PIXMASK", extra, reverse=layout == "dr7"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdul = fits.HDUList(hdus)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=6) as handle:
            hdul.writeto(handle)
    else:
        hdul.writeto(path, overwrite=True)
    return path
