"""Match the stored rows of a reference catalog to our stars; write only the changed rows.

Used for training labels (``ReferenceLabel``) and validation surveys (``ReferenceStar``)
alike: both have ``gaia_source_id``, ``ra``, ``dec``, ``star``, ``match_method``,
``match_separation_arcsec`` and ``match_note``.
"""

from dataclasses import dataclass

import numpy as np
from django.db import connection, transaction
from django.db.models import QuerySet

from spectra.selectors import stars_crossmatch

_UPDATE_BATCH = 10_000


@dataclass(frozen=True)
class MatchSummary:
    matched: int
    by_gaia: int
    by_position: int
    gaia_refused: int  # rows whose Gaia-id partner was too far away (they fell back to position)
    changed: int  # rows written

    def as_dict(self) -> dict[str, int]:
        return {"matched": self.matched, "by_gaia": self.by_gaia, "by_position": self.by_position,
                "gaia_refused": self.gaia_refused, "changed": self.changed}


def reference_rows_match(*, rows: QuerySet) -> MatchSummary:
    """(Re)match the reference rows in ``rows`` to the stars now in the database.

    The match is recomputed in memory every time (stars may have been added) and only the
    rows whose star, method, separation or note changed are written, one
    ``UPDATE ... FROM (VALUES ...)`` per batch.
    """
    refs = list(rows.order_by("id").values_list(
        "id", "gaia_source_id", "ra", "dec", "star_id", "match_method", "match_separation_arcsec", "match_note"))
    ids, gaia, ra, dec, old_star, old_method, old_separation, old_note = (
        (list(c) for c in zip(*refs, strict=True)) if refs else ([],) * 8)
    matches = stars_crossmatch(gaia=gaia, ra=np.asarray(ra, dtype=np.float64), dec=np.asarray(dec, dtype=np.float64))
    old_star = np.array([-1 if s is None else s for s in old_star], dtype=np.int64)
    old_separation = np.array([np.nan if s is None else s for s in old_separation], dtype=np.float64)
    same_separation = np.isclose(old_separation, matches.separation_arcsec, rtol=0, atol=1e-6) | (
        np.isnan(old_separation) & np.isnan(matches.separation_arcsec))
    changed = ((old_star != matches.star_id) | (np.asarray(old_method, dtype=object) != matches.method)
               | ~same_separation | (np.asarray(old_note, dtype=object) != matches.note))
    chosen = np.flatnonzero(changed)
    with transaction.atomic():
        _matches_write(
            rows.model, np.asarray(ids, dtype=np.int64)[chosen],
            [int(s) if s >= 0 else None for s in matches.star_id[chosen].tolist()],
            matches.method[chosen].tolist(),
            [None if np.isnan(s) else float(s) for s in matches.separation_arcsec[chosen].tolist()],
            matches.note[chosen].tolist(),
        )
    return MatchSummary(matched=int(matches.matched.sum()), by_gaia=matches.by_gaia, by_position=matches.by_position,
                        gaia_refused=matches.gaia_refused, changed=int(chosen.size))


def _matches_write(model, ref_ids: np.ndarray, star_ids: list, methods: list, separations: list, notes: list) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    rows = list(zip(ref_ids.tolist(), star_ids, methods, separations, notes, strict=True))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _UPDATE_BATCH):
            batch = rows[start : start + _UPDATE_BATCH]
            if connection.vendor == "postgresql":
                placeholders = ", ".join(["(%s, %s, %s, %s, %s)"] * len(batch))
                cursor.execute(
                    f"UPDATE {table} AS r SET star_id = v.star_id::bigint, match_method = v.method::text, "
                    f"match_separation_arcsec = v.sep::double precision, match_note = v.note::text "
                    f"FROM (VALUES {placeholders}) AS v(id, star_id, method, sep, note) WHERE r.id = v.id::bigint",
                    [value for row in batch for value in row])
            else:
                for ref_id, star_id, method, separation, note in batch:
                    cursor.execute(f"UPDATE {table} SET star_id = %s, match_method = %s, match_separation_arcsec = %s, "
                                   f"match_note = %s WHERE id = %s", [star_id, method, separation, note, ref_id])
