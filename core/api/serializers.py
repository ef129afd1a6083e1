"""Serializer speed for the catalog's long lists.

DRF serializes a row by asking every field for its attribute and its representation,
about 35 us a field; a page of 100 catalog rows with 45 fields spent 100-180 ms there
while its query took 3-17 ms. :class:`DirectRepresentationMixin` reads the plain model
fields (floats, integers, text, booleans) straight off the instance, with the same
conversion DRF applies, and leaves every other field to DRF.
"""

from rest_framework import serializers
from rest_framework.relations import PKOnlyObject

# Exact DRF field classes whose to_representation is the conversion given here.
_DIRECT = {
    serializers.FloatField: float,
    serializers.IntegerField: int,
    serializers.CharField: str,
    serializers.BooleanField: bool,
}


class DirectRepresentationMixin:
    """A serializer whose plain model fields are read straight off the instance.

    The result is the one DRF gives (``tests/test_api.py`` compares them): None stays
    None, other values pass DRF's conversion; fields with a custom source, a dotted source
    or any other class go through DRF's own ``get_attribute`` and ``to_representation``.
    """

    def _representation_plan(self) -> list[tuple]:
        plan = getattr(self, "_plan", None)
        if plan is None:
            plan = []
            for field in self._readable_fields:
                convert = _DIRECT.get(type(field))
                direct = convert is not None and len(field.source_attrs) == 1 and not field.source == "*"
                plan.append((field.field_name, field.source_attrs[0] if direct else None, convert, field))
            self._plan = plan
        return plan

    def to_representation(self, instance):
        representation = {}
        for name, attribute_name, convert, field in self._representation_plan():
            if attribute_name is not None:
                value = getattr(instance, attribute_name)
                representation[name] = None if value is None else convert(value)
                continue
            attribute = field.get_attribute(instance)
            check = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            representation[name] = None if check is None else field.to_representation(attribute)
        return representation
