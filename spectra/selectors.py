"""Reads of the spectra app."""

import math
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from core.bulk import query_numeric_records
from core.crossmatch import MATCH_GAIA, MATCH_NONE, MATCH_POSITION, CrossMatch, crossmatch, match_notes

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


_STAR_DTYPES = [("id", "i8"), ("gaia_source_id", "i8"), ("ra", "f8"), ("dec", "f8")]
# Stars held in memory at once by a cross-match on PostgreSQL: above this many stars the match
# runs zone by zone in declination (32 bytes a star, plus astropy's search tree over them).
CROSSMATCH_ZONE_STARS = 100_000


def _stars_positions(where: str = "", params: list | None = None) -> np.ndarray:
    """The id, Gaia source id (0 for none) and position of the stars ``where`` selects
    (all by default), in id order, as numpy records: through a binary COPY on PostgreSQL
    (32 bytes a star; Python tuples took several times that at a million stars)."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Star._meta.db_table)
        return query_numeric_records(
            f"SELECT id, COALESCE(gaia_source_id, 0), ra, dec FROM {table} {where} ORDER BY id",
            params or [], _STAR_DTYPES)
    rows = list(Star.objects.order_by("id").values_list("id", "gaia_source_id", "ra", "dec"))
    return np.array([(i, g or 0, r, d) for i, g, r, d in rows], dtype=np.dtype([(n, f"={c}") for n, c in _STAR_DTYPES]))


def _declination_zones(zone_stars: int) -> np.ndarray:
    """Declination edges, degrees, cutting our stars into zones of about ``zone_stars``
    each: (n_zones + 1,) float64 from -90 to 90 (one zone, [-90, 90], below that count)."""
    table = connection.ops.quote_name(Star._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        (n_stars,) = cursor.fetchone()
        n_zones = -(-n_stars // zone_stars)
        inner: list[float] = []
        if n_zones > 1:
            cursor.execute(f"SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY dec) FROM {table}",
                           [[k / n_zones for k in range(1, n_zones)]])
            inner = sorted({float(e) for e in cursor.fetchone()[0] if e is not None and math.isfinite(e)})
    return np.array([-90.0, *inner, 90.0], dtype=np.float64)


def stars_crossmatch(
    *, gaia: list, ra: np.ndarray, dec: np.ndarray, zone_stars: int | None = None
) -> StarMatches:
    """Match catalog rows (another survey, training labels) to our stars: Gaia source id
    within REFERENCE_GAIA_MATCH_MAX_ARCSEC first, else position within
    REFERENCE_MATCH_RADIUS_ARCSEC. ``gaia`` holds Python ints or None (never floats).

    On PostgreSQL the stars are read zone by zone in declination (about ``zone_stars``,
    default CROSSMATCH_ZONE_STARS, a zone), so memory does not grow with the number of
    stars: a zone's rows are matched against its stars within the larger of the two radii
    of its edges, and against every star sharing one of their Gaia ids, wherever it is
    (so a refused id match is still reported). That is every star the whole-table match
    could choose, so the matches are the same, except between stars at exactly the same
    separation from a row, where the search tree may pick either. Stars with a NaN or
    out-of-range declination are in no zone (the whole-table match raises on them).
    """
    radius, gaia_max = settings.REFERENCE_MATCH_RADIUS_ARCSEC, settings.REFERENCE_GAIA_MATCH_MAX_ARCSEC
    ref_gaia = np.array([g or 0 for g in gaia], dtype=np.int64)
    ref_ra, ref_dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    n_ref = ref_gaia.shape[0]
    star_id = np.full(n_ref, -1, dtype=np.int64)
    method = np.full(n_ref, MATCH_NONE, dtype=np.int8)
    separation = np.full(n_ref, np.nan)
    rejected = np.full(n_ref, np.nan)
    if connection.vendor == "postgresql" and n_ref:
        edges = _declination_zones(zone_stars or CROSSMATCH_ZONE_STARS)
        zone = np.clip(np.searchsorted(edges, ref_dec, side="right") - 1, 0, edges.size - 2)
        pad = max(radius, gaia_max) / 3600.0
        parts = [(np.flatnonzero(zone == k), "WHERE dec BETWEEN %s AND %s OR gaia_source_id = ANY(%s::bigint[])",
                  [float(edges[k] - pad), float(edges[k + 1] + pad)]) for k in range(edges.size - 1)]
    else:
        parts = [(np.arange(n_ref), "", [])]
    for rows, where, bounds in parts:
        if not rows.size:
            continue
        params = [*bounds, sorted({int(g) for g in ref_gaia[rows] if g > 0})] if where else []
        stars = _stars_positions(where, params)
        result = crossmatch(
            ref_gaia[rows], ref_ra[rows], ref_dec[rows], stars["gaia_source_id"], stars["ra"], stars["dec"],
            radius_arcsec=radius, gaia_max_arcsec=gaia_max,
        )
        matched = result.star_index >= 0
        star_id[rows[matched]] = stars["id"][result.star_index[matched]]
        method[rows] = result.method
        separation[rows] = result.separation_arcsec
        rejected[rows] = result.gaia_rejected_arcsec
    result = CrossMatch(star_id, method, separation, rejected)  # the zones' outcomes, for match_notes (star ids, not indices)
    return StarMatches(
        star_id=star_id,
        method=MATCH_METHOD_NAMES[method],
        separation_arcsec=separation,
        note=match_notes(result, radius, gaia_max),
        by_gaia=int(np.sum(method == MATCH_GAIA)),
        by_position=int(np.sum(method == MATCH_POSITION)),
        gaia_refused=int(np.sum(np.isfinite(rejected))),
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
