"""One normalised spectrum as a JSON document and as a FITS file (pure numpy/astropy).

The arrays are the ones stored in the array shards (spectra/array_store.py): per arm,
the rest-frame vacuum wavelength grid (spectra/processing/grids.py, 0.1 A steps, float64),
the continuum-normalised flux and its inverse variance (float32, exactly as stored), and
the mask, true where the inverse variance is 0 (or not finite): pixels that carry no
information (their stored flux is a placeholder, 1). No Django here.
"""

import io
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from .processing.grids import ARMS, GRIDS

WAVELENGTH_UNIT = "Angstrom"
FLUX_DESCRIPTION = "continuum-normalised flux (continuum = 1), dimensionless"
IVAR_DESCRIPTION = "inverse variance of the normalised flux (dimensionless); 0 where masked"
MASK_DESCRIPTION = "true where ivar is 0: the pixel carries no information (its flux is a placeholder)"


@dataclass(frozen=True)
class SpectrumArrays:
    """A spectrum's normalised arrays and where they came from.

    ``flux`` and ``ivar`` are (2, 4000) float32, arms in ``spectra.processing.grids.ARMS``
    order (blue, red); ``meta`` holds the provenance written beside them (spectrum id,
    medres_specid, designation, Gaia source id, preprocessing version, raw file path and
    sha256, RVs...), None where unknown.
    """

    flux: np.ndarray
    ivar: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        expected = (len(ARMS), GRIDS[ARMS[0]].size)
        if self.flux.shape != expected or self.ivar.shape != expected:
            raise ValueError(f"flux and ivar must be {expected}, got {self.flux.shape} and {self.ivar.shape}")

    @property
    def mask(self) -> np.ndarray:
        """(2, 4000) bool, true where the pixel is masked."""
        return ~(np.isfinite(self.ivar) & (self.ivar != 0))


def _json_floats(values: np.ndarray) -> list:
    """float32 values as the shortest decimals that read back to the same float32; null
    for NaN and infinities (JSON has none)."""
    text = values.astype(str)
    finite = np.isfinite(values)
    return [float(t) if ok else None for t, ok in zip(text.tolist(), finite.tolist(), strict=True)]


def spectrum_arrays_document(arrays: SpectrumArrays) -> dict:
    """The JSON document: the provenance, the units, then per arm wavelength, flux,
    ivar and mask (4000 values each)."""
    mask = arrays.mask
    return {
        **arrays.meta,
        "wavelength_unit": WAVELENGTH_UNIT,
        "wavelength_frame": "rest frame, vacuum",
        "flux_unit": FLUX_DESCRIPTION,
        "ivar_unit": IVAR_DESCRIPTION,
        "mask_meaning": MASK_DESCRIPTION,
        "arms": {
            arm: {
                "wavelength": GRIDS[arm].tolist(),
                "flux": _json_floats(arrays.flux[i]),
                "ivar": _json_floats(arrays.ivar[i]),
                "mask": mask[i].tolist(),
            }
            for i, arm in enumerate(ARMS)
        },
    }


# Provenance keywords of the primary header: (keyword, meta key, comment).
_HEADER_KEYWORDS = (
    ("SPEC_ID", "spectrum", "spectrum id in this catalog"),
    ("SPECID", "medres_specid", "LAMOST medres_specid"),
    ("DESIG", "designation", "LAMOST designation"),
    ("GAIA_ID", "gaia_source_id", "Gaia source_id"),
    ("RA", "ra", "[deg] right ascension (J2000)"),
    ("DEC", "dec", "[deg] declination (J2000)"),
    ("SNR_B", "snr_blue", "S/N of the blue arm"),
    ("SNR_R", "snr_red", "S/N of the red arm"),
    ("RV_B", "rv_blue", "[km/s] blue-arm RV removed (rest frame)"),
    ("RV_R", "rv_red", "[km/s] red-arm RV removed (rest frame)"),
    ("PREPVER", "preprocessing_version", "preprocessing version"),
    ("SRCPATH", "source_path", "raw LAMOST file"),
    ("SRCSHA", "source_sha256", "sha256 of the raw file"),
)


def _header_value(value):
    if isinstance(value, str):  # FITS headers are ASCII
        return value.encode("ascii", "backslashreplace").decode("ascii")
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def spectrum_arrays_fits(arrays: SpectrumArrays) -> bytes:
    """The FITS file: a primary header with the provenance, then one binary table per arm
    (EXTNAME BLUE, RED) with columns wavelength (D, Angstrom), flux (E), ivar (E) and
    mask (L); units in TUNITn, meanings in the TTYPEn comments."""
    primary = fits.PrimaryHDU()
    header = primary.header
    for keyword, key, comment in _HEADER_KEYWORDS:
        value = _header_value(arrays.meta.get(key))
        if value is None or value == "":
            continue
        if isinstance(value, str) and len(value) > 40:  # no room for a comment on the card
            header[keyword] = value
            header.add_comment(f"{keyword}: {comment}")
        else:
            header[keyword] = (value, comment)
    header["AIRORVAC"] = ("vac", "wavelengths in vacuum")
    header["SPECSYS"] = ("SOURCE", "wavelengths in the source rest frame")
    header["ORIGIN"] = ("SPCANet catalog", "normalised spectrum as the networks see it")
    hdus = [primary]
    mask = arrays.mask
    for i, arm in enumerate(ARMS):
        table = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="wavelength", format="D", unit=WAVELENGTH_UNIT, array=GRIDS[arm]),
                fits.Column(name="flux", format="E", array=arrays.flux[i]),
                fits.Column(name="ivar", format="E", array=arrays.ivar[i]),
                fits.Column(name="mask", format="L", array=mask[i]),
            ],
            name=arm.upper(),
        )
        table.header.comments["TTYPE1"] = "rest-frame vacuum wavelength"
        table.header.comments["TTYPE2"] = "normalised flux (continuum = 1), dimensionless"
        table.header.comments["TTYPE3"] = "inverse variance of flux; 0 where masked"
        table.header.comments["TTYPE4"] = "true where ivar is 0 (no information)"
        table.header["AIRORVAC"] = ("vac", "wavelengths in vacuum")
        table.header["SPECSYS"] = ("SOURCE", "wavelengths in the source rest frame")
        hdus.append(table)
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="exception")
    return buffer.getvalue()
