"""The README's "Opening a release" examples, run as written against a live server.

Only the address and the release name are swapped for the test's; the rest of each block
runs verbatim, and its results are checked (exact 19-digit Gaia ids, nulls, units).
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spectra.models import Star

from .conftest import label_rows, make_spectra

README = Path(__file__).resolve().parents[1] / "README.md"
README_ADDRESS = "http://127.0.0.1:8000"
README_RELEASE = "demo-1"
BIG_GAIA_ID = 1886955093649969280


def readme_blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text.split("## Opening a release", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def localised(block: str, live_server, release) -> str:
    return block.replace(README_ADDRESS, live_server.url).replace(README_RELEASE, release.name)


@pytest.fixture
def release(release_factory):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0)])
    Star.objects.filter(pk=spectra[0].star_id).update(gaia_source_id=BIG_GAIA_ID)
    Star.objects.filter(pk=spectra[1].star_id).update(gaia_source_id=None)
    return release_factory(spectra, label_rows([4800.0, 6700.0, 5000.0]), label_rows([4800.0, 6700.0, 5300.0]),
                           name="readme")


def run_python_block(language_index: int, live_server, release) -> dict:
    blocks = readme_blocks("python")
    namespace: dict = {}
    exec(compile(localised(blocks[language_index], live_server, release), "README.md", "exec"), namespace)
    return namespace


@pytest.mark.django_db(transaction=True)
def test_readme_astropy_example(live_server, release, capsys):
    namespace = run_python_block(0, live_server, release)
    table = namespace["table"]
    assert len(table) == 2  # flag=1: the cool star (Gaia id exact) and the hot one
    assert int(table["gaia_source_id"][0]) == BIG_GAIA_ID
    assert np.ma.is_masked(table["gaia_source_id"][1]) and np.ma.is_masked(table["fe_h"][1])
    assert str(table["teff"].unit) == "K"
    assert "1 rows without [Fe/H]" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_readme_pandas_example(live_server, release):
    namespace = run_python_block(1, live_server, release)
    for frame in (namespace["frame"], namespace["parquet"]):
        assert len(frame) == 2
        assert frame["gaia_source_id"].iloc[0] == BIG_GAIA_ID  # not 1886955093649969408
        assert str(frame["gaia_source_id"].dtype) == "Int64"
        assert frame["gaia_source_id"].isna().tolist() == [False, True]
        assert frame["fe_h"].isna().tolist() == [False, True]  # no -9999


@pytest.mark.skipif(shutil.which("stilts") is None, reason="STILTS is not installed (Debian package 'stilts')")
@pytest.mark.django_db(transaction=True)
def test_readme_stilts_example(live_server, release):
    (block,) = readme_blocks("bash")
    command = localised(block, live_server, release).replace("\\\n", " ")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "designation,gaia_source_id,teff,teff_err,fe_h"
    assert len(lines) == 2 and f",{BIG_GAIA_ID},4800" in lines[1]  # the hot star has no [Fe/H]


@pytest.mark.skipif(shutil.which("stilts") is None, reason="STILTS is not installed (Debian package 'stilts')")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["export.vot", "export.fits", "export.ecsv"])
def test_stilts_reads_the_typed_downloads(live_server, release, path):
    """What TOPCAT loads: STILTS (TOPCAT's engine) reads the VOTable, FITS and ECSV files
    with exact ids, nulls as nulls and the units and UCDs."""
    url = f"{live_server.url}/api/v1/releases/{release.name}/{path}?flag=1"
    fmt = {"export.ecsv": "ifmt=ecsv"}.get(path, "")
    done = subprocess.run(
        ["stilts", "tpipe", f"in={url}", *([fmt] if fmt else []), 'cmd=keepcols "gaia_source_id teff fe_h"',
         "omode=out", "ofmt=csv", "out=-"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == ["gaia_source_id,teff,fe_h", f"{BIG_GAIA_ID},4800.0,-0.2", ",6700.0,"]
    meta = subprocess.run(["stilts", "tpipe", f"in={url}", *([fmt] if fmt else []), "cmd=meta", "omode=out",
                           "ofmt=csv", "out=-"], capture_output=True, text=True, timeout=180).stdout
    teff = next(line for line in meta.splitlines() if ",teff," in line)
    assert ",K," in teff and "Effective temperature" in teff
    if path != "export.ecsv":  # ECSV keeps the UCD in the column's meta, which STILTS does not read as one
        assert "phys.temperature.effective" in teff
