"""Error responses of the API: a bad request says what was wrong, it never becomes a 500."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.views import exception_handler


def catalog_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return exception_handler(exc, context)


def not_found(request, exception=None):
    """404 of a URL that no view matched: JSON under /api/ (a mistyped image URL too), the
    ordinary page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no API endpoint at {request.path}"}, status=404)
    return defaults.page_not_found(request, exception)
