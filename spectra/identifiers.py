"""LAMOST identifiers built from positions and observation facts. Pure Python/numpy."""

import numpy as np


def designations_from_radec(ra: np.ndarray, dec: np.ndarray) -> list[str]:
    """'LAMOST Jhhmmss.ss+ddmmss.s' for each position (J2000 degrees), truncated as IAU names are."""
    ra = np.mod(np.asarray(ra, dtype=np.float64), 360.0)
    dec = np.asarray(dec, dtype=np.float64)
    ra_centiseconds = np.floor(ra / 15.0 * 360000.0 + 1e-6).astype(np.int64)
    dec_deciarcsec = np.floor(np.abs(dec) * 36000.0 + 1e-6).astype(np.int64)
    hours, rem = np.divmod(ra_centiseconds, 360000)
    minutes, centiseconds = np.divmod(rem, 6000)
    degrees, rem = np.divmod(dec_deciarcsec, 36000)
    arcmin, deciarcsec = np.divmod(rem, 600)
    signs = np.where(dec < 0, "-", "+")
    return [
        f"LAMOST J{h:02d}{m:02d}{cs // 100:02d}.{cs % 100:02d}{sg}{d:02d}{am:02d}{ds // 10:02d}.{ds % 10:d}"
        for h, m, cs, sg, d, am, ds in zip(
            hours.tolist(), minutes.tolist(), centiseconds.tolist(), signs.tolist(),
            degrees.tolist(), arcmin.tolist(), deciarcsec.tolist(), strict=True,
        )
    ]


def medres_specid(*, date: str, plan_id: str, spectrograph: int, fiber: int, lmjm: int | None, pipeline: str) -> str:
    """Date-PlanID-SpectrographID-FiberID-LMJM-PipelineVersion (paper Table 2).

    A nightly coadd has no single exposure minute; its LMJM part is 'coadd'.
    """
    minute = "coadd" if lmjm is None else str(lmjm)
    return f"{date}-{plan_id}-{spectrograph:02d}-{fiber:03d}-{minute}-{pipeline}"


_MJD_EPOCH_ORDINAL = 678576  # date(1858, 11, 17).toordinal()


def night_date(mjd: int) -> str:
    """YYYYMMDD of the night whose header MJD is ``mjd`` (LAMOST's LMJD is MJD + 1).

    For the real file observed from 2018-10-16 20:31 local time: MJD 58407, LMJD 58408,
    night date 20181016.
    """
    from datetime import date

    return date.fromordinal(_MJD_EPOCH_ORDINAL + int(mjd)).strftime("%Y%m%d")


def pipeline_version(data_release: str) -> str:
    """'LAMOST DR7' -> 'DR7'; the pipeline tag of the medres_specid."""
    tokens = data_release.split()
    return tokens[-1] if tokens else "unknown"


def gaia_source_id_from_objname(objname: str) -> int | None:
    """OBJNAME holds a Gaia DR2 source_id for many MRS targets, other catalog ids for others.

    Only an all-digit name of 17 to 19 digits is taken as a Gaia source_id (the other
    catalogs seen in MRS files use dashes or 15-digit numbers); anything else gives None.
    """
    name = objname.strip()
    if name.isdigit() and 17 <= len(name) <= 19 and int(name) < 2**63:
        return int(name)
    return None
