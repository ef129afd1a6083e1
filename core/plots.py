"""The plots' shared plumbing: a headless matplotlib and a figure written as PNG bytes."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure_png(figure, *, dpi: int = 90) -> bytes:
    """``figure`` as PNG bytes (tight bounding box); the figure is closed afterwards."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()
