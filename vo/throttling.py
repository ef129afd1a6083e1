"""The API's anonymous rate limit, applied to the VO endpoints too.

The VO views are plain Django views (their protocols fix the answers' shape), so DRF's
throttles do not reach them by themselves. ``throttled`` applies the same
``AnonRateThrottle`` (rate ``API_ANON_THROTTLE_RATE``, keyed on the connection's address)
and answers a VOTable error with HTTP 429 and ``Retry-After`` when the rate is exceeded.
"""

import math
from functools import wraps

from django.http import HttpResponse
from rest_framework.throttling import AnonRateThrottle

from .votable import VOTABLE_CONTENT_TYPE, error_votable


def throttled(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        throttle = AnonRateThrottle()
        if throttle.allow_request(request, None):
            return view(request, *args, **kwargs)
        wait = math.ceil(throttle.wait() or 1)
        response = HttpResponse(error_votable(f"request was throttled: try again in {wait} s"),
                                content_type=VOTABLE_CONTENT_TYPE, status=429)
        response["Retry-After"] = str(wait)
        return response

    return wrapper
