"""LAMOST-II MRS files: the DR7 to DR9 v0 layout, and the DR9 v1+ layout.

DR7-DR9 v0: one binary-table row per pixel with FLUX, IVAR, LOGLAM (log10 Angstrom) and
the mask columns. DR9 v1+: a single row per table whose cells are arrays, with
WAVELENGTH (Angstrom, linear) instead of LOGLAM. Both have HDU 0 'Information' (a
header only), COADD_B / COADD_R (mask column ORMASK) and one B-<LMJM> / R-<LMJM> table
per exposure (mask column PIXMASK). Red exposure tables are stored in decreasing
wavelength; every arm is returned in increasing order. Facts: ../shared/data/README.md.
"""

import re

import numpy as np

from ..processing.grids import covered_fraction
from .errors import EmptyFileError, HeaderError, TruncatedFileError
from .fitsbytes import FitsFile, Hdu
from .registry import register_reader
from .types import Arm, ArmProblem, RawSpectrum, SpectrumFile

_EXPOSURE = re.compile(r"^([BR])-(\d+)$")
# An arm covering less of its grid window than this is recorded as WAVELENGTH_RANGE.
MIN_WINDOW_COVERAGE = 0.95


def _spectrum_tables(fits_file: FitsFile) -> dict[str, Hdu]:
    return {
        hdu.name: hdu
        for hdu in fits_file.hdus[1:]
        if hdu.is_table and (hdu.name in ("COADD_B", "COADD_R") or _EXPOSURE.match(hdu.name))
    }


def _is_lamost_mrs(fits_file: FitsFile) -> bool:
    primary = fits_file.primary
    # A file cut short after its primary HDU still declares its exposures: it is an MRS
    # file, and _load reports it as truncated.
    return "LAMOST" in str(primary.get("TELESCOP", "")) + str(primary.get("DATA_V", "")) and (
        bool(_spectrum_tables(fits_file)) or "NEXP_B" in primary or "NEXP_R" in primary
    )


def _declared_counts_check(path: str, fits_file: FitsFile, tables: dict[str, Hdu]) -> None:
    """Raise TruncatedFileError when the file holds fewer HDUs or exposures than its header declares.

    The primary header declares NEXP_B and NEXP_R, the number of blue and red exposure
    tables (../shared/data/README.md), and may declare NEXTEND. A copy cut exactly at an
    HDU boundary is well-formed FITS: only these counts show that its tail is gone.
    """
    primary = fits_file.primary
    nextend = primary.get("NEXTEND")
    if isinstance(nextend, int) and len(fits_file.hdus) - 1 < nextend:
        raise TruncatedFileError(
            path, f"the header declares {nextend} extensions (NEXTEND) but the file holds {len(fits_file.hdus) - 1}"
        )
    for arm, key in (("B", "NEXP_B"), ("R", "NEXP_R")):
        declared = primary.get(key)
        if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
            found = sum(1 for name in tables if name.startswith(f"{arm}-"))
            if found < declared:
                raise TruncatedFileError(
                    path, f"the header declares {declared} {arm} exposure tables ({key}) but the file holds {found} "
                    f"({len(fits_file.hdus)} HDUs): a copy cut short"
                )


def _first_columns(fits_file: FitsFile) -> set[str]:
    for hdu in _spectrum_tables(fits_file).values():
        try:
            return set(hdu.columns)
        except ValueError:
            continue
    return set()


def identify_dr7(path: str, fits_file: FitsFile) -> bool:
    return _is_lamost_mrs(fits_file) and "WAVELENGTH" not in _first_columns(fits_file)


def identify_dr9v1(path: str, fits_file: FitsFile) -> bool:
    return _is_lamost_mrs(fits_file) and "WAVELENGTH" in _first_columns(fits_file)


def _read_arm(hdu: Hdu | None, arm: str, mask_column: str, layout: str) -> tuple[Arm | None, list[ArmProblem]]:
    if hdu is None:
        return None, [ArmProblem.MISSING]
    try:
        columns = hdu.columns
    except ValueError:
        return None, [ArmProblem.BAD_COLUMNS]
    wave_column = "WAVELENGTH" if layout == "dr9v1" else "LOGLAM"
    if not {"FLUX", "IVAR", wave_column} <= set(columns):
        return None, [ArmProblem.BAD_COLUMNS]
    if columns["FLUX"].shape[0] == 0:
        return None, [ArmProblem.EMPTY]
    if layout == "dr9v1":  # one row whose cells are the arrays
        flux, ivar, wave = (np.asarray(columns[c][0]).ravel() for c in ("FLUX", "IVAR", "WAVELENGTH"))
        wavelength = wave.astype(np.float64)
        mask = np.asarray(columns[mask_column][0]).ravel() if mask_column in columns else np.zeros(flux.shape, np.int32)
    else:
        flux, ivar = columns["FLUX"], columns["IVAR"]
        wavelength = np.power(10.0, columns["LOGLAM"].astype(np.float64))
        mask = columns[mask_column] if mask_column in columns else np.zeros(flux.shape, np.int32)
    if not (flux.shape == ivar.shape == wavelength.shape == mask.shape) or flux.size == 0:
        return None, [ArmProblem.BAD_COLUMNS if flux.size else ArmProblem.EMPTY]
    flux = flux.astype(np.float32)
    ivar = ivar.astype(np.float32)
    mask = mask.astype(np.int32)
    problems = []
    if not np.all(np.isfinite(wavelength)):
        keep = np.isfinite(wavelength)
        wavelength, flux, ivar, mask = wavelength[keep], flux[keep], ivar[keep], mask[keep]
        problems.append(ArmProblem.NONFINITE)
    if wavelength.size > 1 and wavelength[0] > wavelength[-1]:
        wavelength, flux, ivar, mask = wavelength[::-1], flux[::-1], ivar[::-1], mask[::-1]
    if np.any(np.diff(wavelength) <= 0):
        order = np.argsort(wavelength, kind="stable")
        wavelength, flux, ivar, mask = wavelength[order], flux[order], ivar[order], mask[order]
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
    if bad.any():
        problems.append(ArmProblem.NONFINITE)
        flux = np.where(np.isfinite(flux), flux, np.float32(0.0))
        ivar = np.where(bad, np.float32(0.0), ivar)
    # No measured count is exactly 0: such pixels with their IVAR kept are junk. Real coadds
    # carry blocks of 5-9 of them, some without an ORMASK bit (docs/preprocessing.md);
    # read as data they are a line at flux 0 that the RV and the labels would see.
    # Recorded where no mask bit marked them already.
    zero = (flux == 0) & (ivar > 0)
    if zero.any():
        if np.any(zero & (mask == 0)):
            problems.append(ArmProblem.ZERO_FLUX)
        ivar = np.where(zero, np.float32(0.0), ivar)
    if covered_fraction(wavelength, arm) < MIN_WINDOW_COVERAGE:
        problems.append(ArmProblem.WAVELENGTH_RANGE)
    snr = hdu.header.get("SNR")
    return (
        Arm(
            wavelength=np.ascontiguousarray(wavelength),
            flux=np.ascontiguousarray(flux),
            ivar=np.ascontiguousarray(ivar),
            mask=np.ascontiguousarray(mask),
            header_snr=float(snr) if snr is not None else None,
        ),
        problems,
    )


def _required(header, key: str, path: str, convert):
    value = header.get(key)
    try:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("missing")
        return convert(value)
    except (TypeError, ValueError) as error:
        raise HeaderError(path, f"header key {key} is missing or malformed ({value!r})") from error


def _load(path: str, fits_file: FitsFile, layout: str, reader_name: str) -> SpectrumFile:
    tables = _spectrum_tables(fits_file)
    _declared_counts_check(path, fits_file, tables)
    if not tables:
        raise EmptyFileError(path, "no COADD_B/COADD_R or B-/R- exposure table in the file")
    header = fits_file.primary
    spectra: list[RawSpectrum] = []
    if "COADD_B" in tables or "COADD_R" in tables:
        blue, blue_problems = _read_arm(tables.get("COADD_B"), "blue", "ORMASK", layout)
        red, red_problems = _read_arm(tables.get("COADD_R"), "red", "ORMASK", layout)
        spectra.append(RawSpectrum("coadd", None, None, blue, red, {"blue": blue_problems, "red": red_problems}))
    exposures: dict[int, dict[str, Hdu]] = {}
    for name, hdu in tables.items():
        match = _EXPOSURE.match(name)
        if match:
            exposures.setdefault(int(match.group(2)), {})[match.group(1)] = hdu
    for lmjm in sorted(exposures):
        pair = exposures[lmjm]
        blue, blue_problems = _read_arm(pair.get("B"), "blue", "PIXMASK", layout)
        red, red_problems = _read_arm(pair.get("R"), "red", "PIXMASK", layout)
        exptime = next((hdu.header.get("EXPTIME") for hdu in pair.values() if hdu.header.get("EXPTIME") is not None), None)
        spectra.append(
            RawSpectrum(
                "exposure", lmjm, float(exptime) if exptime is not None else None, blue, red,
                {"blue": blue_problems, "red": red_problems},
            )
        )
    obsid = header.get("OBSID")
    return SpectrumFile(
        path=path,
        format=reader_name,
        layout_version=layout,
        data_release=str(header.get("DATA_V", "")).strip(),
        obsid=int(obsid) if obsid not in (None, "") else None,
        designation=_required(header, "DESIG", path, lambda v: str(v).strip()),
        ra=_required(header, "RA", path, float),
        dec=_required(header, "DEC", path, float),
        objname=str(header.get("OBJNAME", "")).strip(),
        plan_id=_required(header, "PLANID", path, lambda v: str(v).strip()),
        lmjd=(lmjd := _required(header, "LMJD", path, int)),
        mjd=int(header.get("MJD", lmjd - 1)),
        spectrograph=_required(header, "SPID", path, int),
        fiber=_required(header, "FIBERID", path, int),
        vacuum=bool(header.get("VACUUM", True)),
        spectra=spectra,
        header={key: header.get(key) for key in ("TSOURCE", "MAG1", "MAG2", "SEEING", "MOONPHA", "HELIO_RV") if key in header},
    )


def load_dr7(path: str, fits_file: FitsFile) -> SpectrumFile:
    return _load(path, fits_file, "dr7", "lamost-mrs-dr7")


def load_dr9v1(path: str, fits_file: FitsFile) -> SpectrumFile:
    return _load(path, fits_file, "dr9v1", "lamost-mrs-dr9v1")


register_reader("lamost-mrs-dr9v1", identify_dr9v1, load_dr9v1)
register_reader("lamost-mrs-dr7", identify_dr7, load_dr7)
