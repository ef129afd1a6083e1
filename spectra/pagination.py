from django.conf import settings
from rest_framework.pagination import CursorPagination


class CatalogCursorPagination(CursorPagination):
    """Stable, constant-time pages over tables of millions of rows (no COUNT, no OFFSET)."""

    ordering = "id"
    page_size_query_param = "page_size"

    @property
    def max_page_size(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None:
            from rest_framework.exceptions import ValidationError

            try:
                size = int(raw)
            except ValueError:
                raise ValidationError({"page_size": f"must be an integer, got {raw!r}"}) from None
            if not 1 <= size <= self.max_page_size:
                raise ValidationError({"page_size": f"must be between 1 and {self.max_page_size}"})
            return size
        return self.page_size
