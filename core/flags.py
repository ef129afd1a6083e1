"""Every flag bit of the catalog, defined once.

Three flag words exist: one per spectrum (what ingest and preprocessing found), one per
label set (what one model's prediction found) and one per catalog entry (why a published
row is or is not good). The admin filters, the API's filters and schema, the export's
header comments and ``docs/flags.md`` are all generated from these definitions.

Bits are never renumbered once released: add new bits at the next free position.
Pure Python, no Django imports.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from .rules import flag_thresholds


class FlagLevel(StrEnum):
    """How serious a set bit is."""

    INFO = "info"  # a fact worth knowing; the values are still trusted
    WARNING = "warning"  # the values are usable with care
    REJECT = "reject"  # the values are not trusted; a good catalog row never has it


@dataclass(frozen=True)
class FlagBit:
    """One bit. ``template`` states the bit's meaning; its placeholders name the threshold
    that sets it (``{catalog.max_delta_teff:g}``: see ``core.rules.flag_thresholds``), so
    the text always states the rule applied, never a copy of its number."""

    bit: int
    name: str
    level: FlagLevel
    template: str

    @property
    def mask(self) -> int:
        return 1 << self.bit

    def meaning_for(self, thresholds: dict) -> str:
        """The meaning with the thresholds of ``thresholds`` (``core.rules.flag_thresholds``)."""
        return self.template.format_map(thresholds)

    @property
    def meaning(self) -> str:
        """The meaning under the default rules."""
        return self.meaning_for(flag_thresholds())


class FlagWord:
    """An ordered, validated set of bits stored in one 64-bit integer column."""

    # Bits 0..62: the column is a signed 64-bit integer.
    MAX_BIT = 62

    def __init__(self, name: str, description: str, bits: Iterable[FlagBit]):
        self.name = name
        self.description = description
        self.bits: tuple[FlagBit, ...] = tuple(sorted(bits, key=lambda flag: flag.bit))
        seen_bits: set[int] = set()
        seen_names: set[str] = set()
        for flag in self.bits:
            if not 0 <= flag.bit <= self.MAX_BIT:
                raise ValueError(f"{name}: bit {flag.bit} of {flag.name} is out of range")
            if flag.bit in seen_bits or flag.name in seen_names:
                raise ValueError(f"{name}: bit {flag.bit} / name {flag.name} defined twice")
            seen_bits.add(flag.bit)
            seen_names.add(flag.name)
        self._by_name = {flag.name: flag for flag in self.bits}

    def __iter__(self) -> Iterator[FlagBit]:
        return iter(self.bits)

    def __getitem__(self, name: str) -> FlagBit:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name)
            raise KeyError(f"unknown {self.name} flag {name!r}; known flags: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def mask(self, *names: str) -> int:
        """The integer with the named bits set."""
        value = 0
        for name in names:
            value |= self[name].mask
        return value

    def names(self, value: int) -> list[str]:
        """Names of the bits set in ``value``, in bit order."""
        return [flag.name for flag in self.bits if value & flag.mask]

    def reject_mask(self) -> int:
        return self.mask(*(flag.name for flag in self.bits if flag.level is FlagLevel.REJECT))

    def help_text(self) -> str:
        """One line per bit, for schema descriptions and form help."""
        return "; ".join(f"{flag.name} (bit {flag.bit}, {flag.level.value})" for flag in self)


SPECTRUM_FLAGS = FlagWord(
    "spectrum",
    "What reading and preprocessing found about one spectrum.",
    [
        FlagBit(0, "LOW_SNR_BLUE", FlagLevel.REJECT, "Blue-arm S/N is at or below the processing threshold ({spectrum.min_snr:g})."),
        FlagBit(1, "LOW_SNR_RED", FlagLevel.REJECT, "Red-arm S/N is at or below the processing threshold ({spectrum.min_snr:g})."),
        FlagBit(2, "BAD_FLUX", FlagLevel.REJECT, "Median flux of an arm is not positive: no usable signal."),
        FlagBit(3, "MISSING_BLUE_ARM", FlagLevel.REJECT, "The file has no usable blue-arm table for this spectrum."),
        FlagBit(4, "MISSING_RED_ARM", FlagLevel.REJECT, "The file has no usable red-arm table for this spectrum."),
        FlagBit(5, "NONFINITE_VALUES", FlagLevel.WARNING, "NaN, infinite or negative flux or inverse variance were found and masked."),
        FlagBit(6, "WAVELENGTH_COVERAGE", FlagLevel.REJECT, "The arm does not cover its MRS window; the resampled grid would be mostly empty."),
        FlagBit(7, "MANY_MASKED_PIXELS", FlagLevel.WARNING, "More than {spectrum.max_masked_fraction:.0%} of the resampled pixels of an arm are masked."),
        FlagBit(8, "RV_MEASURED", FlagLevel.INFO, "Radial velocity measured by cross-correlation, not taken from an input catalog."),
        FlagBit(9, "RV_UNRELIABLE", FlagLevel.WARNING, "Cross-correlation RV has an uncertainty above {spectrum.max_rv_error:g} km/s, arms that disagree by more than {spectrum.max_rv_arm_difference:g} km/s, or a correlation peak below {spectrum.min_rv_peak:g}."),
        FlagBit(10, "CONTINUUM_FIT_POOR", FlagLevel.WARNING, "The continuum fit kept too few pixels after rejection."),
        FlagBit(11, "CURATOR_FLAGGED", FlagLevel.REJECT, "A curator marked the spectrum bad; the reason is in the curation log."),
        FlagBit(12, "ZERO_FLUX_MASKED", FlagLevel.INFO, "Pixels of flux exactly 0 with a positive inverse variance and no mask bit (junk, seen in blocks in LAMOST coadds) were masked."),
        FlagBit(13, "COADD_MASK_FILLED", FlagLevel.INFO, "Pixels the coadd masks were filled from the same file's exposures (their clipped, inverse-variance-weighted mean, scaled to the coadd's level); LAMOST's coadd pixels are kept wherever it has them, unless the preprocessing is set to replace those far off the exposures (coadd_replace_sigma, off by default)."),
    ],
)

LABEL_FLAGS = FlagWord(
    "labelset",
    "What one model's prediction for one spectrum found.",
    [
        FlagBit(0, "OUTSIDE_TRAINING_RANGE", FlagLevel.WARNING, "A label lies outside the range of the training labels (extrapolation)."),
        FlagBit(1, "LARGE_UNCERTAINTY", FlagLevel.WARNING, "A label's uncertainty exceeds {label.large_uncertainty_factor:g} times the model's floor (its uncertainty at high S/N): a faint spectrum."),
        FlagBit(2, "INPUT_FLAGGED", FlagLevel.WARNING, "The spectrum carried a REJECT spectrum flag when it was predicted."),
    ],
)

CATALOG_FLAGS = FlagWord(
    "catalog",
    "Why a published catalog row is good (Flag = 1) or not (Flag = 0).",
    [
        FlagBit(0, "MODELS_DISAGREE_TEFF", FlagLevel.REJECT, "Formal and alternate models differ in Teff by the threshold ({catalog.max_delta_teff:g} K) or more."),
        FlagBit(1, "MODELS_DISAGREE_LOGG", FlagLevel.REJECT, "Formal and alternate models differ in log g by the threshold ({catalog.max_delta_logg:g} dex) or more."),
        FlagBit(2, "MODELS_DISAGREE_FEH", FlagLevel.REJECT, "Formal and alternate models differ in [Fe/H] by the threshold ({catalog.max_delta_feh:g} dex) or more."),
        FlagBit(3, "TEFF_OUT_OF_RANGE", FlagLevel.REJECT, "Teff is outside {catalog.teff_min:g}-{catalog.teff_max:g} K, where the network is not reliable."),
        FlagBit(4, "HOT_STAR_NO_ABUNDANCES", FlagLevel.INFO, "Teff above {catalog.abundance_teff_max:g} K: the 13 abundances and their uncertainties are null (no value)."),
        FlagBit(5, "HOT_METAL_POOR", FlagLevel.WARNING, "Teff above {catalog.hot_metal_poor_teff:g} K together with [Fe/H] below {catalog.hot_metal_poor_feh:g}: a known problem zone."),
        FlagBit(6, "LOW_SNR", FlagLevel.REJECT, "S/N at or below {catalog.min_snr:g} in an arm."),
        FlagBit(7, "SPECTRUM_FLAGGED", FlagLevel.REJECT, "The spectrum carries a REJECT spectrum flag."),
        FlagBit(8, "CURATOR_FLAGGED", FlagLevel.REJECT, "A curator marked the row bad; the reason is in the curation log."),
    ],
)

FLAG_WORDS: tuple[FlagWord, ...] = (SPECTRUM_FLAGS, LABEL_FLAGS, CATALOG_FLAGS)


def flags_markdown(thresholds: dict | None = None) -> str:
    """The flag reference as Markdown (written to docs/flags.md, under the default rules)."""
    thresholds = thresholds or flag_thresholds()
    lines = [
        "# Flag bits",
        "",
        "Generated from `core/flags.py` by `python manage.py flags_doc`; do not edit.",
        "",
        "Levels: `info` (a fact; values trusted), `warning` (usable with care), "
        "`reject` (not trusted; a row with Flag = 1 never carries one).",
    ]
    for word in FLAG_WORDS:
        lines += ["", f"## {word.name}", "", word.description, "", "| bit | value | name | level | meaning |", "|---|---|---|---|---|"]
        lines += [
            f"| {flag.bit} | {flag.mask} | `{flag.name}` | {flag.level.value} | {flag.meaning_for(thresholds)} |"
            for flag in word
        ]
    return "\n".join(lines) + "\n"
