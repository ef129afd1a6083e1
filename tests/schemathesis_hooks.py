"""Schemathesis hooks for tests/test_openapi_conformance.py (loaded through SCHEMATHESIS_HOOKS).

Half of the generated release names are replaced by the test's published release, so
that the entries, stars and download endpoints are exercised with real rows (200s and
filter 400s) as well as with unknown releases (404s).
"""

import os
import zlib

import schemathesis


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    release = os.environ.get("SPCANET_SCHEMATHESIS_RELEASE")
    if release and path_parameters and "release_name" in path_parameters:
        if zlib.crc32(repr(sorted(path_parameters.items())).encode()) % 2 == 0:  # the same every run
            path_parameters["release_name"] = release
    return path_parameters
