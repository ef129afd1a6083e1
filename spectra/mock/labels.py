"""True labels of mock stars: (Teff, log g) along MIST isochrones, [Fe/H] and [X/Fe]
with Galactic trends and scatter, matched to the reference set of the SPCANet paper
(LAMOST MRS x APOGEE-Payne: giants dominate; means and spreads in docs/SCIENCE notes)."""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.labels import LABELS

ELEMENTS = tuple(label.element for label in LABELS if label.is_abundance and label.element != "Fe")
# [X/Fe] = mean + slope * [Fe/H] + N(0, scatter). Means give the reference-set [X/H]
# means at its mean [Fe/H] (-0.19); alpha elements rise towards low metallicity; C and
# N reflect giants' mixing (C down, N up); Cu is low and scattered as observed.
X_FE_TRENDS: dict[str, tuple[float, float, float]] = {
    "C": (-0.12, -0.10, 0.16),
    "N": (0.12, 0.0, 0.22),
    "O": (0.08, -0.25, 0.10),
    "Mg": (0.06, -0.25, 0.08),
    "Al": (0.08, -0.15, 0.14),
    "Si": (0.06, -0.20, 0.07),
    "S": (0.05, -0.25, 0.12),
    "Ca": (0.03, -0.20, 0.06),
    "Ti": (0.02, -0.20, 0.10),
    "Cr": (0.0, 0.0, 0.06),
    "Ni": (0.02, 0.05, 0.05),
    "Cu": (-0.12, 0.15, 0.18),
}
FEH_MEAN, FEH_STD, FEH_RANGE = -0.19, 0.27, (-1.5, 0.45)
# Share of each evolutionary phase (giants dominate, as in the reference set).
PHASES = {"dwarf": 0.27, "subgiant": 0.09, "red_giant": 0.48, "red_clump": 0.16}
ISOCHRONE_FEH = (-0.5, 0.0, 0.5)


@dataclass(frozen=True)
class Isochrones:
    """Teff(log g) of the dwarf and giant branches of MIST 7 Gyr isochrones at several [Fe/H]."""

    dwarf_logg: list[np.ndarray]  # per [Fe/H], increasing
    dwarf_teff: list[np.ndarray]
    giant_logg: list[np.ndarray]
    giant_teff: list[np.ndarray]
    turnoff_logg: np.ndarray  # per [Fe/H]
    base_rgb_logg: np.ndarray

    @classmethod
    def from_mist_csv(cls, path: str | Path) -> "Isochrones":
        """Columns teff_<[Fe/H]> (log10 Teff) and logg_<[Fe/H]> for [Fe/H] = -0.5, 0, +0.5."""
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        dwarf_logg, dwarf_teff, giant_logg, giant_teff, turnoff, base = [], [], [], [], [], []
        for feh in ISOCHRONE_FEH:
            key = f"{feh:g}"
            teff = np.array([float(r[f"teff_{key}"]) for r in rows if r.get(f"teff_{key}")], dtype=np.float64)
            logg = np.array([float(r[f"logg_{key}"]) for r in rows if r.get(f"logg_{key}")], dtype=np.float64)
            teff = 10.0**teff
            tip = int(np.argmin(logg))  # the red-giant tip ends the track we use
            teff, logg = teff[: tip + 1], logg[: tip + 1]
            turn = int(np.argmax(teff * (logg > 3.5)))  # main-sequence turn-off: the hottest point
            ms_logg, ms_teff = logg[: turn + 1], teff[: turn + 1]
            order = np.argsort(ms_logg)
            dwarf_logg.append(ms_logg[order])
            dwarf_teff.append(ms_teff[order])
            giants = slice(turn, None)
            order = np.argsort(logg[giants])
            giant_logg.append(logg[giants][order])
            giant_teff.append(teff[giants][order])
            turnoff.append(logg[turn])
            base.append(float(np.interp(5100.0, teff[giants][::-1], logg[giants][::-1])))
        return cls(dwarf_logg, dwarf_teff, giant_logg, giant_teff, np.array(turnoff), np.array(base))

    def teff(self, logg: np.ndarray, feh: np.ndarray, branch: str) -> np.ndarray:
        """Teff at log g on a branch, interpolated (and extrapolated) linearly in [Fe/H]."""
        loggs = self.dwarf_logg if branch == "dwarf" else self.giant_logg
        teffs = self.dwarf_teff if branch == "dwarf" else self.giant_teff
        tracks = np.stack([np.interp(logg, g, t) for g, t in zip(loggs, teffs, strict=True)])  # (3, n)
        grid = np.array(ISOCHRONE_FEH)
        low = np.clip(np.searchsorted(grid, feh) - 1, 0, grid.size - 2)
        weight = (feh - grid[low]) / (grid[low + 1] - grid[low])
        columns = np.arange(logg.size)
        return tracks[low, columns] * (1 - weight) + tracks[low + 1, columns] * weight


def sample_labels(rng: np.random.Generator, n: int, isochrones: Isochrones) -> np.ndarray:
    """True labels of ``n`` mock stars.

    Parameters
    ----------
    rng : numpy.random.Generator
        The random stream.
    n : int
        Stars.
    isochrones : Isochrones
        The MIST 7 Gyr isochrones (Teff along log g).

    Returns
    -------
    ndarray, shape (n, 15), float64
        Labels in ``core.labels.LABELS`` order: Teff (K), log g (dex), [Fe/H] and the 12
        other abundances as [X/H] (dex).

    Notes
    -----
    [Fe/H] ~ N(-0.19, 0.27) clipped to [-1.5, 0.45], giants dominating: the LAMOST MRS x
    APOGEE-Payne reference set of the SPCANet paper (SCIENCE.md "Reference labels").
    Phase shares and [X/Fe] trends are this module's choices (``PHASES``, ``X_FE_TRENDS``).
    """
    feh = np.clip(rng.normal(FEH_MEAN, FEH_STD, n), *FEH_RANGE)
    phase = rng.choice(list(PHASES), size=n, p=list(PHASES.values()))
    turnoff = np.interp(feh, ISOCHRONE_FEH, isochrones.turnoff_logg)
    base = np.interp(feh, ISOCHRONE_FEH, isochrones.base_rgb_logg)
    logg = np.empty(n)
    teff = np.empty(n)
    dwarf = phase == "dwarf"
    logg[dwarf] = rng.uniform(turnoff[dwarf] + 0.05, 4.75)
    teff[dwarf] = isochrones.teff(logg[dwarf], feh[dwarf], "dwarf")
    sub = phase == "subgiant"
    logg[sub] = rng.uniform(base[sub], turnoff[sub])
    teff[sub] = isochrones.teff(logg[sub], feh[sub], "giant")
    giant = phase == "red_giant"
    logg[giant] = np.clip(rng.normal(2.85, 0.5, giant.sum()), 1.0, base[giant])
    teff[giant] = isochrones.teff(logg[giant], feh[giant], "giant")
    clump = phase == "red_clump"
    logg[clump] = rng.normal(2.45, 0.08, clump.sum())
    teff[clump] = isochrones.teff(logg[clump], feh[clump], "giant") + rng.normal(220.0, 60.0, clump.sum())
    # Ages and masses spread a real population around one 7 Gyr isochrone.
    teff += rng.normal(0.0, 60.0, n)
    logg += rng.normal(0.0, 0.06, n)
    labels = np.empty((n, len(LABELS)))
    labels[:, 0], labels[:, 1], labels[:, 2] = teff, logg, feh
    for i, element in enumerate(ELEMENTS):
        mean, slope, scatter = X_FE_TRENDS[element]
        labels[:, 3 + i] = feh + mean + slope * feh + rng.normal(0.0, scatter, n)
    return labels
