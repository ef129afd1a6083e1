"""What every reader returns, whatever the format."""

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class ArmProblem(StrEnum):
    """Why an arm of a spectrum is missing or damaged; recorded, never fatal to the file."""

    MISSING = "missing"  # no table for this arm
    EMPTY = "empty"  # the table has no rows
    BAD_COLUMNS = "bad_columns"  # required columns absent or of the wrong shape
    NONFINITE = "nonfinite"  # NaN/inf or negative flux or inverse variance (masked)
    ZERO_FLUX = "zero_flux"  # flux exactly 0 with a positive inverse variance and no mask bit (masked)
    WAVELENGTH_RANGE = "wavelength_range"  # does not cover the arm's MRS window


@dataclass
class Arm:
    """One arm of one spectrum on its native pixels, in increasing wavelength.

    ``wavelength`` is in Angstrom (vacuum for LAMOST MRS), float64; ``flux`` in the
    file's units, ``ivar`` its inverse variance (0 where unusable) and ``mask`` the
    pipeline's mask bits (ORMASK for coadds, PIXMASK for exposures), all per pixel.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    header_snr: float | None = None

    @property
    def usable(self) -> np.ndarray:
        """Pixels with a finite positive inverse variance, finite flux and no mask bit."""
        return (self.ivar > 0) & (self.mask == 0) & np.isfinite(self.flux)


@dataclass
class RawSpectrum:
    """One two-arm spectrum of a file: the nightly coadd or one exposure."""

    kind: str  # "coadd" or "exposure"
    lmjm: int | None
    exptime: float | None
    blue: Arm | None
    red: Arm | None
    problems: dict[str, list[ArmProblem]] = field(default_factory=lambda: {"blue": [], "red": []})

    def arm(self, name: str) -> Arm | None:
        return self.blue if name == "blue" else self.red


@dataclass
class SpectrumFile:
    """A file and the spectra in it, with the header facts the catalog keeps."""

    path: str
    format: str  # the reader's name, e.g. "lamost-mrs-dr7"
    layout_version: str  # e.g. "dr7" or "dr9v1"
    data_release: str  # DATA_V
    obsid: int | None
    designation: str
    ra: float
    dec: float
    objname: str
    plan_id: str
    lmjd: int
    mjd: int  # MJD of the night (LAMOST's LMJD is MJD + 1): its date names the night
    spectrograph: int
    fiber: int
    vacuum: bool
    spectra: list[RawSpectrum]
    header: dict[str, object] = field(default_factory=dict)
