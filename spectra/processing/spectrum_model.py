"""A physically grounded model of normalised stellar spectra: The Cannon model shipped
inside the ``thedoppler`` package (Nidever et al., MIT licence), evaluated with numpy.

The model is a plain numpy pickle: ``theta`` (150001 x 20) on ``dispersion`` (3000-18000 A,
0.1 A, air wavelengths), cubic in the scaled labels Teff, log g, [Fe/H]. Scaling as The
Cannon does it: fiducial = median of the training labels, scale = 97.5th minus 2.5th
percentile. Its lines are about R 30,000, so ``smooth_to_resolution`` broadens them to
the MRS resolution; small artefacts below 0 or above 1 are clipped.

Used for the RV template bank (here) and by the mock survey. The pickle is fetched by
``python manage.py fetch_spectrum_model`` and verified against a pinned sha256 before it
is ever unpickled.
"""

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .grids import WINDOWS
from .rv import TemplateBank, air_to_vacuum

THEDOPPLER_VERSION = "1.1.32"
MODEL_MEMBER = "doppler/data/cannongrid_3000_18000_coolstars_norm_cubic_model.pkl"
MODEL_SHA256 = "2564830d8f7a119b2af495b37068868ecac51ba2adcc0e420dbb4a2f15d75098"
MODEL_RESOLUTION = 30_000.0  # approximate resolving power of the model's lines


class SpectrumModelError(Exception):
    """The spectrum model file is missing or is not the pinned one."""


@dataclass(frozen=True)
class CannonSpectrumModel:
    """The Cannon model of ``thedoppler`` (Nidever et al.): normalised flux cubic in scaled labels.

    Parameters
    ----------
    wavelength_air : ndarray, shape (P,), float64
        Air wavelengths, Angstrom.
    theta : ndarray, shape (P, 1 + K), float64
        Coefficients per pixel: the constant, then one per term.
    terms : tuple
        The K terms, each ``((label index, power), ...)``.
    fiducial : ndarray, shape (3,), float64
        Median of the training labels (Teff K, log g dex, [Fe/H] dex).
    scale : ndarray, shape (3,), float64
        97.5th minus 2.5th percentile of the training labels.
    label_min, label_max : ndarray, shape (3,), float64
        The training set's label range.
    """

    wavelength_air: np.ndarray  # (P,) float64
    theta: np.ndarray  # (P, K) float64
    terms: tuple  # each term: ((label index, power), ...)
    fiducial: np.ndarray  # (3,)
    scale: np.ndarray  # (3,)
    label_min: np.ndarray  # (3,) training-set range
    label_max: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> "CannonSpectrumModel":
        """Load the pickle after checking its sha256 against ``MODEL_SHA256``.

        Parameters
        ----------
        path : str or Path
            The model pickle (``python manage.py fetch_spectrum_model``).

        Returns
        -------
        CannonSpectrumModel

        Raises
        ------
        SpectrumModelError
            If the file is missing or its sha256 is not the pinned one (it is then never
            unpickled).
        """
        path = Path(path)
        if not path.exists():
            raise SpectrumModelError(f"{path}: spectrum model not found; run `python manage.py fetch_spectrum_model`")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != MODEL_SHA256:
            raise SpectrumModelError(f"{path}: sha256 {digest} is not the pinned {MODEL_SHA256}; refusing to unpickle")
        model = pickle.loads(data)  # noqa: S301  (content verified above)
        labels = np.asarray(model["training_set_labels"], dtype=np.float64)
        terms = tuple(tuple((int(i), float(p)) for i, p in term) for term in model["vectorizer"][1]["terms"])
        return cls(
            wavelength_air=np.asarray(model["dispersion"], dtype=np.float64),
            theta=np.asarray(model["theta"], dtype=np.float64),
            terms=terms,
            fiducial=np.median(labels, axis=0),
            scale=np.percentile(labels, 97.5, axis=0) - np.percentile(labels, 2.5, axis=0),
            label_min=labels.min(axis=0),
            label_max=labels.max(axis=0),
        )

    def restrict(self, low_air: float, high_air: float) -> "CannonSpectrumModel":
        """The model on [low_air, high_air] only (cheaper to evaluate).

        Parameters
        ----------
        low_air, high_air : float
            Air wavelengths, Angstrom, inclusive.

        Returns
        -------
        CannonSpectrumModel
            The same model on the pixels in the range.
        """
        keep = (self.wavelength_air >= low_air) & (self.wavelength_air <= high_air)
        return CannonSpectrumModel(
            self.wavelength_air[keep], self.theta[keep], self.terms, self.fiducial, self.scale,
            self.label_min, self.label_max,
        )

    @property
    def wavelength_vacuum(self) -> np.ndarray:
        """The model's wavelengths in vacuum.

        Returns
        -------
        ndarray, shape (P,), float64
            Angstrom (``air_to_vacuum``).
        """
        return air_to_vacuum(self.wavelength_air)

    def design_matrix(self, labels: np.ndarray) -> np.ndarray:
        """Design vectors of labels.

        Parameters
        ----------
        labels : array_like, shape (n, 3) or (3,)
            Teff (K), log g (dex), [Fe/H] (dex).

        Returns
        -------
        ndarray, shape (n, 1 + K), float64
            1, then each term of the labels scaled as ``(label - fiducial) / scale``.
        """
        x = (np.atleast_2d(np.asarray(labels, dtype=np.float64)) - self.fiducial) / self.scale
        columns = [np.ones(x.shape[0])]
        for term in self.terms:
            column = np.ones(x.shape[0])
            for index, power in term:
                column = column * x[:, index] ** power
            columns.append(column)
        return np.stack(columns, axis=1)

    def flux(self, labels: np.ndarray) -> np.ndarray:
        """Normalised flux at the model's native resolution, clipped to [0, 1].

        Parameters
        ----------
        labels : array_like, shape (n, 3) or (3,)
            Teff (K), log g (dex), [Fe/H] (dex).

        Returns
        -------
        ndarray, shape (n, P), float64
            Normalised flux on ``wavelength_air``.
        """
        return np.clip(self.design_matrix(labels) @ self.theta.T, 0.0, 1.0)


def smooth_to_resolution(wavelength: np.ndarray, flux: np.ndarray, resolution: float) -> np.ndarray:
    """Broaden model spectra (on a uniform wavelength grid) from R 30,000 to ``resolution``.

    A Gaussian of the quadrature difference of the two line spreads, its width taken at
    the middle wavelength (it changes by a few per cent across one MRS arm).

    Parameters
    ----------
    wavelength : ndarray, shape (P,), float64
        Uniform, increasing wavelengths, Angstrom.
    flux : ndarray, shape (..., P)
        Spectra, smoothed along the last axis.
    resolution : float
        Target resolving power R (< 30,000).

    Returns
    -------
    ndarray, shape (..., P)
        Smoothed flux, dtype of ``flux``.
    """
    centre = float(np.median(wavelength))
    step = float(np.median(np.diff(wavelength)))
    fwhm = np.sqrt((centre / resolution) ** 2 - (centre / MODEL_RESOLUTION) ** 2)
    return gaussian_filter1d(flux, fwhm / 2.3548 / step, axis=-1, mode="nearest")


# Templates for cross-correlation RVs: giants and dwarfs across the MRS range, two metallicities.
TEMPLATE_LABELS = np.array(
    [(t, g, m) for t, g in ((3900, 1.5), (4300, 2.0), (4700, 2.5), (5000, 3.0), (5300, 4.5), (5800, 4.3), (6300, 4.2), (7000, 4.0)) for m in (-1.0, 0.0)],
    dtype=np.float64,
)


def template_bank_from_model(model: CannonSpectrumModel, resolution: float = 7500.0) -> TemplateBank:
    """The RV template bank: model spectra at TEMPLATE_LABELS, smoothed to the MRS resolution.

    Parameters
    ----------
    model : CannonSpectrumModel
        The spectrum model (air wavelengths).
    resolution : float, optional
        Resolving power of the templates (LAMOST MRS: R ~ 7500, SCIENCE.md).

    Returns
    -------
    TemplateBank
        16 templates (``TEMPLATE_LABELS``) on vacuum wavelengths.
    """
    fluxes, wavelengths = [], []
    for low, high in WINDOWS.values():
        part = model.restrict(low - 60.0, high + 60.0)
        fluxes.append(smooth_to_resolution(part.wavelength_air, part.flux(TEMPLATE_LABELS), resolution))
        wavelengths.append(part.wavelength_vacuum)
    return TemplateBank.from_spectra(np.concatenate(wavelengths), np.concatenate(fluxes, axis=1), TEMPLATE_LABELS)
