"""The OpenAPI schema matches the server: schemathesis against a live server, every GET.

Checks: no 5xx, every status code and content type documented, every response body valid
against its documented schema. Bounded in time (SCHEMATHESIS_MAX_EXAMPLES examples per
operation, default 5).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import label_rows, make_spectra

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.django_db(transaction=True)
def test_every_get_operation_conforms_to_the_schema(live_server, release_factory, tmp_path):
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable, "schemathesis is in requirements-dev.txt"
    release = release_factory(make_spectra([(10.0, 10.0), (11.0, 11.0)]), label_rows([4800.0, 6700.0]),
                              label_rows([4800.0, 6700.0]), name="conformance")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "SPCANET_SCHEMATHESIS_RELEASE": release.name, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [executable, "run", f"{live_server.url}/api/schema/", "--url", live_server.url,
         "--include-method", "GET", "--checks", CHECKS, "--phases", "examples,coverage,fuzzing",
         "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5"), "--seed", "1",
         "--generation-database", "none", "--workers", "2", "--request-timeout", "30", "--no-color"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    report = done.stdout[-12000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
