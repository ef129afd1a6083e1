"""Every threshold of the catalog, defined once.

The rule dataclasses hold the defaults (with their sources); settings carry only
overrides (``CATALOG_RULES``: the ``CATALOG_<FIELD>`` environment variables that are set),
and the flag texts of ``core.flags`` are rendered from the rules actually applied
(:func:`flag_thresholds`). Pure Python apart from :func:`catalog_rules_current`, which
reads Django's settings.
"""

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class CatalogRules:
    """Thresholds of the catalog rules (SPCANet paper, section 4), applied when a release
    is built; the release records them (``CatalogRelease.rules``)."""

    max_delta_teff: float = 120.0  # K: the two models must agree better than this
    max_delta_logg: float = 0.16  # dex
    max_delta_feh: float = 0.06  # dex
    teff_min: float = 3500.0  # K: outside [teff_min, teff_max] the network is unreliable
    teff_max: float = 8000.0
    abundance_teff_max: float = 6500.0  # K: hotter stars have no strong metal lines
    hot_metal_poor_teff: float = 7000.0  # K: warning zone, with [Fe/H] below the next value
    hot_metal_poor_feh: float = -1.0
    min_snr: float = 10.0  # both arms must exceed this (paper: S/N > 10)

    @classmethod
    def from_mapping(cls, values: dict) -> "CatalogRules":
        """The rules with ``values`` overriding the defaults; unknown names raise ValueError."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown catalog rule settings: {sorted(unknown)}")
        return cls(**{key: float(value) for key, value in values.items()})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class SpectrumRules:
    """Thresholds of the spectrum flags set by preprocessing (``PreprocessConfig`` takes
    its defaults from here). The S/N cut is the catalog's (one value, paper section 4)."""

    min_snr: float = CatalogRules.min_snr  # both arms must exceed this (LOW_SNR_BLUE/RED)
    max_masked_fraction: float = 0.2  # above this MANY_MASKED_PIXELS
    max_rv_error: float = 5.0  # km/s; above this, or arms disagreeing by more, RV_UNRELIABLE
    max_rv_arm_difference: float = 15.0  # km/s
    min_rv_peak: float = 0.3  # normalised correlation peak below which a measured RV is unreliable


@dataclass(frozen=True)
class LabelRules:
    """Thresholds of the label-set flags set at prediction."""

    # LARGE_UNCERTAINTY: an uncertainty above this many times the model's floor (its
    # uncertainty at high S/N) means the S/N term dominates: a faint spectrum.
    large_uncertainty_factor: float = 3.0


def env_overrides(cls, prefix: str, environ) -> dict[str, float]:
    """The fields of rule dataclass ``cls`` set in ``environ`` as ``<prefix><FIELD>``
    (upper case), as floats: the settings' overrides, never the defaults themselves.

    Raises ValueError when a set variable is not a number.
    """
    values = {}
    for field in fields(cls):
        name = f"{prefix}{field.name.upper()}"
        if name in environ:
            try:
                values[field.name] = float(environ[name])
            except ValueError:
                raise ValueError(f"{name}={environ[name]!r} is not a number") from None
    return values


def catalog_rules_current() -> CatalogRules:
    """The catalog rules with the settings' overrides (``CATALOG_RULES``)."""
    from django.conf import settings

    return CatalogRules.from_mapping(settings.CATALOG_RULES)


def flag_thresholds(
    catalog: CatalogRules | None = None, spectrum: SpectrumRules | None = None, label: LabelRules | None = None
) -> dict[str, object]:
    """What the flag texts' placeholders refer to: ``{catalog.max_delta_teff:g}`` and so on.

    ``catalog`` defaults to :class:`CatalogRules` (the defaults, as in ``docs/flags.md``);
    pass a release's rules to describe what that release applied.
    """
    return {"catalog": catalog or CatalogRules(), "spectrum": spectrum or SpectrumRules(), "label": label or LabelRules()}
