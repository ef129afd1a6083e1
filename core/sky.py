"""Cone search as a database filter: an indexable box, then the exact great circle.

The box (a declination band, and a right-ascension interval split in two where it
crosses RA 0/360, dropped altogether where the cone reaches a pole) lets the database use
its (dec, ra) index; the exact test ``cos(separation) >= cos(radius)`` then keeps only
the rows truly inside.
"""

import math

from django.db.models import F, FloatField, Q, Value
from django.db.models.functions import Cos, Radians, Sin


def cone_box(ra: float, dec: float, radius: float):
    """The smallest (dec, RA) box holding the cone around (ra, dec), all in degrees.

    Pure arithmetic, shared by the ORM filter below and the SQL of the TAP service
    (vo/adql.py).

    Parameters
    ----------
    ra : float
        Right ascension of the centre, degrees, in [0, 360).
    dec : float
        Declination of the centre, degrees, in [-90, 90].
    radius : float
        Cone radius, degrees, > 0.

    Returns
    -------
    dec_range : tuple of (float, float)
        ``(dec_low, dec_high)``, degrees; may pass beyond +-90 where the cone reaches a pole.
    ra_ranges : list of (float, float) or None
        One or two closed (low, high) RA intervals, degrees (two where the box crosses
        RA 0/360), or None where the cone reaches a pole or spans every RA.

    Raises
    ------
    ValueError
        If ra, dec or radius is outside the ranges above.
    """
    if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0 and radius > 0.0):
        raise ValueError("cone needs 0 <= ra < 360, -90 <= dec <= 90 and radius > 0")
    dec_low, dec_high = dec - radius, dec + radius
    if not (dec_high < 90.0 and dec_low > -90.0):
        return (dec_low, dec_high), None
    # Half-width in RA of the smallest interval containing the cone.
    ratio = math.sin(math.radians(radius)) / math.cos(math.radians(dec))
    half_width = 180.0 if ratio >= 1.0 else math.degrees(math.asin(ratio))
    if half_width >= 180.0:
        return (dec_low, dec_high), None
    low, high = ra - half_width, ra + half_width
    if low < 0.0:
        return (dec_low, dec_high), [(low + 360.0, 360.0), (0.0, high)]
    if high >= 360.0:
        return (dec_low, dec_high), [(low, 360.0), (0.0, high - 360.0)]
    return (dec_low, dec_high), [(low, high)]


def cone_filter(ra: float, dec: float, radius: float, *, ra_field: str = "ra", dec_field: str = "dec"):
    """The parts of a cone filter around (ra, dec), all in degrees.

    Returns ``(box, cos_separation, exact)``: a Q for the indexable box, the expression of
    the cosine of the angular separation, and a Q testing it (on the alias
    ``_cone_cos_separation``) against the cosine of the radius.
    """
    (dec_low, dec_high), ra_ranges = cone_box(ra, dec, radius)
    box = Q(**{f"{dec_field}__gte": dec_low, f"{dec_field}__lte": dec_high})
    if ra_ranges is not None:
        ra_q = Q()
        for low, high in ra_ranges:
            ra_q |= Q(**{f"{ra_field}__gte": low, f"{ra_field}__lte": high})
        box &= ra_q
    dec0, ra0 = math.radians(dec), math.radians(ra)
    cos_separation = Sin(Radians(F(dec_field))) * Value(math.sin(dec0)) + Cos(
        Radians(F(dec_field))
    ) * Value(math.cos(dec0)) * Cos(Radians(F(ra_field)) - Value(ra0))
    exact = Q(
        _cone_cos_separation__gte=Value(math.cos(math.radians(radius)), output_field=FloatField())
    )
    return box, cos_separation, exact


def apply_cone(queryset, ra: float, dec: float, radius: float, *, ra_field="ra", dec_field="dec"):
    box, cos_separation, exact = cone_filter(ra, dec, radius, ra_field=ra_field, dec_field=dec_field)
    return queryset.filter(box).alias(_cone_cos_separation=cos_separation).filter(exact)
