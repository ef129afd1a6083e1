"""Quality cuts of the reference surveys, as named functions (paper Sec. 6, Table 1).

Each takes the survey's raw flag columns (name -> (n,) array) and returns a (n,) bool
"clean" mask. Pure numpy; no Django. Registered in ``QUALITY_CUTS`` by name, which is
what a ReferenceSurvey records and what ``validate_release --no-quality-cut`` switches off.
"""

from collections.abc import Callable

import numpy as np

# APOGEE ASPCAPFLAG bit 23 is STAR_BAD: the ASPCAP fit is not to be trusted
# (https://www.sdss4.org/dr17/irspec/apogee-bitmasks/#APOGEE_ASPCAPFLAG).
APOGEE_ASPCAP_STAR_BAD = np.int64(1) << 23


def _column(flags: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
    if name not in flags:
        raise KeyError(f"the quality cut needs the flag column {name!r}")
    return np.asarray(flags[name]).reshape(n, -1)


def apogee_clean(flags: dict[str, np.ndarray], n: int) -> np.ndarray:
    """APOGEE DR14/DR17: STARFLAG = 0, no STAR_BAD in ASPCAPFLAG, PARAMFLAG all 0 (when given).

    Source: the paper's cut ("STARFLAG, ASPCAPFLAG, PARAMFLAG clean") and the APOGEE
    bitmask documentation above.
    """
    clean = (_column(flags, "STARFLAG", n) == 0).all(axis=1)
    clean &= ((_column(flags, "ASPCAPFLAG", n).astype(np.int64) & APOGEE_ASPCAP_STAR_BAD) == 0).all(axis=1)
    if "PARAMFLAG" in flags:
        clean &= (_column(flags, "PARAMFLAG", n) == 0).all(axis=1)
    return clean


def galah_dr2_clean(flags: dict[str, np.ndarray], n: int) -> np.ndarray:
    """GALAH DR2: flag_cannon = 0 (Buder et al. 2018; the paper's cut)."""
    return (_column(flags, "flag_cannon", n) == 0).all(axis=1)


def galah_dr3_clean(flags: dict[str, np.ndarray], n: int) -> np.ndarray:
    """GALAH DR3: flag_sp = 0 and flag_fe_h = 0 (Buder et al. 2021, recommended use)."""
    return (_column(flags, "flag_sp", n) == 0).all(axis=1) & (_column(flags, "flag_fe_h", n) == 0).all(axis=1)


def rave_clean(flags: dict[str, np.ndarray], n: int) -> np.ndarray:
    """RAVE DR5: Algo_Conv_K = 0, the stellar-parameter pipeline converged (the paper's cut)."""
    return (_column(flags, "Algo_Conv_K", n) == 0).all(axis=1)


def no_cut(flags: dict[str, np.ndarray], n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


QUALITY_CUTS: dict[str, Callable[[dict[str, np.ndarray], int], np.ndarray]] = {
    "apogee_clean": apogee_clean,
    "galah_dr2_clean": galah_dr2_clean,
    "galah_dr3_clean": galah_dr3_clean,
    "rave_clean": rave_clean,
    "none": no_cut,
}
