"""Quality cuts of the reference surveys, each with the document it follows.

A cut is data for the one mechanism in ``spectra.refcat.quality``: per-row tests (a
failing row is left out), per-label tests (a failing label of a row is left out, the rest
of the row is kept) and the policy for a star listed twice. Only what a survey documents
as bad rejects anything; its informational and warning bits do not. Registered in
``QUALITY_CUTS`` by name, which is what a ReferenceSurvey records and what
``validate_release --no-quality-cut`` switches off. Pure; no Django.

Sources
-------
APOGEE DR17 bitmasks: https://www.sdss4.org/dr17/irspec/apogee-bitmasks/ (the page is
generated from the SDSS ``apogee`` package, ``python/apogee/utils/bitmask.py``, whose
``level`` lists mark the BAD bits used below: ``StarBitMask``, ``AspcapBitMask``,
``ParamBitMask`` (also the format of each ``X_FE_FLAG``/ELEMFLAG) and ``ExtratargBitMask``).
The DR14 format applies the same bit definitions (the bits used here keep their names and
positions in the DR14 allStar; checked against the DR17 definitions only).
GALAH DR3: https://www.galah-survey.org/dr3/flags/ ("only consider stars where flag_sp == 0
and flag_fe_h == 0 ... only consider X_fe where flag_X_fe == 0 and snr_c3_iraf > 30");
Buder et al. 2021, MNRAS 506, 150.
GALAH DR2: Buder et al. 2018, MNRAS 478, 4513 (flag_cannon = 0 for the stellar parameters,
flag_x_fe = 0 for each abundance).
RAVE DR5: Kunder et al. 2017, AJ 153, 75 (Algo_Conv_K = 0: the stellar-parameter pipeline
converged). Its chemical-pipeline abundances carry no per-label flag in this format.
"""

from spectra.refcat.quality import NO_CUT, DuplicatePolicy, FlagTest, LabelTest, QualityCut


def _bits(*positions: int) -> int:
    value = 0
    for position in positions:
        value |= 1 << position
    return value


# APOGEE_STARFLAG bits marked BAD: BAD_PIXELS (0, >20% bad pixels), VERY_BRIGHT_NEIGHBOR
# (3, neighbour >100x brighter: "possibly BAD"), BAD_RV_COMBINATION (18, RVs differ by ~10
# km/s: "potentially BAD"), RV_FAIL (22). Not rejecting: COMMISSIONING (1), BRIGHT_NEIGHBOR
# (2), LOW_SNR (4), PERSIST_* (9-13), SUSPECT_RV_COMBINATION (16), SUSPECT_BROAD_LINES (17),
# RV_REJECT / RV_SUSPECT (19, 20: a visit, not the star), MULTIPLE_SUSPECT (21),
# SUSPECT_ROTATION (23), MTPFLUX_LT_75 / _50 (24, 25): warnings.
APOGEE_STARFLAG_BAD = _bits(0, 3, 18, 22)
# APOGEE_ASPCAPFLAG star-level bits marked BAD: STAR_BAD (23), COLORTE_BAD (25),
# ROTATION_BAD (26), SPEC_HOLE_BAD (28), NO_ASPCAP_RESULT (31), MISSING_APSTAR (32), NO_GRID
# (33), BAD_FRAC_LOWSNR (34), BAD_FRAC_BADPIX (35), FERRE_FAIL (36), PROBLEM_TARGET (40),
# MULTIPLE_SUSPECT (41). The *_WARN bits (0-14) and CHI2_BAD, SN_BAD, VSINI_BAD (not marked
# BAD) do not reject. TEFF_BAD (16) and LOGG_BAD (17) are about one label: per-label below.
APOGEE_ASPCAP_STAR_BAD = _bits(23)
APOGEE_ASPCAPFLAG_BAD = _bits(23, 25, 26, 28, 31, 32, 33, 34, 35, 36, 40, 41)
APOGEE_ASPCAP_TEFF_BAD = _bits(16)
APOGEE_ASPCAP_LOGG_BAD = _bits(17)
# APOGEE_PARAMFLAG / ELEMFLAG bits marked BAD: GRIDEDGE_BAD (0), OTHER_BAD (2), FERRE_FAIL
# (3), TEFF_CUT (6). Not rejecting (not marked BAD): CALRANGE_BAD (1; DR17 leaves the
# calibrated value empty outside the calibration range anyway), PARAM_MISMATCH_BAD (4),
# FERRE_ERR_USED (5), every *_WARN (8-15), PARAM_FIXED (16), RV_WARN (17), SPEC_RC / SPEC_RGB
# (24, 25) and the DR16 LOGG_CAL_* bits (26, 27): information.
APOGEE_PARAMFLAG_BAD = _bits(0, 2, 3, 6)
# EXTRATARG bit 4, DUPLICATE: "non-primary (not highest S/N) duplicate" of an APOGEE_ID
# observed in another field. NOT_MAIN (0), COMMISSIONING (1), TELLURIC (2), APO1M (3) are not.
APOGEE_EXTRATARG_DUPLICATE = _bits(4)

_APOGEE_DOC = "SDSS DR17 APOGEE bitmasks (sdss4.org/dr17/irspec/apogee-bitmasks)"

APOGEE = QualityCut(
    name="apogee_clean",
    source=_APOGEE_DOC,
    rows=(
        FlagTest("ASPCAPFLAG", "ASPCAPFLAG bad bits", bits=APOGEE_ASPCAPFLAG_BAD),
        FlagTest("STARFLAG", "STARFLAG bad bits", bits=APOGEE_STARFLAG_BAD),
    ),
    labels=(
        # PARAMFLAG[0] is Teff, PARAMFLAG[1] log g (ASPCAPFLAG TEFF_WARN: "see PARAMFLAG[0]").
        LabelTest(FlagTest("PARAMFLAG", "PARAMFLAG[0] bad bits", bits=APOGEE_PARAMFLAG_BAD, index=0, required=False),
                  fields=("teff",)),
        LabelTest(FlagTest("PARAMFLAG", "PARAMFLAG[1] bad bits", bits=APOGEE_PARAMFLAG_BAD, index=1, required=False),
                  fields=("logg",)),
        LabelTest(FlagTest("ASPCAPFLAG", "TEFF_BAD", bits=APOGEE_ASPCAP_TEFF_BAD), fields=("teff",)),
        LabelTest(FlagTest("ASPCAPFLAG", "LOGG_BAD", bits=APOGEE_ASPCAP_LOGG_BAD), fields=("logg",)),
        # Each abundance's own ELEMFLAG: FE_H_FLAG, MG_FE_FLAG, ...
        LabelTest(FlagTest("{column}_FLAG", "element flag bad bits", bits=APOGEE_PARAMFLAG_BAD, required=False),
                  kinds=("x_fe", "x_h")),
        LabelTest(FlagTest("{column}_FLAG", "element flag bad bits", bits=APOGEE_PARAMFLAG_BAD, required=False),
                  fields=("fe_h",)),
    ),
    duplicates=DuplicatePolicy("EXTRATARG", APOGEE_EXTRATARG_DUPLICATE, "SNR", source=_APOGEE_DOC),
)

GALAH_DR3 = QualityCut(
    name="galah_dr3_clean",
    source="GALAH DR3 flags (galah-survey.org/dr3/flags); Buder et al. 2021",
    rows=(FlagTest("flag_sp", "flag_sp"), FlagTest("flag_fe_h", "flag_fe_h")),
    labels=(
        LabelTest(FlagTest("flag_{column}", "flag_X_fe", required=False), kinds=("x_fe",)),
        LabelTest(FlagTest("snr_c3_iraf", "snr_c3_iraf <= 30", above=30.0, required=False), kinds=("x_fe",)),
    ),
)

GALAH_DR2 = QualityCut(
    name="galah_dr2_clean",
    source="GALAH DR2, Buder et al. 2018",
    rows=(FlagTest("flag_cannon", "flag_cannon"),),
    labels=(LabelTest(FlagTest("flag_{column}", "flag_x_fe", required=False), kinds=("x_fe",)),),
)

RAVE_DR5 = QualityCut(
    name="rave_clean",
    source="RAVE DR5, Kunder et al. 2017",
    rows=(FlagTest("Algo_Conv_K", "Algo_Conv_K"),),
)

QUALITY_CUTS: dict[str, QualityCut] = {cut.name: cut for cut in (APOGEE, GALAH_DR2, GALAH_DR3, RAVE_DR5, NO_CUT)}
