"""Query filters of the catalog API: strict, typed, and documented from one source.

Every filter set here rejects what it does not understand with a 400 that names the
problem: unknown parameters, malformed or non-finite numbers, integers that are not
whole numbers or do not fit a 64-bit column, inverted ranges, an incomplete cone or a
radius out of bounds, unknown flag names. All of it is checked before any query, so
the answer is the same on PostgreSQL and SQLite.
"""

import re

import django_filters
from django import forms
from django.conf import settings
from django.db.models import F
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from core.flags import FlagWord
from core.sky import apply_cone

# Query parameters that are not filters but are understood by the views.
NON_FILTER_PARAMETERS = frozenset({"cursor", "page_size", "format"})


# The range of every integer column (BigIntegerField, BigAutoField, foreign keys).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")


def int64_parse(text: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An integer written in ASCII digits (optional sign), within ``[minimum, maximum]``.

    Raises ValueError with a message for the client otherwise: '1.5', '1e3', '1_000',
    non-ASCII digits and values beyond a signed 64-bit integer are refused, never
    truncated or rounded to a real row's id.
    """
    text = str(text).strip()
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"must be a whole number written in digits, got {text[:40]!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"must be between {minimum} and {maximum}, got {text[:40]}")
    return value


class Int64Field(forms.Field):
    """A form field for ids and other 64-bit integers (see :func:`int64_parse`)."""

    def __init__(self, *args, min_value: int = INT64_MIN, max_value: int = INT64_MAX, **kwargs):
        self.min_value, self.max_value = min_value, max_value
        super().__init__(*args, **kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return int64_parse(value, minimum=self.min_value, maximum=self.max_value)
        except ValueError as error:
            # Client text goes in params: django-filter formats every message with them.
            raise forms.ValidationError("%(reason)s", code="invalid", params={"reason": str(error)}) from None


@extend_schema_field(OpenApiTypes.INT64)
class IntegerFilter(django_filters.NumberFilter):
    """Exact match on an integer column; anything but a 64-bit whole number is a 400."""

    field_class = Int64Field

    def get_max_validator(self):
        return None  # the field checks the range itself


# 'LAMOST J230311.44+321335.5' sent with a raw '+' arrives as a space (query-string rules).
_DESIGNATION_SPACE_SIGN = re.compile(r"((?:LAMOST\s+)?J\d{6}(?:\.\d*)?) (\d{6}(?:\.\d*)?)", re.IGNORECASE)


def designation_normalise(value: str) -> str:
    """A designation with a space where the declination's sign belongs gets its '+' back."""
    value = value.strip()
    match = _DESIGNATION_SPACE_SIGN.fullmatch(value)
    return f"{match.group(1)}+{match.group(2)}" if match else value


class DesignationField(forms.CharField):
    def to_python(self, value):
        value = super().to_python(value)
        return designation_normalise(value) if value else value


class DesignationFilter(django_filters.CharFilter):
    """Exact designation; a '+' decoded as a space is read as '+'."""

    field_class = DesignationField


class FloatFilter(django_filters.NumberFilter):
    field_class = forms.FloatField


@extend_schema_field({"type": "integer", "enum": [0, 1]})
class FlagFilter(django_filters.TypedChoiceFilter):
    """A catalog row's Flag, 1 or 0 (documented as the integers it takes)."""

    def __init__(self, *args, choices=(("1", "1 good"), ("0", "0 bad")), **kwargs):
        super().__init__(*args, choices=list(choices), coerce=int, **kwargs)


def range_filters(field: str, label: str, unit: str = "") -> dict[str, FloatFilter]:
    """``<field>_min`` and ``<field>_max`` filters, both inclusive."""
    suffix = f" ({unit})" if unit else ""
    return {
        f"{field}_min": FloatFilter(field_name=field, lookup_expr="gte", label=f"Minimum {label}{suffix}"),
        f"{field}_max": FloatFilter(field_name=field, lookup_expr="lte", label=f"Maximum {label}{suffix}"),
    }


class FlagNamesField(forms.CharField):
    """A comma-separated list of flag names of one flag word, cleaned to a bit mask."""

    def __init__(self, *args, word: FlagWord, **kwargs):
        self.word = word
        super().__init__(*args, **kwargs)

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return None
        names = [name.strip().upper() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in self.word]
        if unknown:
            known = ", ".join(flag.name for flag in self.word)
            raise forms.ValidationError(f"unknown {self.word.name} flag(s) %(unknown)s; known: {known}",
                                        params={"unknown": ", ".join(unknown)})
        return self.word.mask(*names)


@extend_schema_field(OpenApiTypes.STR)
class FlagBitsFilter(django_filters.Filter):
    """Rows with all (``mode='all'``), any, or none of the named bits set."""

    field_class = FlagNamesField

    def __init__(self, *args, word: FlagWord, mode: str, **kwargs):
        self.word = word
        self.mode = mode
        kwargs.setdefault("help_text", f"Comma-separated {word.name} flag names: {word.help_text()}")
        super().__init__(*args, **kwargs)
        self.extra["word"] = word

    def filter(self, qs, mask):
        if mask is None:
            return qs
        masked = F(self.field_name).bitand(mask)
        alias = f"_{self.field_name}_{self.mode}_mask"
        qs = qs.alias(**{alias: masked})
        if self.mode == "all":
            return qs.filter(**{alias: mask})
        if self.mode == "any":
            return qs.exclude(**{alias: 0})
        return qs.filter(**{alias: 0})


def flag_filters(field: str, word: FlagWord, prefix: str = "flags") -> dict[str, FlagBitsFilter]:
    return {
        f"{prefix}_all": FlagBitsFilter(field_name=field, word=word, mode="all"),
        f"{prefix}_any": FlagBitsFilter(field_name=field, word=word, mode="any"),
        f"{prefix}_none": FlagBitsFilter(field_name=field, word=word, mode="none"),
    }


class StrictFilterSet(django_filters.FilterSet):
    """A filter set that refuses unknown parameters and inverted ranges, and does cones.

    Subclasses set ``cone_fields`` to the (ra, dec) field paths to enable
    ``cone_ra``, ``cone_dec`` (degrees, J2000) and ``cone_radius`` (degrees).
    """

    cone_fields: tuple[str, str] | None = None
    # Filters made by a function, such as range_filters() and flag_filters(): groups of
    # name -> filter added after the declared ones.
    generated_filters: tuple[dict[str, django_filters.Filter], ...] = ()

    cone_ra = FloatFilter(method="filter_noop", label="Cone centre right ascension (deg, J2000)", min_value=0.0, max_value=360.0)
    cone_dec = FloatFilter(method="filter_noop", label="Cone centre declination (deg, J2000)", min_value=-90.0, max_value=90.0)
    cone_radius = FloatFilter(method="filter_noop", label="Cone radius (deg)")
    # The bounds _check_cone enforces, in the schema too.
    extend_schema_field({"type": "number", "minimum": 0, "maximum": 360})(cone_ra)
    extend_schema_field({"type": "number", "minimum": -90, "maximum": 90})(cone_dec)
    extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True,
                         "maximum": settings.CONE_SEARCH_MAX_RADIUS_DEG})(cone_radius)

    @classmethod
    def get_filters(cls):
        # Without cone fields the cone parameters do not exist (nor in the API schema).
        filters = super().get_filters()
        for group in cls.generated_filters:
            filters.update(group)
        if cls.cone_fields is None:
            for name in ("cone_ra", "cone_dec", "cone_radius"):
                filters.pop(name, None)
        return filters

    def filter_noop(self, queryset, name, value):
        return queryset

    def is_valid(self) -> bool:
        valid = super().is_valid()
        form = self.form
        unknown = sorted(set(self.data.keys()) - set(self.filters) - NON_FILTER_PARAMETERS)
        if unknown:
            form.add_error(None, forms.ValidationError(
                "unknown query parameter(s): %(names)s", params={"names": ", ".join(unknown)}))
        if hasattr(form, "cleaned_data"):
            data = form.cleaned_data
            for name in self.filters:
                if name.endswith("_min"):
                    base = name[: -len("_min")]
                    low, high = data.get(name), data.get(f"{base}_max")
                    if low is not None and high is not None and low > high:
                        form.add_error(None, f"{base}_min ({low}) is greater than {base}_max ({high})")
            if self.cone_fields is not None:
                self._check_cone(form, data)
        return valid and not form.errors

    def _check_cone(self, form, data) -> None:
        given = {name: data.get(name) for name in ("cone_ra", "cone_dec", "cone_radius")}
        present = [name for name, value in given.items() if value is not None]
        if present and len(present) != 3:
            form.add_error(None, "a cone search needs cone_ra, cone_dec and cone_radius together")
            return
        radius = given["cone_radius"]
        limit = settings.CONE_SEARCH_MAX_RADIUS_DEG
        if radius is not None and not 0.0 < radius <= limit:
            form.add_error("cone_radius", f"must be greater than 0 and at most {limit} degrees")
        ra = given["cone_ra"]
        if ra is not None and ra == 360.0:
            form.cleaned_data["cone_ra"] = 0.0

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        data = self.form.cleaned_data
        if self.cone_fields is not None and data.get("cone_radius") is not None:
            ra_field, dec_field = self.cone_fields
            queryset = apply_cone(
                queryset, data["cone_ra"], data["cone_dec"], data["cone_radius"],
                ra_field=ra_field, dec_field=dec_field,
            )
        return queryset
