"""Figures of single spectra for the admin (paper Fig. 4)."""

import numpy as np

from core.plots import figure_png, plt

from .models import Spectrum
from .processing.grids import ARMS, GRIDS
from .selectors import SpectrumArraysUnavailable, spectrum_arrays_read


class PlotUnavailable(Exception):
    pass


def spectrum_figure_png(spectrum: Spectrum) -> bytes:
    """The stored normalised arrays of ``spectrum`` (what the networks read), blue and red
    arms: normalised flux with its 1-sigma band and masked pixels marked (top), and the
    per-pixel uncertainty 1/sqrt(ivar) (bottom).

    Raises PlotUnavailable, with the reason, when the spectrum has no readable arrays.
    """
    try:
        arrays = spectrum_arrays_read(spectrum=spectrum)
    except SpectrumArraysUnavailable as error:
        raise PlotUnavailable(str(error)) from error
    snr = (spectrum.snr_blue, spectrum.snr_red)
    rv = (spectrum.rv_blue, spectrum.rv_red)
    figure, axes = plt.subplots(2, 2, figsize=(13, 6.5), sharex="col",
                                gridspec_kw={"hspace": 0.05, "wspace": 0.12, "height_ratios": (3, 1)})
    for a, arm in enumerate(ARMS):
        grid = GRIDS[arm]
        flux = arrays.flux[a].astype(np.float64)
        ivar = arrays.ivar[a].astype(np.float64)
        masked = ivar <= 0
        with np.errstate(divide="ignore"):
            sigma = np.where(masked, np.nan, 1.0 / np.sqrt(ivar))
        shown = np.where(masked, np.nan, flux)
        top, bottom = axes[0, a], axes[1, a]
        top.fill_between(grid, shown - sigma, shown + sigma, color="tab:blue", alpha=0.3, lw=0, label="1 sigma")
        top.plot(grid, shown, lw=0.5, color="0.2", label="normalised flux (rest frame)")
        top.axhline(1.0, lw=0.8, color="tab:red", ls="--")
        top.set_ylim(0.0, 1.3)
        if masked.any():
            top.fill_between(grid, 0.0, 1.3, where=masked, color="tab:orange", alpha=0.25, lw=0, label="masked")
        bottom.plot(grid, sigma, lw=0.5, color="0.2")
        snr_text = "-" if snr[a] is None else f"{snr[a]:.1f}"
        rv_text = "-" if rv[a] is None else f"{rv[a]:.1f} km/s"
        top.set_title(f"{arm} arm, S/N {snr_text}, RV {rv_text}, {int(masked.sum())} masked pixels", fontsize=10)
        bottom.set_xlabel("rest-frame vacuum wavelength (Å)")
    axes[0, 0].set_ylabel("normalised flux")
    axes[1, 0].set_ylabel("1 / sqrt(ivar)")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    version = arrays.meta.get("preprocessing_version") or spectrum.preprocessing_version
    figure.suptitle(f"{spectrum.medres_specid}  ({spectrum.star.designation}), preprocessing {version}", fontsize=11)
    return figure_png(figure)
