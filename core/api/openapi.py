"""The API's OpenAPI schema documents the errors the server really answers.

drf-spectacular documents the success response of each operation; the server also
answers 400 (a bad filter, page size or cursor parameter, named), 404 (no such object,
an invalid cursor), 403 (staff-only endpoints), 406 (no renderer for the Accept header)
and 429 (throttled), all as JSON. :class:`CatalogAutoSchema` adds each of them where it
can happen, unless the view documented it itself, so that schemathesis's status-code
and content-type conformance checks hold (tests/test_openapi_conformance.py).
"""

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny, IsAuthenticatedOrReadOnly

# DRF's error bodies: {"detail": "..."}, or for a 400 the offending parameters with
# their messages ({"teff_min": ["..."]}, {"__all__": ["..."]}).
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
_OPEN_PERMISSIONS = (AllowAny, IsAuthenticatedOrReadOnly)


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


class CatalogAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        parameters = operation.get("parameters", [])
        errors = {"406": "No representation for the Accept header."}
        if any(parameter.get("in") == "query" for parameter in parameters):
            errors["400"] = "A bad query parameter (unknown, malformed, out of range), named in the body."
        if any(parameter.get("in") == "path" for parameter in parameters) or self._is_list_view():
            errors["404"] = "No such (visible) object, or an invalid cursor."
        if not all(issubclass(permission, _OPEN_PERMISSIONS) for permission in self.view.permission_classes):
            errors["403"] = "Staff only."
        if getattr(self.view, "throttle_classes", None):
            errors["429"] = "Too many requests (API_ANON_THROTTLE_RATE); retry after the Retry-After header."
        for status, description in errors.items():
            responses.setdefault(status, _error(description))
        return operation
