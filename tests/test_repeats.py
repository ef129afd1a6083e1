"""Repeat spectra as a judge: the statistics, and the check on the real files."""

import numpy as np
import pytest

from inference.repeats import repeat_statistics

from .shared_data import real_files


def test_repeat_statistics_on_known_numbers():
    # Star 1: night 100 has a coadd and three exposures; night 200 a coadd and two exposures.
    star = np.array([1, 1, 1, 1, 1, 1, 1])
    night = np.array([100, 100, 100, 100, 200, 200, 200])
    coadd = np.array([True, False, False, False, True, False, False])
    teff = np.array([5144.0, 5180.0, 5190.0, 5200.0, 5300.0, 5290.0, 5310.0])
    sigma = np.array([40.0, 50.0, 50.0, 50.0, 40.0, 50.0, 50.0])
    (result,) = repeat_statistics(star, night, coadd, teff[:, None], sigma[:, None], ["teff"], np.full((7, 1), 0.5))
    s = result["labels"]["teff"]
    # Within-night scatter, pooled: squares about the night means 200 + 200, on 2 + 1 degrees of freedom.
    assert s["exposure_dof"] == 3
    assert s["exposure_scatter"] == pytest.approx(np.sqrt((200.0 + 200.0) / 3))
    assert s["exposure_ratio"] == pytest.approx(np.sqrt(400.0 / 3) / 50.0)
    assert s["exposure_noise_ratio"] == pytest.approx(np.sqrt(400.0 / 3) / 25.0)
    assert s["coadd_scatter"] == pytest.approx(np.std([5144.0, 5300.0], ddof=1))
    assert s["coadd_ratio"] == pytest.approx(np.std([5144.0, 5300.0], ddof=1) / 40.0)
    first, second = result["per_night"]
    # Coadd 5144 against its exposures' mean 5190 +- 50/sqrt(3): -46 K in sqrt(40^2 + 50^2/3) = 48.3 K.
    assert first["labels"]["teff"]["coadd_minus_exposures"] == pytest.approx(-46.0)
    assert first["labels"]["teff"]["coadd_z"] == pytest.approx(-46.0 / np.sqrt(40.0**2 + 50.0**2 / 3))
    # Night offsets from the coadds: 5144 vs 5300, 156 K in 40 x sqrt(2) = 56.6 K: 2.76 sigma, not flagged.
    assert first["labels"]["teff"]["offset"] == pytest.approx(-156.0)
    assert first["labels"]["teff"]["offset_z"] == pytest.approx(-156.0 / (40.0 * np.sqrt(2)))
    assert not first["labels"]["teff"]["flagged"] and not second["labels"]["teff"]["flagged"]
    # With smaller stated uncertainties the same offset is flagged on both nights.
    (tight,) = repeat_statistics(star, night, coadd, teff[:, None], sigma[:, None] / 2, ["teff"])
    assert all(n["labels"]["teff"]["flagged"] for n in tight["per_night"])
    assert np.isnan(tight["labels"]["teff"]["exposure_noise_ratio"])  # no noise share given


def test_repeat_statistics_reject_mismatched_shapes_and_skip_single_spectra():
    with pytest.raises(ValueError, match="values and errors"):
        repeat_statistics(np.array([1, 1]), np.array([1, 1]), np.array([False, False]), np.ones((2, 2)),
                          np.ones((2, 1)), ["teff"])
    assert repeat_statistics(np.array([1]), np.array([1]), np.array([True]), np.ones((1, 1)), np.ones((1, 1)),
                             ["teff"]) == []


@pytest.mark.django_db
def test_repeats_check_runs_on_the_real_files(settings, tmp_path, capsys):
    """The standing check's code path on the real files, with tiny models (the real figures
    come from the demo models: docs/network.md)."""
    from benchmarks.repeats_check import repeats_collect, repeats_print
    from spectra.processing.spectrum_model import SpectrumModelError
    from spectra.spectrum_model_files import rv_templates_load

    from .conftest import make_trained_models

    files = real_files()
    try:
        templates = rv_templates_load()
    except SpectrumModelError as error:
        pytest.skip(f"spectrum model not available for the RV templates: {error}")
    settings.SPECTRA_ARRAY_ROOT = tmp_path / "arrays"
    settings.MODEL_ARTIFACT_ROOT = tmp_path / "models"
    formal, alternate = make_trained_models(settings.MODEL_ARTIFACT_ROOT)
    results = repeats_collect(files, [formal.name, alternate.name], templates=templates)
    stars = results[formal.name]["stars"]
    # Three stars; the KIC star on five nights with exposures and coadds.
    assert len(stars) == 3
    kic = max(stars, key=lambda s: len(s["nights"]))
    assert len(kic["nights"]) >= 5 and kic["n_coadds"] >= 5 and kic["n_exposures"] > kic["n_coadds"]
    for name in ("teff", "logg", "fe_h"):
        figures = kic["labels"][name]
        assert figures["exposure_dof"] > 0 and figures["exposure_scatter"] >= 0 and figures["exposure_sigma"] > 0
        assert np.isfinite(figures["coadd_ratio"])
        assert all(np.isfinite(n["labels"][name]["offset_z"]) for n in kic["per_night"])
    repeats_print(results)
    printed = capsys.readouterr().out
    assert "exposures: scatter (dof)" in printed and "coadd-exp" in printed and "offset" in printed
    # The coadd of J230311's night against its seven exposures: the same wavelength
    # solution, so the RVs agree in both arms (the red one was 2.8 km/s off before the
    # template was normalised over the unmasked pixels).
    night = next(line for line in printed.splitlines() if "J230311" in line and "coadd minus" not in line and "7 exp" in line)
    offsets = [float(part.split("= ")[1].split(" ")[0]) for part in night.split(";")]
    assert len(offsets) == 2 and max(abs(o) for o in offsets) < 1.0, night
    # KIC 8098300's exposures of night 58649 move by up to 4.9 km/s in their raw pixels
    # (their lines move during the night): marked, while J230311's night is not.
    rv_lines = printed.split("RVs (km/s) per night")[1].split("===")[0].splitlines()
    assert "varies" in next(line for line in rv_lines if " 58649 " in line), rv_lines
    assert "varies" not in night, rv_lines
