"""One description of a reference catalog's layout, read from either mapping dialect.

Training labels and validation surveys were described by two mapping dialects; both are
still accepted and become one ``CatalogFormat``:

* the survey dialect (``validation``): ``survey``, ``data_release``, ``id_column``,
  ``ra_column``, ``dec_column``, ``gaia_column``, ``labels {field: [column, direct|x_h|x_fe]}``,
  ``flag_columns``, ``quality_cut`` (a named cut), ``sentinels``;
* the training-label dialect (``inference``): ``id``, ``ra``, ``dec``, ``gaia_source_id``,
  ``labels {field: column}`` (values as given: Teff, log g, [X/H]; ``[column, kind]`` as in
  the survey dialect also works), ``quality {column, good}`` (or ``quality_cut``, a named cut),
  ``errors``.

The training-label dialect's ``errors {field: column}`` names the column of each label's
1-sigma error, in the label's own convention (the error of [X/Fe] for a label given as
[X/Fe]); the noise model takes them out of its residuals. Validation does not use a
survey's errors, so the survey dialect has no such key.

Pure; no Django.
"""

from dataclasses import dataclass, field

from core.labels import LABEL_FIELDS

from .quality import NO_CUT, FlagTest, QualityCut

LABEL_KINDS = ("direct", "x_h", "x_fe")
DEFAULT_SENTINELS = (-9999.0, -9999.99)


class CatalogFormatError(ValueError):
    """A column mapping that cannot describe a catalog."""


@dataclass(frozen=True)
class CatalogFormat:
    survey: str
    data_release: str
    id_column: str
    ra_column: str
    dec_column: str
    gaia_column: str | None
    labels: dict[str, tuple[str, str]]  # our field -> (source column, "direct" | "x_h" | "x_fe")
    quality: QualityCut = NO_CUT
    record_columns: tuple[str, ...] = ()  # further raw flag columns kept with each row
    sentinels: tuple[float, ...] = DEFAULT_SENTINELS
    labels_required: bool = False  # a missing label column is an error (training) or that label is absent (surveys)
    errors: dict[str, str] = field(default_factory=dict)  # our field -> source column of its 1-sigma uncertainty
    extra: dict = field(default_factory=dict)  # the dialect's own keys, kept for the record

    def __post_init__(self):
        unknown = set(self.labels) - set(LABEL_FIELDS)
        if unknown:
            raise CatalogFormatError(f"the column mapping names unknown labels {sorted(unknown)}; ours: {LABEL_FIELDS}")
        kinds = {kind for _, kind in self.labels.values()} - set(LABEL_KINDS)
        if kinds:
            raise CatalogFormatError(f"unknown label conventions {sorted(kinds)}; known: {', '.join(LABEL_KINDS)}")
        if any(kind == "x_fe" for _, kind in self.labels.values()) and self.labels.get("fe_h", ("", ""))[1] == "x_fe":
            raise CatalogFormatError("[Fe/H] cannot itself be given as [X/Fe]")
        without_label = set(self.errors) - set(self.labels)
        if without_label:
            raise CatalogFormatError(f"the column mapping gives errors for {sorted(without_label)} but not their labels")
        if not all(isinstance(column, str) and column for column in self.errors.values()):
            raise CatalogFormatError("each entry of 'errors' names one column")

    def as_dict(self) -> dict:
        """The format in the survey dialect plus the quality cut spelled out (JSON-ready)."""
        return {"survey": self.survey, "data_release": self.data_release, "id_column": self.id_column,
                "ra_column": self.ra_column, "dec_column": self.dec_column, "gaia_column": self.gaia_column,
                "labels": {k: list(v) for k, v in self.labels.items()}, "flag_columns": list(self.record_columns),
                "quality_cut": self.quality.name, "quality": self.quality.as_dict(),
                "sentinels": list(self.sentinels), "errors": dict(self.errors), **self.extra}


def _cut(name: str, cuts: dict[str, QualityCut]) -> QualityCut:
    if name not in cuts:
        raise CatalogFormatError(f"unknown quality cut {name!r}; known: {', '.join(cuts)}")
    return cuts[name]


def _errors(mapping: dict) -> dict[str, str]:
    errors = mapping.get("errors", {})
    if not isinstance(errors, dict):
        raise CatalogFormatError("'errors' maps label fields to columns: {field: column}")
    return dict(errors)


def format_from_survey_mapping(mapping: dict, cuts: dict[str, QualityCut]) -> CatalogFormat:
    """The survey dialect (``id_column``, ``labels {field: [column, kind]}``, ``quality_cut``)."""
    required = {"survey", "id_column", "ra_column", "dec_column", "labels"}
    missing = required - set(mapping)
    if missing:
        raise CatalogFormatError(f"the column mapping needs {sorted(missing)}")
    labels = {}
    for name, spec in mapping["labels"].items():
        column, kind = (spec, "direct") if isinstance(spec, str) else tuple(spec)
        labels[name] = (column, kind)
    return CatalogFormat(
        survey=mapping["survey"], data_release=mapping.get("data_release", ""), id_column=mapping["id_column"],
        ra_column=mapping["ra_column"], dec_column=mapping["dec_column"], gaia_column=mapping.get("gaia_column"),
        labels=labels, quality=_cut(mapping.get("quality_cut", "none"), cuts),
        record_columns=tuple(mapping.get("flag_columns", ())),
        sentinels=tuple(mapping.get("sentinels", DEFAULT_SENTINELS)),
    )


def format_from_label_mapping(mapping: dict, cuts: dict[str, QualityCut]) -> CatalogFormat:
    """The training-label dialect (``id``, ``labels {field: column}``, ``quality {column, good}``)."""
    for key in ("id", "ra", "dec", "labels"):
        if key not in mapping:
            raise CatalogFormatError(f"the column mapping needs {key!r}")
    quality = mapping.get("quality")
    if quality and mapping.get("quality_cut"):
        raise CatalogFormatError("give 'quality' or 'quality_cut', not both")
    if quality:
        if "column" not in quality or "good" not in quality:
            raise CatalogFormatError("'quality' needs 'column' and 'good'")
        cut = QualityCut(
            name=f"{quality['column']} in {list(quality['good'])}", source="the column mapping",
            rows=(FlagTest(quality["column"], f"{quality['column']} not in {list(quality['good'])}",
                           good=tuple(str(v) for v in quality["good"])),),
        )
    else:
        cut = _cut(mapping.get("quality_cut", "none"), cuts)
    return CatalogFormat(
        survey=mapping.get("survey", "reference"), data_release=mapping.get("data_release", ""),
        id_column=mapping["id"], ra_column=mapping["ra"], dec_column=mapping["dec"],
        gaia_column=mapping.get("gaia_source_id"),
        labels={name: (spec, "direct") if isinstance(spec, str) else tuple(spec) for name, spec in mapping["labels"].items()},
        quality=cut, sentinels=tuple(mapping.get("sentinels", DEFAULT_SENTINELS)), labels_required=True,
        errors=_errors(mapping),
        extra={"mapping": mapping},
    )
