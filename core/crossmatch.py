"""Cross-match a reference catalog with our stars: Gaia source id first, then position.

Pure numpy/astropy, vectorised; no Django imports. Used to attach training labels to
stars and to compare a release with other surveys.
"""

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

MATCH_NONE = np.int8(0)
MATCH_GAIA = np.int8(1)
MATCH_POSITION = np.int8(2)


@dataclass(frozen=True)
class CrossMatch:
    """For each reference row: the index of its star (-1 if none), how, and how far.

    Parameters
    ----------
    star_index : ndarray, shape (n_ref,), int64
        Index into the star arrays passed to `crossmatch`; -1 when unmatched.
    method : ndarray, shape (n_ref,), int8
        ``MATCH_NONE`` (0), ``MATCH_GAIA`` (1) or ``MATCH_POSITION`` (2).
    separation_arcsec : ndarray, shape (n_ref,), float64
        Separation from the matched star, arcsec; NaN when unmatched.
    gaia_rejected_arcsec : ndarray, shape (n_ref,), float64
        Separation, arcsec, of the star sharing the row's Gaia id when that was beyond
        the limit and the id match was refused; NaN otherwise.
    """

    star_index: np.ndarray  # (n_ref,) int64, -1 when unmatched
    method: np.ndarray  # (n_ref,) int8: MATCH_NONE / MATCH_GAIA / MATCH_POSITION
    separation_arcsec: np.ndarray  # (n_ref,) float64, NaN when unmatched
    gaia_rejected_arcsec: np.ndarray  # (n_ref,) float64: how far the star sharing the row's Gaia id was, when
    # that was beyond the limit and the id match was refused; NaN otherwise

    @property
    def matched(self) -> np.ndarray:
        """Which reference rows have a star.

        Returns
        -------
        ndarray, shape (n_ref,), bool
            ``star_index >= 0``.
        """
        return self.star_index >= 0


def _gaia_ids(values) -> np.ndarray:
    """int64 ids, 0 for missing (None); Gaia source ids are positive.

    Floating-point input is refused: a 19-digit id does not survive float64 (2**53 is about
    9e15), so ids must reach the matcher as integers.
    """
    array = np.asarray(values)
    if array.dtype == object:
        if any(isinstance(v, float) for v in array.tolist()):
            raise TypeError("Gaia source ids must be integers, not floats (float64 loses digits)")
        array = np.array([0 if v is None else int(v) for v in array.tolist()], dtype=np.int64)
    elif array.dtype.kind == "f":
        raise TypeError("Gaia source ids must be integers, not floats (float64 loses digits)")
    return np.where(array > 0, array, 0).astype(np.int64)


def crossmatch(
    ref_gaia: np.ndarray,
    ref_ra: np.ndarray,
    ref_dec: np.ndarray,
    star_gaia: np.ndarray,
    star_ra: np.ndarray,
    star_dec: np.ndarray,
    radius_arcsec: float,
    gaia_max_arcsec: float,
) -> CrossMatch:
    """Match reference rows to stars.

    Parameters
    ----------
    ref_gaia : array_like, shape (n_ref,), int64
        Gaia source ids of the reference rows; 0, a negative value or None where unknown.
    ref_ra, ref_dec : array_like, shape (n_ref,), float64
        Reference positions, degrees (ICRS / J2000).
    star_gaia : array_like, shape (n_star,), int64
        Gaia source ids of the stars, as ``ref_gaia``.
    star_ra, star_dec : array_like, shape (n_star,), float64
        Star positions, degrees (ICRS / J2000).
    radius_arcsec : float
        Largest separation accepted for a positional match.
    gaia_max_arcsec : float
        Largest separation accepted for a match by Gaia id. Catalog positions of one star
        differ by its proper motion between epochs (2MASS J2000 against Gaia J2015.5/J2016:
        about 1.6" for 100 mas/yr), so a few arcseconds; a shared id further away than this
        is a wrong id (or a wrong position) and is not trusted.

    Returns
    -------
    CrossMatch
        A row whose Gaia id is shared by a star within ``gaia_max_arcsec`` is matched by id;
        a row whose id partner is further away is refused that match (its distance goes to
        ``gaia_rejected_arcsec``) and falls back to position like a row without an id; every
        such row is matched to its nearest star within ``radius_arcsec``. A Gaia id shared by
        several stars goes to the nearest of them.

    Raises
    ------
    TypeError
        If a Gaia id array holds floats: a 19-digit id does not survive float64.
    """
    ref_gaia = _gaia_ids(ref_gaia)
    star_gaia = _gaia_ids(star_gaia)
    n_ref = ref_gaia.shape[0]
    star_index = np.full(n_ref, -1, dtype=np.int64)
    method = np.full(n_ref, MATCH_NONE, dtype=np.int8)
    separation = np.full(n_ref, np.nan)
    rejected = np.full(n_ref, np.nan)
    if n_ref == 0 or star_gaia.shape[0] == 0:
        return CrossMatch(star_index, method, separation, rejected)
    ref_coords = SkyCoord(np.asarray(ref_ra, dtype=np.float64) * u.deg, np.asarray(ref_dec, dtype=np.float64) * u.deg)
    star_coords = SkyCoord(np.asarray(star_ra, dtype=np.float64) * u.deg, np.asarray(star_dec, dtype=np.float64) * u.deg)

    # By Gaia id: sort the stars' ids once and search; among duplicates keep the nearest.
    known = star_gaia > 0
    order = np.argsort(star_gaia, kind="stable")
    sorted_ids = star_gaia[order]
    left = np.searchsorted(sorted_ids, ref_gaia, side="left")
    right = np.searchsorted(sorted_ids, ref_gaia, side="right")
    has_id = (ref_gaia > 0) & (right > left) & known[order[np.minimum(left, order.size - 1)]]
    single = has_id & (right - left == 1)
    star_index[single] = order[left[single]]
    for i in np.flatnonzero(has_id & (right - left > 1)):  # rare: one Gaia id on several stars
        candidates = order[left[i] : right[i]]
        star_index[i] = candidates[np.argmin(ref_coords[i].separation(star_coords[candidates]).arcsec)]
    id_separation = np.full(n_ref, np.nan)
    id_rows = np.flatnonzero(has_id)
    id_separation[id_rows] = ref_coords[id_rows].separation(star_coords[star_index[id_rows]]).arcsec
    too_far = has_id & ~(id_separation <= gaia_max_arcsec)
    rejected[too_far] = id_separation[too_far]
    star_index[too_far] = -1
    has_id &= ~too_far
    method[has_id] = MATCH_GAIA

    # By position for the rest (and for the refused id matches).
    rest = np.flatnonzero(~has_id)
    if rest.size:
        nearest, distance, _ = ref_coords[rest].match_to_catalog_sky(star_coords)
        close = distance.arcsec <= radius_arcsec
        star_index[rest[close]] = nearest[close]
        method[rest[close]] = MATCH_POSITION
    matched = star_index >= 0
    separation[matched] = ref_coords[matched].separation(star_coords[star_index[matched]]).arcsec
    return CrossMatch(star_index, method, separation, rejected)


def match_notes(result: CrossMatch, radius_arcsec: float, gaia_max_arcsec: float) -> np.ndarray:
    """Why each reference row is matched the way it is, where that needs saying.

    Today that is a refused Gaia-id match: 'Gaia id match 60.0" away (limit 5"): refused;
    matched by position at 0.40"' or '...: refused; no star within 3"'.

    Parameters
    ----------
    result : CrossMatch
        The outcome of `crossmatch`.
    radius_arcsec : float
        The positional radius that was used, arcsec (quoted in the note).
    gaia_max_arcsec : float
        The Gaia-id separation limit that was used, arcsec (quoted in the note).

    Returns
    -------
    ndarray, shape (n_ref,), object (str)
        The note per row; '' where there is nothing to say.
    """
    notes = np.full(result.star_index.shape[0], "", dtype=object)
    for i in np.flatnonzero(np.isfinite(result.gaia_rejected_arcsec)):
        outcome = (f"matched by position at {result.separation_arcsec[i]:.2f}\""
                   if result.method[i] == MATCH_POSITION else f"no star within {radius_arcsec:g}\"")
        notes[i] = (f"Gaia id match {result.gaia_rejected_arcsec[i]:.1f}\" away (limit {gaia_max_arcsec:g}\"): "
                    f"refused; {outcome}")
    return notes
