"""Figures of a validation: differences against our value (paper Figs. 13-14)."""

import numpy as np

from core.labels import LABELS
from core.plots import figure_png, plt

from .models import ValidationResult

_BY_FIELD = {label.field: label for label in LABELS}


def differences_figure_png(results: list[ValidationResult]) -> bytes:
    """One panel per label: ours - theirs against ours (a sample of the pairs), the binned
    mean, the regression line, and the bias and scatter in the corner."""
    n = max(len(results), 1)
    columns = min(n, 4)
    rows = int(np.ceil(n / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.ravel()[len(results):]:
        axis.set_visible(False)
    for axis, result in zip(axes.ravel(), results, strict=False):
        label = _BY_FIELD[result.label]
        x = np.asarray(result.sample.get("ours", []), dtype=np.float64)
        y = np.asarray(result.sample.get("difference", []), dtype=np.float64)
        axis.scatter(x, y, s=2, alpha=0.3, color="tab:blue", rasterized=True)
        edges = np.asarray([e if e is not None else np.nan for e in result.by_value["edges"]], dtype=np.float64)
        centres = (edges[:-1] + edges[1:]) / 2
        bias = np.asarray([b if b is not None else np.nan for b in result.by_value["bias"]], dtype=np.float64)
        axis.plot(centres, bias, "o-", color="tab:red", ms=3, lw=1)
        if result.slope is not None and x.size:
            line = np.linspace(np.nanmin(x), np.nanmax(x), 2)
            axis.plot(line, result.intercept + result.slope * line, color="k", lw=1)
        axis.axhline(0.0, color="0.5", lw=0.7)
        axis.set_xlabel(f"{label.column} (SPCANet)")
        axis.set_ylabel(f"delta {label.column}")
        axis.text(0.03, 0.95, f"{result.bias:+.3g} / {result.scatter:.3g}\n{result.n_stars} stars, {result.n_spectra} spectra",
                  transform=axis.transAxes, va="top", fontsize=8)
    if results:
        first = results[0]
        figure.suptitle(f"{first.release.name} minus {first.survey.name} (bias / sigma)")
    return figure_png(figure, dpi=80)
