"""Endpoints that answer an image: the image when it works, JSON when it does not."""

from rest_framework import renderers
from rest_framework.response import Response


class PNGRenderer(renderers.BaseRenderer):
    """Passes PNG bytes through; it never renders anything else."""

    media_type = "image/png"
    format = "png"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"PNGRenderer renders PNG bytes, not {type(data).__name__}")
        return data


class FITSRenderer(renderers.BaseRenderer):
    """Passes FITS bytes through; it never renders anything else."""

    media_type = "application/fits"
    format = "fits"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"FITSRenderer renders FITS bytes, not {type(data).__name__}")
        return data


class ImageErrorsAsJSONMixin:
    """For API views whose success is an image (an ``HttpResponse`` with PNG bytes).

    Content negotiation picks the PNG renderer for every response of such a view, and
    DRF renders error bodies (404, 400, 403, 406, 429) with the negotiated renderer: a
    404 came back as the word 'detail' labelled ``image/png``. Any DRF ``Response`` of
    these views is an error body, so it is rendered as JSON here, whatever was negotiated.
    """

    renderer_classes = [PNGRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response):
            json = renderers.JSONRenderer()
            request.accepted_renderer, request.accepted_media_type = json, json.media_type
        return super().finalize_response(request, response, *args, **kwargs)
