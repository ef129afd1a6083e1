"""The rest-frame pixel grids the network sees (SPCANet paper, section 2.1.2).

Blue 4950.0-5349.9 A and red 6350.0-6749.9 A in 0.1 A steps, 4000 pixels each, in vacuum
wavelengths like the LAMOST MRS files themselves (header VACUUM = T).
"""

import numpy as np

PIXELS_PER_ARM = 4000
STEP = 0.1
ARMS = ("blue", "red")
GRID_START = {"blue": 4950.0, "red": 6350.0}
GRIDS: dict[str, np.ndarray] = {
    arm: np.round(start + STEP * np.arange(PIXELS_PER_ARM, dtype=np.float64), 1) for arm, start in GRID_START.items()
}
WINDOWS: dict[str, tuple[float, float]] = {arm: (float(grid[0]), float(grid[-1])) for arm, grid in GRIDS.items()}


def covered_fraction(wavelength: np.ndarray, arm: str) -> float:
    """Fraction of the arm's grid window inside [min, max] of ``wavelength``.

    Parameters
    ----------
    wavelength : ndarray, shape (L,), float64
        Wavelengths, Angstrom, in the grids' frame (vacuum); NaN is ignored.
    arm : {"blue", "red"}
        The arm whose window (``WINDOWS``) is measured.

    Returns
    -------
    float
        0-1; 0 for no wavelengths.

    Raises
    ------
    KeyError
        If ``arm`` is not "blue" or "red".
    """
    low, high = WINDOWS[arm]
    if wavelength.size == 0:
        return 0.0
    covered = min(high, float(np.nanmax(wavelength))) - max(low, float(np.nanmin(wavelength)))
    return max(0.0, covered) / (high - low)
