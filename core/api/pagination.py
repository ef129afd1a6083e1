from base64 import b64decode
from urllib import parse

from django.conf import settings
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination

from core.api.filters import int64_parse


class _IdsThenRows:
    """A queryset whose slices are read in two statements: the slice's ids, then its rows.

    The ids of a filtered, id-ordered page can come from an index alone (an index-only scan
    of an index that includes the filtered columns and the id), where the one-statement
    query reads the whole row of every match to sort them; the rows are then read by
    primary key, only the page's, through the same queryset. When a row changed between
    the two statements (deleted, or no longer matching the filters), the slice is read
    again in one statement: a short page would otherwise end the pagination early. So a
    page holds what the one-statement query returns. Only the methods
    ``CursorPagination.paginate_queryset`` calls are wrapped.
    """

    def __init__(self, queryset):
        self.queryset = queryset

    def __getattr__(self, name):
        return getattr(self.queryset, name)

    def order_by(self, *fields):
        return _IdsThenRows(self.queryset.order_by(*fields))

    def filter(self, *args, **kwargs):
        return _IdsThenRows(self.queryset.filter(*args, **kwargs))

    def __getitem__(self, index: slice) -> list:
        ids = list(self.queryset.values_list("pk", flat=True)[index])
        rows = {row.pk: row for row in self.queryset.filter(pk__in=ids)} if ids else {}
        if len(rows) < len(ids):
            return list(self.queryset[index])
        return [rows[pk] for pk in ids]


class CatalogCursorPagination(CursorPagination):
    """Stable, constant-time pages over tables of millions of rows (no COUNT, no OFFSET).

    A page's ids are read first and its rows after (:class:`_IdsThenRows`).
    """

    ordering = "id"
    page_size_query_param = "page_size"
    invalid_cursor_message = "Invalid cursor: pass the 'next' or 'previous' link of a page back unchanged"

    @property
    def max_page_size(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return parameters

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None:
            try:
                size = int64_parse(raw)
            except ValueError:
                raise ValidationError({"page_size": f"must be an integer, got {raw[:40]!r}"}) from None
            if not 1 <= size <= self.max_page_size:
                raise ValidationError({"page_size": f"must be between 1 and {self.max_page_size}"})
            return size
        return self.page_size

    def decode_cursor(self, request):
        """DRF's decoding, made strict: characters outside base64 (which DRF skips, so that
        '%%%' read as the first page) and keys other than o, r, p are an invalid cursor;
        the position is an id, so anything but a 64-bit integer is an invalid cursor (404)
        rather than a database error (500) or an empty page."""
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            tokens = parse.parse_qs(b64decode(encoded.encode("ascii"), validate=True).decode("ascii"),
                                    keep_blank_values=True)
        except ValueError:  # binascii.Error and Unicode errors are ValueErrors
            raise NotFound(self.invalid_cursor_message) from None
        if set(tokens) - {"o", "r", "p"} or any(len(values) > 1 for values in tokens.values()):
            raise NotFound(self.invalid_cursor_message)
        cursor = super().decode_cursor(request)
        if cursor is None or cursor.position is None:
            return cursor
        try:
            position = int64_parse(cursor.position)
        except ValueError:
            raise NotFound(self.invalid_cursor_message) from None
        return Cursor(offset=cursor.offset, reverse=cursor.reverse, position=position)

    def paginate_queryset(self, queryset, request, view=None):
        return super().paginate_queryset(_IdsThenRows(queryset), request, view)
