"""Download endpoints of a release: every format of :mod:`inference.downloads`, streamed.

``/api/v1/releases/<name>/export/`` answers the format asked for with ``?format=`` or the
``Accept`` header (CSV when neither says); ``export.csv``, ``export.ecsv``,
``export.fits``, ``export.vot`` and ``export.parquet`` fix the format by their name
(``export.csv?format=csv-paper`` gives the paper's Table 2 layout). Filters are those of
the release's entries. The star table (one row per star) has the same formats but the
paper's at ``/api/v1/releases/<name>/stars/export/`` and ``stars/export.<extension>``, with
the filters of its API list. Errors are JSON.

A whole table of a published release (no filter) is read from the file written when the
release was published (:mod:`inference.services.release_files`), with its SHA-256 as the
ETag and byte ranges (a broken download resumes); until that file exists, and for every filtered download, the rows stream from the
database.
"""

import base64
import re

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.reverse import reverse

from .columns import STAR_COLUMNS
from .downloads import FORMATS, csvw_metadata, download_file_name
from .filters import CatalogEntryFilterSet, CatalogStarFilterSet
from .models import CatalogEntry, CatalogStar
from .selectors import release_entries, release_stars, releases_visible
from .services.release_files import ENTRIES, STARS, TABLES, release_file_open


class DownloadRenderer(renderers.BaseRenderer):
    """Stands for one download format in DRF's content negotiation; the view streams the
    body itself, so this renderer never renders anything."""

    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        raise TypeError(f"{type(self).__name__} renders no response body")


RENDERERS = {
    name: type(f"{name.title().replace('-', '')}DownloadRenderer", (DownloadRenderer,),
               {"media_type": fmt.media_type, "format": name})
    for name, fmt in FORMATS.items()
}


class CatalogDownloadView(GenericAPIView):
    """A release, or the rows that match the filters, in one of the download formats."""

    queryset = CatalogEntry.objects.none()
    filterset_class = CatalogEntryFilterSet
    pagination_class = None
    formats: tuple[str, ...] = tuple(FORMATS)
    rows_of = staticmethod(release_entries)  # the release's rows that are downloaded
    table = ENTRIES  # which of the release's written files serve an unfiltered download
    metadata_view = "release-export-metadata"  # the CSV's sidecar
    url_format: str | None = None  # the format an ``export.<extension>`` URL fixes

    def get_renderers(self):
        return [RENDERERS[name]() for name in self.formats]

    def perform_content_negotiation(self, request, force=False):
        if not force:
            asked = request.query_params.get("format")
            if asked is not None and asked not in self.formats:
                raise ValidationError({"format": f"must be one of {', '.join(self.formats)}, got {asked[:40]!r}"})
        return super().perform_content_negotiation(request, force=force)

    def finalize_response(self, request, response, *args, **kwargs):
        # Any DRF Response here is an error body: JSON, whatever format was negotiated.
        if isinstance(response, Response):
            json = renderers.JSONRenderer()
            request.accepted_renderer, request.accepted_media_type = json, json.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def get(self, request, release_name: str):
        release = get_object_or_404(releases_visible(user=request.user), name=release_name)
        entries = self.filter_queryset(self.rows_of(release=release))
        fmt = FORMATS[request.accepted_renderer.format]
        applied = {key: value for key, value in request.query_params.items() if key != "format"}
        if not applied:
            opened = release_file_open(release=release, table=self.table, format_name=fmt.name)
            if opened is not None:
                return self._file_response(request, release, fmt, *opened)
        response = StreamingHttpResponse(
            fmt.stream(release, entries, applied, settings.EXPORT_CHUNK_SIZE), content_type=fmt.media_type
        )
        return self._described(response, request, release, fmt)

    def _file_response(self, request, release, fmt, written, file):
        """The whole published table from its written file (opened), with its SHA-256 as
        the ETag and as ``Repr-Digest`` (RFC 9530)."""
        etag = f'"{written.sha256}"'
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            file.close()
            response = HttpResponseNotModified()
            response["ETag"] = etag
            return response
        wanted = None
        if request.headers.get("If-Range", etag) == etag:  # a range of another version is the whole file
            try:
                wanted = byte_range(request.headers.get("Range", ""), written.bytes)
            except RangeNotSatisfiable:
                file.close()
                response = HttpResponse(status=416)
                response["Content-Range"] = f"bytes */{written.bytes}"
                return response
        if wanted is None:
            response = ReleaseFileResponse(file, content_type=fmt.media_type)
        else:
            start, end = wanted
            response = StreamingHttpResponse(_file_slice(file, start, end - start + 1),
                                             content_type=fmt.media_type, status=206)
            response["Content-Range"] = f"bytes {start}-{end}/{written.bytes}"
            response["Content-Length"] = str(end - start + 1)
        response["Accept-Ranges"] = "bytes"
        response["ETag"] = etag
        response["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(written.sha256)).decode()}:"
        return self._described(response, request, release, fmt)

    def _described(self, response, request, release, fmt):
        if fmt.media_type.startswith("text/"):
            response["Content-Type"] = f"{fmt.media_type}; charset=utf-8"
        name = download_file_name(release, fmt, stars=self.table == STARS)
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        if fmt.name == "csv":
            sidecar = reverse(self.metadata_view, kwargs={"release_name": release.name}, request=request)
            response["Link"] = f'<{sidecar}>; rel="describedby"; type="application/csvw+json"'
        return response


class ReleaseFileResponse(FileResponse):
    """A release file in blocks of 1 MiB (Django's 4 KiB held a 216 MB file to 113 MB/s
    where the server hands out blocks rather than ``wsgi.file_wrapper``)."""

    block_size = 1 << 20


_RANGE = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)  # one range; not both ends empty (checked below)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``etag`` (RFC 9110, 13.1.2: ``*``, or
    any listed tag by the weak comparison)."""
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or etag in [tag.removeprefix("W/") for tag in tags]


class RangeNotSatisfiable(Exception):
    """A ``Range`` no byte of the file satisfies (RFC 9110, 15.5.17)."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range (first, last; inclusive) a ``Range`` header asks of a file of
    ``size`` bytes (RFC 9110, 14.1.2), or None to answer with the whole file: no header,
    another unit, a malformed value, or several ranges. Raises RangeNotSatisfiable where
    the range lies wholly past the end."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    matched = _RANGE.fullmatch(spec.strip())
    if matched is None or matched.groups() == ("", ""):
        return None
    first, last = matched.groups()
    if first == "":  # the last ``last`` bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, size - 1 if last == "" else min(int(last), size - 1)


def _file_slice(file, start: int, length: int, block: int = 1 << 20):
    with file:
        file.seek(start)
        while length > 0:
            data = file.read(min(block, length))
            if not data:
                return
            length -= len(data)
            yield data


_ERRORS = {
    (400, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="A bad filter or format, named."),
    (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="No such (visible) release."),
    (406, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="No format the Accept header takes."),
}


def _download_schema(formats: tuple[str, ...], *, with_format_parameter: bool, what: str = "The release"):
    listed = "\n".join(f"- `{name}` ({FORMATS[name].media_type}): {FORMATS[name].description}" for name in formats)
    parameters = []
    if with_format_parameter:
        parameters.append(OpenApiParameter(
            "format", OpenApiTypes.STR, enum=list(formats), required=False,
            description="The format (else the Accept header's choice, else the first listed).",
        ))
    media_types = sorted({FORMATS[name].media_type for name in formats})
    return extend_schema(
        filters=True,
        parameters=parameters,
        description=f"{what}, or the rows the filters select, streamed. Columns: docs/catalog_columns.md.\n\n{listed}",
        responses={
            **{(200, media_type): OpenApiResponse(OpenApiTypes.BINARY) for media_type in media_types},
            **_ERRORS,
        },
    )


def download_view(formats: tuple[str, ...], *, name: str, base: type | None = None, what: str = "The release"):
    """A download view (``base``, by default CatalogDownloadView) answering ``formats``
    (its first is the default), documented as such."""
    base = base or CatalogDownloadView
    attributes = {"formats": formats, "__doc__": base.__doc__}
    view = type(name, (base,), attributes)
    _download_schema(formats, with_format_parameter=len(formats) > 1, what=what)(view)
    return view


CatalogExportView = download_view(tuple(FORMATS), name="CatalogExportView")
CatalogCSVExportView = download_view(("csv", "csv-paper"), name="CatalogCSVExportView")
FIXED_FORMAT_VIEWS = {
    fmt.extension: download_view((name,), name=f"Catalog{name.title()}ExportView")
    for name, fmt in FORMATS.items() if name not in ("csv", "csv-paper")
}


class CatalogCSVMetadataView(GenericAPIView):
    """The CSV download's sidecar: its columns (name, type, unit, UCD, description) and the
    release's provenance, as CSV on the Web metadata (W3C)."""

    pagination_class = None
    filter_backends = []

    def get_queryset(self):
        return releases_visible(user=self.request.user)

    @extend_schema(responses={
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="CSVW metadata"),
        (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="No such (visible) release."),
    })
    def get(self, request, release_name: str):
        release = get_object_or_404(self.get_queryset(), name=release_name)
        url = reverse("release-export", kwargs={"release_name": release.name}, request=request)
        return Response(csvw_metadata(release, url, {}))



# --- the star table ---------------------------------------------------------------------------


class StarDownloadView(CatalogDownloadView):
    """A release's star table (one row per star: its Flag = 1 spectra combined), or the rows
    that match the filters, in one of the download formats."""

    queryset = CatalogStar.objects.none()
    filterset_class = CatalogStarFilterSet
    rows_of = staticmethod(release_stars)
    table = STARS
    metadata_view = "release-stars-export-metadata"


STAR_FORMATS: tuple[str, ...] = TABLES[STARS][1]  # every format but the paper's: Table 2 is per spectrum
_STAR_TABLE = "The release's star table (one row per star)"
StarExportView = download_view(STAR_FORMATS, name="StarExportView", base=StarDownloadView, what=_STAR_TABLE)
STAR_FIXED_FORMAT_VIEWS = {
    FORMATS[name].extension: download_view(
        (name,), name=f"Star{name.title()}ExportView", base=StarDownloadView, what=_STAR_TABLE)
    for name in STAR_FORMATS
}


class StarCSVMetadataView(CatalogCSVMetadataView):
    """The star table CSV's sidecar: its columns (name, type, unit, UCD, description) and
    the release's provenance, as CSV on the Web metadata (W3C)."""

    @extend_schema(responses={
        (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="CSVW metadata"),
        (404, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="No such (visible) release."),
    })
    def get(self, request, release_name: str):
        release = get_object_or_404(self.get_queryset(), name=release_name)
        url = reverse("release-stars-export-csv", kwargs={"release_name": release.name}, request=request)
        return Response(csvw_metadata(release, url, {}, STAR_COLUMNS))
