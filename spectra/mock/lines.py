"""Element responses: how each of the 12 non-iron abundances changes a spectrum.

The Cannon model (``processing.spectrum_model``) gives a star's normalised spectrum as a
function of Teff, log g and [Fe/H] at solar-scaled composition. Each other element X
modifies it only at its own lines in the two MRS windows:

    flux = model_flux * exp(-sum_lines tau_line(Teff, log g) * (10**[X/Fe] - 1) * profile)

tau_line is the line's central optical depth at solar [X/Fe] in a 4800 K giant, scaled
with temperature by the line's kind (neutral atoms weaken fast in hotter stars, ions
slowly, molecules vanish above ~5000 K and favour giants); profile is a Gaussian of the
model's own width (R 30,000) before the whole spectrum is broadened to R 7,500. A
negative [X/Fe] weakens the line the model already has; the result is clipped to 1.
This is linear curve-of-growth scaling, good to a few tenths of a dex, which is all a
mock needs: each abundance moves its own lines and nothing else.

Line data: approximate air wavelengths of well-known lines in 4950-5350 and 6350-6750 A
(Moore's solar multiplet tables, as quoted in standard abundance studies). Elements with
few or weak lines are hard on purpose, as in real MRS spectra: S (two weak high-excitation
lines), O (the weak forbidden line at 6363.8 A), Cu (four lines), N (weak CN lines only).
CN is represented by a fixed forest of weak lines at positions drawn once with a fixed
seed across the red window: real CN lines are there, but no line list was available.
"""

import numpy as np

NEUTRAL, ION, MOLECULE, HIGH_EXCITATION = "neutral", "ion", "molecule", "high_excitation"

# element -> list of (air wavelength A, central optical depth at solar [X/Fe], kind)
LINES: dict[str, list[tuple[float, float, str]]] = {
    "C": [(5052.17, 0.10, HIGH_EXCITATION), (6587.61, 0.08, HIGH_EXCITATION)]
    + [(5165.2 - 0.9 * i, 0.12 * np.exp(-i / 25.0), MOLECULE) for i in range(60)],  # C2 Swan (0,0) band, bandhead 5165 A
    "N": [],  # CN forest, filled below
    "O": [(6363.78, 0.05, NEUTRAL)],
    "Mg": [(5167.32, 2.5, NEUTRAL), (5172.68, 3.5, NEUTRAL), (5183.60, 4.0, NEUTRAL)],
    "Al": [(6696.02, 0.45, NEUTRAL), (6698.67, 0.30, NEUTRAL)],
    "Si": [(6371.37, 0.20, ION), (6414.98, 0.15, HIGH_EXCITATION), (6527.20, 0.12, HIGH_EXCITATION), (6721.85, 0.20, HIGH_EXCITATION)],
    "S": [(6743.54, 0.03, HIGH_EXCITATION), (6748.84, 0.04, HIGH_EXCITATION)],
    "Ca": [(5041.62, 0.3, NEUTRAL), (5260.39, 0.2, NEUTRAL), (5261.71, 0.5, NEUTRAL), (5265.56, 0.6, NEUTRAL),
           (5349.47, 0.6, NEUTRAL), (6439.08, 1.2, NEUTRAL), (6449.81, 0.7, NEUTRAL), (6455.60, 0.4, NEUTRAL),
           (6462.57, 1.2, NEUTRAL), (6471.66, 0.6, NEUTRAL), (6493.78, 1.0, NEUTRAL), (6499.65, 0.7, NEUTRAL),
           (6717.68, 0.8, NEUTRAL)],
    "Ti": [(4981.73, 0.9, NEUTRAL), (4991.07, 0.8, NEUTRAL), (4999.50, 0.8, NEUTRAL), (5007.21, 0.7, NEUTRAL),
           (5014.28, 0.6, NEUTRAL), (5016.16, 0.4, NEUTRAL), (5020.03, 0.5, NEUTRAL), (5022.87, 0.5, NEUTRAL),
           (5024.84, 0.4, NEUTRAL), (5036.46, 0.4, NEUTRAL), (5038.40, 0.4, NEUTRAL), (5039.96, 0.5, NEUTRAL),
           (5064.65, 0.5, NEUTRAL), (5113.44, 0.3, NEUTRAL), (5145.46, 0.3, NEUTRAL), (5147.48, 0.4, NEUTRAL),
           (5152.18, 0.4, NEUTRAL), (5173.74, 0.5, NEUTRAL), (5192.97, 0.6, NEUTRAL), (5210.39, 0.6, NEUTRAL),
           (6554.22, 0.3, NEUTRAL), (6556.06, 0.3, NEUTRAL), (6599.11, 0.15, NEUTRAL), (6743.12, 0.15, NEUTRAL),
           (5129.16, 0.3, ION), (5154.07, 0.4, ION), (5185.90, 0.4, ION), (5188.69, 0.5, ION), (5226.54, 0.5, ION),
           (5336.79, 0.5, ION)],
    "Cr": [(5204.51, 0.9, NEUTRAL), (5206.04, 1.1, NEUTRAL), (5208.42, 1.3, NEUTRAL), (5247.57, 0.5, NEUTRAL),
           (5264.15, 0.4, NEUTRAL), (5296.69, 0.6, NEUTRAL), (5298.28, 0.6, NEUTRAL), (5300.74, 0.4, NEUTRAL),
           (5345.80, 0.6, NEUTRAL), (5348.31, 0.5, NEUTRAL), (6630.01, 0.15, NEUTRAL), (6661.08, 0.10, NEUTRAL)],
    "Ni": [(5035.36, 0.4, NEUTRAL), (5080.53, 0.5, NEUTRAL), (5081.11, 0.4, NEUTRAL), (5084.09, 0.4, NEUTRAL),
           (5099.93, 0.4, NEUTRAL), (5115.39, 0.4, NEUTRAL), (5137.07, 0.5, NEUTRAL), (5155.76, 0.3, NEUTRAL),
           (6384.66, 0.2, NEUTRAL), (6414.58, 0.15, NEUTRAL), (6482.80, 0.3, NEUTRAL), (6586.31, 0.3, NEUTRAL),
           (6643.63, 0.4, NEUTRAL)],
    "Cu": [(5105.54, 0.25, NEUTRAL), (5153.24, 0.10, NEUTRAL), (5218.20, 0.12, NEUTRAL), (5220.07, 0.06, NEUTRAL)],
}
_cn = np.random.default_rng(20_200_323)
LINES["N"] = [(float(w), float(d), MOLECULE) for w, d in zip(np.sort(_cn.uniform(6355.0, 6745.0, 120)), _cn.uniform(0.02, 0.07, 120), strict=True)]

MODEL_SIGMA_A = 5200.0 / 30_000.0 / 2.3548  # Gaussian sigma of the model's own line width


def kind_strength(kind: str, teff: np.ndarray, logg: np.ndarray) -> np.ndarray:
    """Relative central depth of a line of this kind at (Teff, log g); 1 for a 4800 K giant.

    Parameters
    ----------
    kind : str
        ``NEUTRAL``, ``ION``, ``HIGH_EXCITATION`` or ``MOLECULE`` (any other value counts
        as a molecule).
    teff : ndarray, shape (n,), float64
        Effective temperature, K.
    logg : ndarray, shape (n,), float64
        Surface gravity, dex.

    Returns
    -------
    ndarray, shape (n,), float64
        Factor on the line's solar central optical depth.
    """
    t = teff / 4800.0
    if kind == NEUTRAL:
        return np.clip(t, 0.5, 2.0) ** -6.0
    if kind == ION:  # ionised lines are stronger at low surface gravity
        return np.clip(t, 0.5, 2.0) ** -1.0 * np.exp(-0.25 * (logg - 2.5))
    if kind == HIGH_EXCITATION:
        return np.clip(t, 0.5, 2.0) ** 2.0
    return np.exp(-np.clip(teff - 4200.0, 0.0, None) / 450.0) * np.exp(-0.35 * np.clip(logg - 2.0, 0.0, None))


def line_profiles(wavelength_air: np.ndarray) -> tuple[list[tuple[str, str]], np.ndarray]:
    """For each (element, kind): the summed Gaussian profiles times tau on the grid.

    Parameters
    ----------
    wavelength_air : ndarray, shape (P,), float64
        Air wavelengths, Angstrom, increasing (the model's grid).

    Returns
    -------
    keys : list of (str, str)
        (element, kind) of each row, for the lines within the grid (+-1 Angstrom).
    profiles : ndarray, shape (terms, P), float64
        Summed profiles times central optical depth at solar [X/Fe].
    """
    keys, rows = [], []
    low, high = wavelength_air[0] - 1.0, wavelength_air[-1] + 1.0
    for element, lines in LINES.items():
        for kind in (NEUTRAL, ION, MOLECULE, HIGH_EXCITATION):
            selected = [(w, d) for w, d, k in lines if k == kind and low <= w <= high]
            if not selected:
                continue
            row = np.zeros(wavelength_air.size)
            for centre, depth in selected:
                near = np.abs(wavelength_air - centre) < 6 * MODEL_SIGMA_A
                row[near] += depth * np.exp(-0.5 * ((wavelength_air[near] - centre) / MODEL_SIGMA_A) ** 2)
            keys.append((element, kind))
            rows.append(row)
    return keys, np.array(rows)


def element_optical_depth(
    keys: list[tuple[str, str]], profiles: np.ndarray, teff: np.ndarray, logg: np.ndarray, x_fe: dict[str, np.ndarray]
) -> np.ndarray:
    """Change of optical depth from the stars' [X/Fe] (0 at solar-scaled composition).

    Parameters
    ----------
    keys : list of (str, str)
        (element, kind) of each profile, from ``line_profiles``.
    profiles : ndarray, shape (terms, P), float64
        The profiles, from ``line_profiles``.
    teff : ndarray, shape (n,), float64
        Effective temperature, K.
    logg : ndarray, shape (n,), float64
        Surface gravity, dex.
    x_fe : dict of str to ndarray
        Element -> (n,) float64 [X/Fe], dex.

    Returns
    -------
    ndarray, shape (n, P), float64
        ``sum_terms kind_strength * (10**[X/Fe] - 1) * profile``; the flux is multiplied by
        ``exp(-this)``.
    """
    weights = np.stack(
        [kind_strength(kind, teff, logg) * (10.0 ** x_fe[element] - 1.0) for element, kind in keys], axis=1
    )  # (n, terms)
    return weights @ profiles
