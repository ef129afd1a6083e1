from pathlib import Path

import numpy as np
import pytest

from core.flags import CATALOG_FLAGS, SPECTRUM_FLAGS, FlagBit, FlagLevel, FlagWord, flags_markdown
from core.labels import ABUNDANCE_FIELDS, LABEL_FIELDS, LABELS
from inference.catalog_rules import CatalogRules, combine_models

ROOT = Path(__file__).resolve().parent.parent


def test_flag_word_rejects_duplicate_bits_and_names():
    with pytest.raises(ValueError):
        FlagWord("x", "", [FlagBit(0, "A", FlagLevel.INFO, ""), FlagBit(0, "B", FlagLevel.INFO, "")])
    with pytest.raises(ValueError):
        FlagWord("x", "", [FlagBit(0, "A", FlagLevel.INFO, ""), FlagBit(1, "A", FlagLevel.INFO, "")])
    with pytest.raises(ValueError):
        FlagWord("x", "", [FlagBit(63, "A", FlagLevel.INFO, "")])


def test_flag_masks_and_names_round_trip():
    mask = SPECTRUM_FLAGS.mask("LOW_SNR_RED", "RV_MEASURED")
    assert mask == (1 << 1) | (1 << 8)
    assert SPECTRUM_FLAGS.names(mask) == ["LOW_SNR_RED", "RV_MEASURED"]
    with pytest.raises(KeyError, match="unknown spectrum flag"):
        SPECTRUM_FLAGS.mask("NOPE")
    assert not CATALOG_FLAGS.reject_mask() & CATALOG_FLAGS.mask("HOT_STAR_NO_ABUNDANCES", "HOT_METAL_POOR")


def test_flag_docs_are_generated_from_the_definitions():
    committed = (ROOT / "docs" / "flags.md").read_text()
    assert committed == flags_markdown(), "docs/flags.md is stale: run python manage.py flags_doc"


def test_labels_follow_the_published_order():
    assert [label.column for label in LABELS] == [
        "Teff", "logg", "[Fe/H]", "[C/H]", "[N/H]", "[O/H]", "[Mg/H]", "[Al/H]", "[Si/H]",
        "[S/H]", "[Ca/H]", "[Ti/H]", "[Cr/H]", "[Ni/H]", "[Cu/H]",
    ]
    assert len(ABUNDANCE_FIELDS) == 13 and LABEL_FIELDS[:2] == ("teff", "logg")


def _combine(formal, alternate, snr=(50.0, 50.0), spectrum_flags=0, rules=None):
    formal = np.atleast_2d(np.asarray(formal, dtype=np.float64))
    alternate = np.atleast_2d(np.asarray(alternate, dtype=np.float64))
    n = formal.shape[0]
    return combine_models(
        formal, alternate, np.full_like(formal, 0.1), np.full(n, snr[0]), np.full(n, snr[1]),
        np.full(n, spectrum_flags, dtype=np.int64), rules or CatalogRules(),
    )


def _labels(teff=5000.0, logg=2.5, feh=-0.2):
    row = np.full(len(LABELS), feh)
    row[0], row[1] = teff, logg
    return row


def test_agreeing_models_give_a_good_row_with_the_formal_values():
    formal, alternate = _labels(), _labels(teff=5100.0, logg=2.6, feh=-0.17)
    result = _combine(formal, alternate)
    assert result.flag.tolist() == [1] and result.bits.tolist() == [0]
    np.testing.assert_array_equal(result.values[0], formal)


@pytest.mark.parametrize(
    ("alternate", "bit"),
    [
        (_labels(teff=5120.0), "MODELS_DISAGREE_TEFF"),
        (_labels(logg=2.66), "MODELS_DISAGREE_LOGG"),
        (_labels(feh=-0.26), "MODELS_DISAGREE_FEH"),
        (np.full(len(LABELS), np.nan), "MODELS_DISAGREE_TEFF"),
    ],
)
def test_disagreement_at_the_threshold_rejects(alternate, bit):
    result = _combine(_labels(), alternate)
    assert result.flag.tolist() == [0]
    assert bit in CATALOG_FLAGS.names(int(result.bits[0]))


def test_teff_range_hot_stars_and_the_warning_zone():
    formal = np.stack([_labels(teff=3400.0), _labels(teff=6600.0), _labels(teff=7200.0, feh=-1.2), _labels(teff=8100.0)])
    result = _combine(formal, formal)
    names = [CATALOG_FLAGS.names(int(b)) for b in result.bits]
    assert "TEFF_OUT_OF_RANGE" in names[0] and "TEFF_OUT_OF_RANGE" in names[3]
    assert names[1] == ["HOT_STAR_NO_ABUNDANCES"] and result.flag[1] == 1
    assert set(names[2]) == {"HOT_STAR_NO_ABUNDANCES", "HOT_METAL_POOR"}
    assert np.all(np.isnan(result.values[1:, 2:]))  # no value, never a sentinel
    np.testing.assert_array_equal(result.values[1:, :2], formal[1:, :2])  # Teff and log g stay
    assert np.all(np.isnan(result.errors[1:, 2:]))
    assert result.values[0, 2] == -0.2  # cool star keeps its abundances


def test_low_snr_and_flagged_spectra_are_rejected():
    low = _combine(_labels(), _labels(), snr=(50.0, 10.0))
    assert low.flag[0] == 0 and CATALOG_FLAGS.names(int(low.bits[0])) == ["LOW_SNR"]
    curated = _combine(_labels(), _labels(), spectrum_flags=SPECTRUM_FLAGS.mask("CURATOR_FLAGGED"))
    assert set(CATALOG_FLAGS.names(int(curated.bits[0]))) == {"SPECTRUM_FLAGGED", "CURATOR_FLAGGED"}
    warned = _combine(_labels(), _labels(), spectrum_flags=SPECTRUM_FLAGS.mask("RV_MEASURED"))
    assert warned.flag[0] == 1


def test_thresholds_are_settings():
    rules = CatalogRules.from_mapping({"max_delta_teff": 200.0})
    assert _combine(_labels(), _labels(teff=5150.0), rules=rules).flag[0] == 1
    with pytest.raises(ValueError, match="unknown catalog rule"):
        CatalogRules.from_mapping({"max_delta_tef": 1})


def test_settings_carry_only_the_overrides_of_the_rules():
    from core.rules import CatalogRules, env_overrides

    assert env_overrides(CatalogRules, "CATALOG_", {}) == {}
    assert env_overrides(CatalogRules, "CATALOG_", {"CATALOG_MAX_DELTA_TEFF": "150", "OTHER": "1"}) == {
        "max_delta_teff": 150.0
    }
    with pytest.raises(ValueError, match="CATALOG_MIN_SNR"):
        env_overrides(CatalogRules, "CATALOG_", {"CATALOG_MIN_SNR": "ten"})
    assert CatalogRules.from_mapping({"max_delta_teff": 150.0}) == CatalogRules(max_delta_teff=150.0)


def test_flag_texts_state_the_thresholds_of_the_rules_applied():
    from core.rules import CatalogRules, flag_thresholds

    flag = CATALOG_FLAGS["MODELS_DISAGREE_TEFF"]
    assert "(120 K)" in flag.meaning
    assert "(150 K)" in flag.meaning_for(flag_thresholds(catalog=CatalogRules(max_delta_teff=150.0)))
    assert CATALOG_FLAGS["LOW_SNR"].meaning_for(flag_thresholds(CatalogRules(min_snr=7.0))) == "S/N at or below 7 in an arm."
    for word in (SPECTRUM_FLAGS, CATALOG_FLAGS):
        for bit in word:
            assert "{" not in bit.meaning, bit.name


@pytest.mark.django_db
def test_a_release_and_the_flag_endpoint_describe_the_rules_they_apply(release_factory, settings):
    import io

    from astropy.io import fits
    from django.test import Client

    from .conftest import label_rows, make_spectra

    settings.CATALOG_RULES = {"max_delta_teff": 150.0}
    spectra = make_spectra([(10.0, 10.0)])
    release = release_factory(spectra, label_rows([5000.0]), label_rows([5130.0]))  # 130 K apart
    assert release.rules["max_delta_teff"] == 150.0 and release.good_count == 1
    response = Client().get(f"/api/v1/releases/{release.name}/export/", {"format": "fits"})
    with fits.open(io.BytesIO(b"".join(response.streaming_content))) as hdus:
        comments = " ".join(str(card) for card in hdus[1].header["COMMENT"])
    assert "by the threshold (150 K) or more" in comments and "(120 K)" not in comments
    flags = Client().get("/api/v1/flags/").json()
    teff_bit = next(b for b in flags["catalog"]["bits"] if b["name"] == "MODELS_DISAGREE_TEFF")
    assert "(150 K)" in teff_bit["meaning"]
