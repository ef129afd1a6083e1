"""Reads of the spectra app."""

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from core.bulk import query_numeric_records
from core.crossmatch import MATCH_GAIA, MATCH_POSITION, crossmatch, match_notes

from .array_store import ArrayStore
from .arrays_formats import SpectrumArrays
from .models import Star

MATCH_METHOD_NAMES = np.array(["", "gaia", "position"], dtype=object)  # by crossmatch code


@dataclass(frozen=True)
class StarMatches:
    star_id: np.ndarray  # (n,) int64, -1 when unmatched
    method: np.ndarray  # (n,) object: "gaia", "position" or ""
    separation_arcsec: np.ndarray  # (n,) float64, NaN when unmatched
    note: np.ndarray  # (n,) object: why, where it needs saying (a refused Gaia-id match); "" elsewhere
    by_gaia: int
    by_position: int
    gaia_refused: int

    @property
    def matched(self) -> np.ndarray:
        return self.star_id >= 0


def _stars_positions() -> np.ndarray:
    """Every star's id, Gaia source id (0 for none) and position, in id order, as numpy
    records: through a binary COPY on PostgreSQL (32 bytes a star; Python tuples took
    several times that at a million stars)."""
    dtypes = [("id", "i8"), ("gaia_source_id", "i8"), ("ra", "f8"), ("dec", "f8")]
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Star._meta.db_table)
        return query_numeric_records(
            f"SELECT id, COALESCE(gaia_source_id, 0), ra, dec FROM {table} ORDER BY id", [], dtypes)
    rows = list(Star.objects.order_by("id").values_list("id", "gaia_source_id", "ra", "dec"))
    return np.array([(i, g or 0, r, d) for i, g, r, d in rows], dtype=np.dtype([(n, f"={c}") for n, c in dtypes]))


def stars_crossmatch(*, gaia: list, ra: np.ndarray, dec: np.ndarray) -> StarMatches:
    """Match catalog rows (another survey, training labels) to our stars: Gaia source id
    within REFERENCE_GAIA_MATCH_MAX_ARCSEC first, else position within
    REFERENCE_MATCH_RADIUS_ARCSEC. ``gaia`` holds Python ints or None (never floats)."""
    stars = _stars_positions()
    radius, gaia_max = settings.REFERENCE_MATCH_RADIUS_ARCSEC, settings.REFERENCE_GAIA_MATCH_MAX_ARCSEC
    result = crossmatch(
        np.array([g or 0 for g in gaia], dtype=np.int64), np.asarray(ra, dtype=np.float64),
        np.asarray(dec, dtype=np.float64), stars["gaia_source_id"], stars["ra"], stars["dec"],
        radius_arcsec=radius, gaia_max_arcsec=gaia_max,
    )
    star_ids = stars["id"]
    matched = result.star_index >= 0
    return StarMatches(
        star_id=np.where(matched, star_ids[np.maximum(result.star_index, 0)] if star_ids.size else -1, -1),
        method=MATCH_METHOD_NAMES[result.method],
        separation_arcsec=result.separation_arcsec,
        note=match_notes(result, radius, gaia_max),
        by_gaia=int(np.sum(result.method == MATCH_GAIA)),
        by_position=int(np.sum(result.method == MATCH_POSITION)),
        gaia_refused=int(np.sum(np.isfinite(result.gaia_rejected_arcsec))),
    )


class SpectrumArraysUnavailable(Exception):
    """A spectrum's normalised arrays cannot be read: none were stored, or their shard is
    missing from (or unreadable in) the array store. The message says which."""


def spectrum_arrays_read(*, spectrum) -> SpectrumArrays:
    """The stored normalised arrays of ``spectrum`` with its provenance (raw file path and
    sha256, preprocessing version, ids, RVs, S/N).

    Raises SpectrumArraysUnavailable, naming the problem, when there is nothing to read.
    """
    if not spectrum.array_shard or spectrum.array_row is None:
        raise SpectrumArraysUnavailable(
            f"spectrum {spectrum.pk} has no stored arrays (status {spectrum.status})")
    store = ArrayStore(settings.SPECTRA_ARRAY_ROOT)
    path = store.path(spectrum.array_shard)
    if not path.is_file():
        raise SpectrumArraysUnavailable(
            f"the array shard {spectrum.array_shard} of spectrum {spectrum.pk} is missing from the array store")
    try:
        stored = store.read(spectrum.array_shard, [spectrum.array_row])[0]
    except (OSError, ValueError, IndexError) as error:
        raise SpectrumArraysUnavailable(
            f"the array shard {spectrum.array_shard} of spectrum {spectrum.pk} cannot be read "
            f"(row {spectrum.array_row}): {error}") from error
    star = spectrum.star
    meta = {
        "spectrum": spectrum.pk,
        "medres_specid": spectrum.medres_specid,
        "designation": star.designation,
        "gaia_source_id": star.gaia_source_id,
        "ra": star.ra,
        "dec": star.dec,
        "snr_blue": spectrum.snr_blue,
        "snr_red": spectrum.snr_red,
        "rv_blue": spectrum.rv_blue,
        "rv_red": spectrum.rv_red,
        "preprocessing_version": spectrum.preprocessing_version or None,
        "source_path": spectrum.source_path,
        "source_sha256": spectrum.source_sha256,
    }
    return SpectrumArrays(flux=np.array(stored[0], dtype=np.float32), ivar=np.array(stored[1], dtype=np.float32), meta=meta)
