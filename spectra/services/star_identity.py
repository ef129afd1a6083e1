"""Star identity under concurrency: one Star row per object, whatever runs at once.

Identity is positional (within ``STAR_MATCH_RADIUS_ARCSEC``), so no unique constraint can
hold it. Instead, whoever matches and creates stars first takes a transaction-level
PostgreSQL advisory lock on every sky cell its positions touch; a concurrent ingest of
the same part of the sky waits for the first to commit and then finds its stars. Ingests
of other parts of the sky do not wait. SQLite has one writer at a time and needs no lock.

``stars_merge_duplicates`` repairs a catalog that already has duplicate stars.
"""

import astropy.units as u
import numpy as np
from django.db import connection, transaction

from ..models import Spectrum, Star

# Cell size of the locks, degrees: a plan's field (~2.5 deg wide) touches a few dozen cells.
LOCK_CELL_DEG = 1.0
# First key of the two-key advisory lock: names the star-identity lock space.
_LOCK_SPACE = 0x5354  # "ST"


def sky_cells(ra: np.ndarray, dec: np.ndarray, radius_deg: float) -> np.ndarray:
    """The lock cells within ``radius_deg`` of each position, as sorted unique int32 keys.

    Parameters
    ----------
    ra, dec : (n,) float64
        Positions, degrees (ICRS).
    radius_deg : float
        Match radius, degrees; each position's box of this half-width is covered.

    Returns
    -------
    (k,) int32
        Cell numbers ``dec_cell * 360 + ra_cell`` on a ``LOCK_CELL_DEG`` grid, sorted, so
        that every process takes its locks in the same order (no deadlock).
    """
    ra = np.asarray(ra, dtype=np.float64) % 360.0
    dec = np.asarray(dec, dtype=np.float64)
    # At the poles an RA box spans everything: widen it by 1/cos(dec), capped.
    ra_pad = radius_deg / np.maximum(np.cos(np.radians(np.minimum(np.abs(dec) + radius_deg, 89.9))), 1e-3)
    cells = []
    for d_ra in (-1.0, 1.0):
        for d_dec in (-1.0, 1.0):
            ra_cell = np.floor(((ra + d_ra * ra_pad) % 360.0) / LOCK_CELL_DEG).astype(np.int64)
            dec_cell = np.floor((np.clip(dec + d_dec * radius_deg, -90.0, 90.0) + 90.0) / LOCK_CELL_DEG).astype(np.int64)
            cells.append(dec_cell * 360 + ra_cell)
    return np.unique(np.concatenate(cells)).astype(np.int32)


def sky_cells_lock(ra: np.ndarray, dec: np.ndarray, radius_deg: float) -> None:
    """Take the advisory locks of the cells around these positions until the transaction ends.

    Must run inside a transaction (``transaction.atomic``); does nothing on SQLite.
    """
    if connection.vendor != "postgresql" or len(ra) == 0:
        return
    if not connection.in_atomic_block:
        raise RuntimeError("sky_cells_lock must run inside a transaction")
    keys = sky_cells(ra, dec, radius_deg).tolist()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k) AS locked",
            [_LOCK_SPACE, keys],
        )


def stars_merge_duplicates(*, radius_arcsec: float, dry_run: bool = False, band_deg: float = 1.0) -> dict[str, int]:
    """Merge stars closer than ``radius_arcsec`` into the oldest of them.

    Spectra and reference-survey matches move to the kept star, which takes a Gaia id from
    a merged one when it has none; the merged stars are deleted. Works band by band in
    declination (with overlap), so memory stays bounded on a large catalog.

    Returns
    -------
    dict
        ``groups`` (sets of duplicates found), ``stars_removed``, ``spectra_moved``.
    """
    from astropy.coordinates import SkyCoord, search_around_sky  # imported when merging, not with the site

    from inference.models import CatalogRelease, ReferenceLabel
    from inference.partitions import release_build_xact_locks
    from inference.services.release import catalog_stars_follow_merge
    from validation.models import ReferenceStar

    radius = radius_arcsec * u.arcsec
    pad = radius.to_value(u.deg)
    bounds = Star.objects.order_by().values_list("dec", flat=True)
    if not bounds.exists():
        return {"groups": 0, "stars_removed": 0, "spectra_moved": 0}
    low, high = min(bounds), max(bounds)
    keep_of: dict[int, int] = {}
    start = np.floor(low)
    while start <= high:
        rows = np.array(
            Star.objects.filter(dec__gte=start - pad, dec__lt=start + band_deg + pad).order_by("id").values_list("id", "ra", "dec"),
            dtype=np.float64,
        ).reshape(-1, 3)
        start += band_deg
        if rows.shape[0] < 2:
            continue
        coordinates = SkyCoord(rows[:, 1] * u.deg, rows[:, 2] * u.deg)
        first, second, _, _ = search_around_sky(coordinates, coordinates, radius)
        pairs = first < second
        for a, b in zip(rows[first[pairs], 0].astype(np.int64).tolist(), rows[second[pairs], 0].astype(np.int64).tolist(), strict=True):
            root_a, root_b = _root(keep_of, a), _root(keep_of, b)
            if root_a != root_b:
                keep_of[max(root_a, root_b)] = min(root_a, root_b)
    merged = {star: _root(keep_of, star) for star in keep_of}
    summary = {"groups": len(set(merged.values())), "stars_removed": len(merged), "spectra_moved": 0}
    if dry_run or not merged:
        summary["spectra_moved"] = Spectrum.objects.filter(star_id__in=list(merged)).count()
        return summary
    # The draft releases' builds are waited for first in the transaction: moving spectra and
    # then waiting for a build (the star tables follow the merge) would hold the spectra its
    # key checks wait for. Their ids are read before it: a read of the release table in it
    # would hold what the build's swap needs.
    drafts = list(CatalogRelease.objects.exclude(status=CatalogRelease.Status.PUBLISHED).values_list("pk", flat=True))
    with transaction.atomic():
        release_build_xact_locks(drafts)
        for duplicate, kept in merged.items():
            summary["spectra_moved"] += Spectrum.objects.filter(star_id=duplicate).update(star_id=kept)
            ReferenceStar.objects.filter(star_id=duplicate).update(star_id=kept)
            ReferenceLabel.objects.filter(star_id=duplicate).update(star_id=kept)
            gaia = Star.objects.filter(pk=duplicate).values_list("gaia_source_id", flat=True).first()
            if gaia is not None:
                Star.objects.filter(pk=kept, gaia_source_id__isnull=True).update(gaia_source_id=gaia)
        catalog_stars_follow_merge(merged=merged)  # the releases' star tables follow
        Star.objects.filter(pk__in=list(merged)).delete()
    return summary


def _root(parent: dict[int, int], star: int) -> int:
    while star in parent:
        star = parent[star]
    return star
