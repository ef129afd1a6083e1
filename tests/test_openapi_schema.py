"""The OpenAPI schema says what the server does (the cases schemathesis found)."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema():
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def parameters(schema, path: str) -> dict:
    return {p["name"]: p["schema"] for p in schema["paths"][path]["get"]["parameters"]}


def test_filters_are_typed_as_the_server_reads_them(schema, settings):
    entries = parameters(schema, "/api/v1/releases/{release_name}/entries/")
    assert entries["flags_any"] == {"type": "string"}  # comma-separated flag names, not an integer
    assert entries["flag"] == {"type": "integer", "enum": [0, 1]}
    assert entries["page_size"] == {"type": "integer", "minimum": 1, "maximum": settings.API_MAX_PAGE_SIZE}
    assert entries["cone_radius"]["maximum"] == settings.CONE_SEARCH_MAX_RADIUS_DEG
    assert entries["cone_dec"] == {"type": "number", "minimum": -90, "maximum": 90}
    assert "cone_ra" not in parameters(schema, "/api/v1/model-versions/")  # no cone there: the server refuses it


def test_every_get_documents_its_errors_as_json(schema):
    for path, operations in schema["paths"].items():
        operation = operations.get("get")
        if operation is None:
            continue
        responses = operation["responses"]
        assert "406" in responses and "429" in responses, path
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert responses["400"]["content"].keys() == {"application/json"}, path
        if "{" in path:
            assert "404" in responses, path
    assert "403" in schema["paths"]["/api/v1/processing-runs/"]["get"]["responses"]


def test_download_formats_are_documented(schema):
    export = schema["paths"]["/api/v1/releases/{release_name}/export/"]["get"]
    assert set(export["responses"]["200"]["content"]) == {
        "text/csv", "text/x-ecsv", "application/fits", "application/x-votable+xml", "application/vnd.apache.parquet"}
    assert set(parameters(schema, "/api/v1/releases/{release_name}/export/")["format"]["enum"]) == {
        "csv", "csv-paper", "ecsv", "fits", "votable", "parquet"}
    assert set(schema["paths"]["/api/v1/releases/{release_name}/export.fits"]["get"]["responses"]["200"]["content"]) == {
        "application/fits"}


@pytest.mark.parametrize("query", [
    {"flags_none": "%^&*()"},  # a '%' in a flag name: the message quotes it
    {"gaia_source_id": "%d"},
    {"%s": "1"},  # an unknown parameter whose name has a '%'
])
def test_client_text_with_percent_signs_is_a_400_not_a_500(query):
    """django-filter formats every error message with its params (message % params): client
    text in a message went through that formatting, and a '%' in it was a 500."""
    response = Client().get("/api/v1/spectra/", query)
    assert response.status_code == 400, response.content[:300]
    (name, value), = query.items()
    assert value in response.content.decode() or name in response.content.decode()
