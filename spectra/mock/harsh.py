"""A harsher instrument for the mock survey, as options (all off by default).

Real LAMOST MRS files show each of these defects at some rate (``benchmarks/mock_vs_real.py``
prints what the real files in ``../shared/data/lamost_mrs`` show); an independent emulated
survey that showed them at high rates took the project's labels from near the
information limit to 2-3 times above it. Each option is drawn from its own
random stream (``harsh_rng``), so a harsh survey has the same stars, labels, RVs and noise
draws as the plain survey of the same seed, and the plain survey's bytes do not change.

- ``response_order``: the instrument response per fibre and night gets Legendre terms of
  orders 5..N (amplitude ``response_amplitude`` each), structure a 4th-order continuum
  cannot follow.
- ``cosmic_rays``: extra cosmic-ray hits per arm and exposure, 80% flagged in PIXMASK;
  at 24 the exposures carry ~1.2% masked pixels (the independent survey: ~1.3%; the real
  files here: median 0.12% inside the grid windows, at most 0.8%).
- ``unflagged_cosmics``: extra hits per arm and exposure that no mask marks; a coadd of 3
  or more exposures rejects them (and flags them in ORMASK), a coadd of 2 cannot and they
  leak into it unflagged.
- ``coadd_mask_dilate``: ORMASK is the union of the exposures' masks, dilated by this many
  coadd pixels each side (the coadd's flux there is still good data).
- ``edge_junk``: extraction junk at both ends of each exposure's arms, up to this many
  native pixels wide (uniform), a multiplicative ramp of up to +-50% with spikes; only the
  outer ``edge_junk_flagged`` share of it carries a PIXMASK bit.
- ``sky_residuals``: sky-subtraction residuals at the bright night-sky lines (scale: 1 gives
  a strength-1 line a residual peak of N(0, 60 counts) per exposure), unflagged, in the
  exposures and hence in the coadds.
- ``andmask_zero_flux``: probability per coadd arm of a block of 5-9 pixels with FLUX 0
  and IVAR kept, as seen in real coadds: ORMASK set on 60% of such blocks, ANDMASK on half
  of those, no bit at all on the rest (two of the seven good real files here show such an
  unflagged block in COADD_B).
"""

from dataclasses import dataclass, fields

import numpy as np
from scipy.ndimage import maximum_filter1d

# Night-sky emission lines in the MRS windows (vacuum Angstrom, relative strength):
# [N I] 5199/5202, [O I] 6300/6364 and the brightest OH (6-1) and (7-2) lines
# (Osterbrock et al. 1996, PASP 108, 277, converted from air).
SKY_LINES = np.array([
    (5200.26, 0.15), (5202.64, 0.1), (6302.05, 1.0), (6365.54, 0.33), (6467.6, 0.25), (6500.5, 0.35),
    (6534.8, 0.3), (6555.4, 0.35), (6570.6, 0.3), (6579.0, 0.4), (6598.4, 0.45), (6606.1, 0.35),
    (6830.4, 0.5), (6835.9, 0.45), (6865.8, 0.6),
])
SKY_RESIDUAL_COUNTS = 60.0  # residual peak per unit strength and scale (counts, per exposure)
SKY_RESOLUTION = 7500.0


@dataclass(frozen=True)
class HarshOptions:
    response_order: int = 0
    response_amplitude: float = 0.015
    cosmic_rays: float = 0.0
    unflagged_cosmics: float = 0.0
    coadd_mask_dilate: int = 0
    edge_junk: int = 0
    edge_junk_flagged: float = 0.5
    sky_residuals: float = 0.0
    andmask_zero_flux: float = 0.0

    @classmethod
    def harsh(cls, **overrides) -> "HarshOptions":
        """Every defect on, at the rates of the independent emulated survey."""
        values = {"response_order": 12, "cosmic_rays": 24.0, "unflagged_cosmics": 3.0, "coadd_mask_dilate": 2,
                  "edge_junk": 600, "sky_residuals": 1.0, "andmask_zero_flux": 0.5}
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return self != HarshOptions()

    def changed(self) -> dict:
        """The options that differ from the default (for the manifest)."""
        default = HarshOptions()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}


def response_structure(rng: np.random.Generator, size: int, n: int, order: int, amplitude: float) -> np.ndarray:
    """Instrument-response structure a 4th-order continuum cannot follow.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    size : int
        Pixels per row.
    n : int
        Rows.
    order : int
        Highest Legendre order; 4 or less gives no structure.
    amplitude : float
        Standard deviation of each coefficient (a fraction of the flux).

    Returns
    -------
    ndarray, shape (n, size), float64
        Factor ``1 + sum_{k=5..order} a_k P_k(x)``, ``a_k ~ N(0, amplitude)``, x in [-1, 1].
    """
    if order <= 4:
        return np.ones((n, size))
    x = np.linspace(-1.0, 1.0, size)
    basis = np.polynomial.legendre.legvander(x, order)[:, 5:]  # (size, order - 4)
    coefficients = rng.normal(0.0, amplitude, (n, order - 4))
    return 1.0 + coefficients @ basis.T


def add_cosmic_rays(
    rng: np.random.Generator, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray, rate: float, flagged: float
) -> tuple[np.ndarray, np.ndarray]:
    """Add Poisson(rate) cosmic-ray hits per row (two pixels each, 5-60 sigma) in place.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    flux : ndarray, shape (n, size), float
        Counts; changed in place.
    sigma : ndarray, shape (n, size), float
        Noise per pixel, counts; sets the hits' amplitude.
    mask : ndarray, shape (n, size), int
        Mask bits; changed in place.
    rate : float
        Mean hits per row.
    flagged : float
        Share of hits whose two pixels get mask bit 1, 0-1.

    Returns
    -------
    rows : ndarray, shape (k,), int64
        Rows of the unflagged hits.
    columns : ndarray, shape (k,), int64
        First columns of the unflagged hits (each hit covers two pixels).
    """
    n, size = flux.shape
    hits = rng.poisson(rate, n)
    rows = np.repeat(np.arange(n), hits)
    columns = rng.integers(2, size - 2, rows.size)
    amplitude = rng.uniform(5.0, 60.0, rows.size) * sigma[rows, columns]
    flux[rows, columns] += amplitude
    flux[rows, columns + 1] += 0.4 * amplitude
    found = rng.random(rows.size) < flagged
    mask[rows[found], columns[found]] |= 1
    mask[rows[found], columns[found] + 1] |= 1
    return rows[~found], columns[~found]


def add_edge_junk(
    rng: np.random.Generator, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray, width: int, flagged_share: float
) -> None:
    """Extraction junk at both ends of each row, flagged (bit 4) only in its outer part; in place.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    flux : ndarray, shape (n, size), float
        Counts; changed in place (a ramp of up to +-50% with spikes).
    sigma : ndarray, shape (n, size), float
        Noise per pixel, counts; sets the spikes' size.
    mask : ndarray, shape (n, size), int
        Mask bits; bit 4 set in place on the flagged part.
    width : int
        Largest junk width per end, native pixels (each row draws 0..width).
    flagged_share : float
        Outer share of the junk that is flagged, 0-1.
    """
    n, size = flux.shape
    for end in (0, 1):
        widths = rng.integers(0, width + 1, n)
        tilt = rng.uniform(-0.5, 0.5, n)
        spikes = rng.random((n, min(width, size))) < 0.02
        spike_size = rng.normal(0.0, 8.0, (n, min(width, size)))
        depth = np.arange(min(width, size))[None, :]  # pixels from the edge
        inside = depth < widths[:, None]
        ramp = np.where(inside, 1.0 - depth / np.maximum(widths[:, None], 1), 0.0)
        columns = depth[0] if end == 0 else size - 1 - depth[0]
        block = flux[:, columns]
        block = block * (1.0 + tilt[:, None] * ramp) + np.where(inside & spikes, spike_size, 0.0) * sigma[:, columns]
        flux[:, columns] = block
        flag = depth < np.floor(flagged_share * widths[:, None])
        mask[:, columns] |= np.where(flag, 4, 0).astype(mask.dtype)


def sky_residual_counts(rng: np.random.Generator, wavelength: np.ndarray, n: int, scale: float) -> np.ndarray:
    """Residual counts of imperfect sky subtraction at the SKY_LINES.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    wavelength : ndarray, shape (size,), float64
        Vacuum wavelengths, Angstrom, increasing.
    n : int
        Rows.
    scale : float
        1 gives a strength-1 line a residual peak of N(0, ``SKY_RESIDUAL_COUNTS``) counts.

    Returns
    -------
    ndarray, shape (n, size), float64
        Counts to add; Gaussian lines at R = ``SKY_RESOLUTION``.

    Notes
    -----
    Line list: Osterbrock et al. (1996, PASP 108, 277), converted from air.
    """
    residual = np.zeros((n, wavelength.size))
    for centre, strength in SKY_LINES:
        if not wavelength[0] - 5 < centre < wavelength[-1] + 5:
            continue
        width = centre / SKY_RESOLUTION / 2.3548
        near = np.abs(wavelength - centre) < 5 * width
        profile = np.exp(-0.5 * ((wavelength[near] - centre) / width) ** 2)
        residual[:, near] += rng.normal(0.0, scale * strength * SKY_RESIDUAL_COUNTS, (n, 1)) * profile[None, :]
    return residual


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Each row's nonzero pixels spread ``pixels`` pixels to either side.

    Bitwise OR is approximated by the maximum, enough for the single bits the mock uses.

    Parameters
    ----------
    mask : ndarray, shape (n, size), int
        Mask values.
    pixels : int
        Pixels of spread each side; 0 or less returns ``mask`` itself.

    Returns
    -------
    ndarray, shape (n, size)
        The dilated mask, dtype of ``mask``.
    """
    if pixels <= 0:
        return mask
    return maximum_filter1d(mask, size=2 * pixels + 1, axis=1, mode="constant")


def zero_flux_blocks(
    rng: np.random.Generator, flux: np.ndarray, ormask: np.ndarray, wavelength: np.ndarray, window: tuple[float, float],
    probability: float,
) -> np.ndarray:
    """Blocks of 5-9 pixels with FLUX 0 (IVAR kept) in a share of the rows, inside ``window``; in place.

    ORMASK bit 1 is set on 60% of the blocks, the ANDMASK on half of those.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    flux : ndarray, shape (n, size), float
        Coadd flux; blocks set to 0 in place.
    ormask : ndarray, shape (n, size), int
        ORMASK; bit 1 set in place.
    wavelength : ndarray, shape (size,), float64
        Wavelengths, Angstrom.
    window : tuple of (float, float)
        Wavelength range, Angstrom, the blocks start in (less 10 Angstrom at the red end).
    probability : float
        Chance per row of one block, 0-1.

    Returns
    -------
    ndarray, shape (n, size), int16
        The ANDMASK (1 on the AND-flagged blocks).
    """
    n, size = flux.shape
    andmask = np.zeros(flux.shape, dtype=np.int16)
    inside = np.flatnonzero((wavelength > window[0]) & (wavelength < window[1] - 10))
    hit = rng.random(n) < probability
    starts = rng.integers(inside[0], inside[-1], n)
    lengths = rng.integers(5, 10, n)
    flagged = rng.random(n) < 0.6
    and_flagged = flagged & (rng.random(n) < 0.5)
    for row in np.flatnonzero(hit):  # at most one short block per row
        block = slice(starts[row], starts[row] + lengths[row])
        flux[row, block] = 0.0
        if flagged[row]:
            ormask[row, block] |= 1
        if and_flagged[row]:
            andmask[row, block] = 1
    return andmask
