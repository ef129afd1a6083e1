"""Figures of single spectra for the admin (paper Fig. 4)."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import read_spectrum_file  # noqa: E402
from .models import Spectrum  # noqa: E402
from .processing.grids import ARMS, GRIDS  # noqa: E402
from .processing.pipeline import preprocess  # noqa: E402


class PlotUnavailable(Exception):
    pass


def spectrum_figure_png(spectrum: Spectrum) -> bytes:
    """Raw flux with its fitted continuum (top) and the normalised flux (bottom), blue and
    red arms, masked pixels marked; recomputed from the source file with the stored RVs."""
    path = Path(spectrum.source_path)
    if not path.exists():
        raise PlotUnavailable(f"source file {path} is not reachable from this server")
    source = read_spectrum_file(path)
    matches = [s for s in source.spectra if s.kind == spectrum.kind and s.lmjm == spectrum.lmjm]
    if not matches:
        raise PlotUnavailable(f"{path} no longer holds this spectrum")
    rv = np.array([[spectrum.rv_blue, spectrum.rv_red]], dtype=np.float64)
    result = preprocess(matches[:1], rv_supplied=np.where(np.isnan(rv), 0.0, rv), with_continuum=True)
    figure, axes = plt.subplots(2, 2, figsize=(13, 6.5), sharex="col", gridspec_kw={"hspace": 0.05, "wspace": 0.12})
    for a, arm in enumerate(ARMS):
        grid = GRIDS[arm]
        normalised, ivar, continuum = result.flux[0, a], result.ivar[0, a], result.continuum[0, a]
        masked = ivar <= 0
        raw = np.where(masked, np.nan, normalised * continuum)
        top, bottom = axes[0, a], axes[1, a]
        top.plot(grid, raw, lw=0.5, color="0.2", label="flux (rest frame)")
        top.plot(grid, continuum, lw=1.2, color="tab:red", label="fitted continuum")
        bottom.plot(grid, np.where(masked, np.nan, normalised), lw=0.5, color="0.2")
        bottom.axhline(1.0, lw=0.8, color="tab:red", ls="--")
        for axis in (top, bottom):
            if masked.any():
                low, high = axis.get_ylim()
                axis.fill_between(grid, low, high, where=masked, color="tab:orange", alpha=0.25, lw=0, label="masked")
                axis.set_ylim(low, high)
        top.set_title(f"{arm} arm, S/N {result.snr[0, a]:.1f}, RV {rv[0, a]:.1f} km/s", fontsize=10)
        bottom.set_xlabel("rest-frame vacuum wavelength (Å)")
        bottom.set_ylim(0.0, 1.3)
    axes[0, 0].set_ylabel("flux (counts)")
    axes[1, 0].set_ylabel("normalised flux")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    figure.suptitle(f"{spectrum.medres_specid}  ({spectrum.star.designation})", fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
