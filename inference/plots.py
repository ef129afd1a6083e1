"""Figures of models and releases: evaluation in S/N bins (paper Fig. 7), Kiel diagram (Fig. 6)."""

import numpy as np
from django.conf import settings
from matplotlib.colors import ListedColormap
from scipy.stats import binned_statistic_2d

from core.bulk import numeric_columns
from core.labels import LABELS
from core.plots import figure_png, plt
from core.rules import CatalogRules

from .models import CatalogEntry, CatalogRelease, ModelVersion

# Above this many stars the Kiel diagram shows the mean [Fe/H] per cell instead of points.
KIEL_SCATTER_MAX = 20_000


def evaluation_figure_png(model_version: ModelVersion) -> bytes:
    """Accuracy (mean offset, points) and precision (standard deviation, bars) of each label
    against the S/N of the weaker arm, on the held-out test set."""
    metrics = model_version.metrics
    figure, axes = plt.subplots(3, 5, figsize=(17, 9), sharex=True)
    if "by_snr" not in metrics:
        figure.text(0.5, 0.5, "this model version has no test-set evaluation", ha="center")
        return figure_png(figure)
    edges = [e if e is not None else np.inf for e in metrics["snr_edges"]]
    upper = [e if np.isfinite(e) else edges[-2] * 1.5 for e in edges[1:]]
    centres = (np.asarray(edges[:-1]) + np.asarray(upper)) / 2
    for axis, label in zip(axes.ravel(), LABELS, strict=True):
        bins = metrics["by_snr"][label.field]
        bias = np.array([b["bias"] if b["bias"] is not None else np.nan for b in bins])
        std = np.array([b["std"] if b["std"] is not None else np.nan for b in bins])
        axis.errorbar(centres, bias, yerr=std, fmt="o", color="tab:blue", capsize=3)
        axis.axhline(0.0, color="0.5", lw=0.8)
        axis.set_title(f"{label.column} ({label.unit})", fontsize=10)
        axis.set_xscale("log")
    for axis in axes[-1]:
        axis.set_xlabel("S/N (weaker arm)")
    figure.suptitle(f"{model_version.name}: prediction - reference on the test set (mean and standard deviation)")
    return figure_png(figure)


def _isochrones() -> list[tuple[str, np.ndarray, np.ndarray]]:
    path = settings.ISOCHRONE_PATH
    if not path or not path.exists():
        return []
    with path.open() as handle:
        header = handle.readline().strip().split(",")
    table = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64).reshape(-1, len(header))
    curves = []
    for i, name in enumerate(header):
        if name.startswith("teff_") and f"logg_{name[5:]}" in header:
            teff, logg = 10 ** table[:, i], table[:, header.index(f"logg_{name[5:]}")]
            finite = np.isfinite(teff) & np.isfinite(logg)
            curves.append((name[5:], teff[finite], logg[finite]))
    return curves


# Kiel diagram extent in log g (dex); in Teff it is the catalog rules' range (core.rules).
KIEL_LOGG_RANGE = (-0.5, 5.5)


def kiel_range(rules: CatalogRules) -> tuple[tuple[float, float], tuple[float, float]]:
    """The Kiel diagram's (Teff, log g) extent: the rules' Teff range, K, and log g, dex."""
    return (rules.teff_min, rules.teff_max), KIEL_LOGG_RANGE


def kiel_cells(
    rows: np.ndarray, bins: tuple[int, int] = (120, 100), rules: CatalogRules | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean [Fe/H] per (Teff, log g) cell, counting only rows that have an [Fe/H].

    Parameters
    ----------
    rows : (n, 3) float64
        Teff (K), log g (dex), [Fe/H] (dex); NaN [Fe/H] is no value (hot stars).
    bins : cells along Teff and log g.
    rules : the catalog rules whose Teff range the cells cover (default: core.rules' defaults).

    Returns
    -------
    mean : (bins[0], bins[1]) float64, NaN where no row with an [Fe/H] falls.
    without : (bins[0], bins[1]) bool, cells holding only rows without [Fe/H].
    teff_edges, logg_edges : (bins[0] + 1,) and (bins[1] + 1,) float64.
    """
    with_feh = np.isfinite(rows[:, 2])
    coloured = rows[with_feh]
    mean, teff_edges, logg_edges, _ = binned_statistic_2d(
        coloured[:, 0], coloured[:, 1], coloured[:, 2], "mean", bins=bins, range=kiel_range(rules or CatalogRules())
    )
    counts, _, _ = np.histogram2d(rows[~with_feh, 0], rows[~with_feh, 1], bins=(teff_edges, logg_edges))
    return mean, (counts > 0) & ~np.isfinite(mean), teff_edges, logg_edges


def kiel_diagram_png(release: CatalogRelease, *, good_only: bool = True) -> bytes:
    """Teff against log g coloured by [Fe/H], MIST 7 Gyr isochrones over-plotted.

    Rows without an [Fe/H] (NULL, as for hot stars) are drawn in grey and never enter a mean.
    """
    rules = CatalogRules.from_mapping(release.rules)  # the Teff range this release applied
    entries = CatalogEntry.objects.filter(release=release)
    if good_only:
        entries = entries.filter(flag=1)
    rows = numeric_columns(entries.order_by(), ["teff", "logg", "fe_h"])
    rows = rows[np.all(np.isfinite(rows[:, :2]), axis=1)]
    with_feh = np.isfinite(rows[:, 2])
    figure, axis = plt.subplots(figsize=(8, 6.5))
    if rows.shape[0] > KIEL_SCATTER_MAX:
        mean, without, x_edges, y_edges = kiel_cells(rows, rules=rules)
        axis.pcolormesh(x_edges, y_edges, np.where(without, 1.0, np.nan).T, cmap=ListedColormap(["0.6"]))
        image = axis.pcolormesh(x_edges, y_edges, mean.T, cmap="viridis", vmin=-1.0, vmax=0.4)
    else:
        if not with_feh.all():
            axis.scatter(rows[~with_feh, 0], rows[~with_feh, 1], c="0.6", s=4, label="no [Fe/H]")
        image = axis.scatter(
            rows[with_feh, 0], rows[with_feh, 1], c=rows[with_feh, 2], s=4, cmap="viridis", vmin=-1.0, vmax=0.4
        )
    figure.colorbar(image, ax=axis, label="[Fe/H]")
    for metallicity, teff, logg in _isochrones():
        axis.plot(teff, logg, lw=1.2, label=f"MIST 7 Gyr, [Fe/H] = {metallicity}")
    (teff_low, teff_high), (logg_low, logg_high) = kiel_range(rules)
    axis.set_xlim(teff_high, teff_low)
    axis.set_ylim(logg_high, logg_low)
    axis.set_xlabel("Teff (K)")
    axis.set_ylabel("log g")
    axis.set_title(f"{release.name}: {rows.shape[0]} {'Flag = 1 ' if good_only else ''}spectra")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="lower left", fontsize=8)
    return figure_png(figure)
