"""Access to ../shared/data: tests that need it skip with a reason when it is absent."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LAMOST_MRS = SHARED_DATA / "lamost_mrs"
JUNK_FILES = ("med-58268-HIP95119KP01_sp12-076.fits.gz", "med-58269-HIP95119KP01_sp12-076.fits.gz")


def real_files() -> list[Path]:
    if not LAMOST_MRS.is_dir():
        pytest.skip(f"real LAMOST MRS files not available ({LAMOST_MRS} is absent)")
    files = sorted(LAMOST_MRS.iterdir())
    if not files:
        pytest.skip(f"no files in {LAMOST_MRS}")
    return files


def real_file(name: str) -> Path:
    path = LAMOST_MRS / name
    if not path.exists():
        pytest.skip(f"real LAMOST MRS file {name} not available")
    return path
