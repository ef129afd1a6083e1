"""Downloads in every format, read back with the tools astronomers use on them."""

import io
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits, votable
from astropy.table import Table
from django.test import Client

from core.flags import CATALOG_FLAGS
from core.labels import LABELS
from inference.columns import CATALOG_COLUMNS, COLUMNS_BY_NAME, PAPER_COLUMNS
from spectra.models import Spectrum, Star

from .conftest import label_rows, make_spectra

pytestmark = pytest.mark.django_db

BIG_GAIA_ID = 1886955093649969280  # 19 digits: float64 cannot hold it (it would read ...9969408)
NAMES = [column.name for column in CATALOG_COLUMNS]


@pytest.fixture
def release(release_factory):
    """Three rows: a 19-digit Gaia id, a hot star (no abundances) without a Gaia id, a cool star."""
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0)])
    Star.objects.filter(pk=spectra[0].star_id).update(gaia_source_id=BIG_GAIA_ID)
    Star.objects.filter(pk=spectra[1].star_id).update(gaia_source_id=None)
    Spectrum.objects.filter(pk=spectra[0].pk).update(rv_blue=-12.3456, rv_blue_err=0.4321, rv_red_err=0.25)
    formal = label_rows([4773.906621028786, 6700.0, 5000.0])
    formal[0, 1] = 2.61237
    return release_factory(spectra, formal, label_rows([4800.0, 6700.0, 5300.0]))


def download(release, fmt: str, **filters) -> tuple[bytes, object]:
    response = Client().get(f"/api/v1/releases/{release.name}/export/", {"format": fmt, **filters})
    assert response.status_code == 200, response.content[:500]
    assert response.streaming
    return b"".join(response.streaming_content), response


def by_designation(table, designation_suffix: str):
    return next(i for i, d in enumerate(table["designation"]) if str(d).startswith(f"LAMOST J{designation_suffix}"))


def test_csv_is_one_header_row_with_errors_rounded_and_empty_cells(release):
    body, response = download(release, "csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "export.csv-metadata.json" in response["Link"]
    text = body.decode()
    assert not text.startswith("#") and "#" not in text.splitlines()[0]
    header = text.splitlines()[0].split(",")
    assert header == NAMES
    assert all(name.isidentifier() for name in header)  # usable in TOPCAT expressions as they are
    for label in LABELS:
        assert header.index(label.error_field) == header.index(label.field) + 1
    assert header.index("rv_blue_err") == header.index("rv_blue") + 1
    # The README's call: ids exact, missing values null, never -9999.
    frame = pd.read_csv(io.BytesIO(body), dtype={"gaia_source_id": "Int64"})
    assert list(frame.columns) == NAMES and len(frame) == 3
    assert frame["gaia_source_id"].iloc[0] == BIG_GAIA_ID
    assert pd.isna(frame["gaia_source_id"].iloc[1])
    assert frame["teff"].iloc[0] == 4774.0 and "4773.9" not in text  # Teff to 1 K
    assert frame["logg"].iloc[0] == 2.612  # log g to 0.001 dex
    assert frame["rv_blue"].iloc[0] == -12.35 and frame["rv_blue_err"].iloc[0] == 0.43
    assert frame["teff_err"].iloc[0] == 0.0 and frame["fe_h_err"].iloc[0] == 0.05
    hot = frame.iloc[1]
    assert all(pd.isna(hot[label.field]) for label in LABELS if label.is_abundance)
    assert hot["flag_bits"] == CATALOG_FLAGS.mask("HOT_STAR_NO_ABUNDANCES")
    assert "-9999" not in text


def test_csv_sidecar_describes_every_column_and_the_release(release):
    response = Client().get(f"/api/v1/releases/{release.name}/export.csv-metadata.json")
    assert response.status_code == 200
    metadata = response.json()
    columns = metadata["tableSchema"]["columns"]
    assert [c["name"] for c in columns] == NAMES
    teff = next(c for c in columns if c["name"] == "teff")
    assert teff["unit"] == "K" and teff["ucd"].startswith("phys.temperature.effective")
    assert metadata["dc:provenance"]["release"] == release.name
    assert metadata["dc:provenance"]["formal_model"] == release.formal_model.name


def test_paper_csv_keeps_table_2_order_and_minus_9999(release):
    body, _ = download(release, "csv-paper")
    lines = body.decode().splitlines()
    assert lines[0].split(",")[:3] == ["starid", "Gaia_source_id", "medres_specid"]
    assert lines[0].split(",")[-2:] == ["Flag", "Flag_bits"] and len(lines[0].split(",")) == len(PAPER_COLUMNS)
    frame = pd.read_csv(io.BytesIO(body), dtype={"Gaia_source_id": "Int64"})
    hot = frame.iloc[1]
    assert hot["[Fe/H]"] == -9999 and hot["Gaia_source_id"] == -9999
    assert frame["Gaia_source_id"].iloc[0] == BIG_GAIA_ID


def test_content_negotiation(release):
    client = Client()
    response = client.get(f"/api/v1/releases/{release.name}/export.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    response = client.get(f"/api/v1/releases/{release.name}/export/", HTTP_ACCEPT="application/fits")
    assert response.status_code == 200 and response["Content-Type"] == "application/fits"
    response = client.get(f"/api/v1/releases/{release.name}/export/", HTTP_ACCEPT="application/json")
    assert response.status_code == 406 and response["Content-Type"] == "application/json"
    response = client.get(f"/api/v1/releases/{release.name}/export/", {"format": "xlsx"})
    assert response.status_code == 400 and "format" in response.json()
    response = client.get(f"/api/v1/releases/{release.name}/export.fits", {"format": "csv"})
    assert response.status_code == 400 and "format" in response.json()
    assert client.get(f"/api/v1/releases/{release.name}/export.parquet").status_code == 200
    assert client.get("/api/v1/releases/nope/export.fits").status_code == 404


def _check_table(table):
    """The astropy reading of any typed format: exact ids, nulls masked, units."""
    assert list(table.colnames) == NAMES
    big = by_designation(table, "000000")
    hot = by_designation(table, "000001")
    assert int(table["gaia_source_id"][big]) == BIG_GAIA_ID
    assert table["gaia_source_id"].dtype.kind == "i" and table["gaia_source_id"].dtype.itemsize == 8
    assert np.ma.is_masked(table["gaia_source_id"][hot])
    assert str(table["teff"].unit) == "K" and str(table["rv_blue"].unit) == "km / s"
    assert float(table["teff"][big]) == 4774.0
    assert float(table["logg"][big]) == pytest.approx(2.612, abs=1e-6)
    assert float(table["rv_blue_err"][big]) == pytest.approx(0.43, abs=1e-6)
    assert np.ma.is_masked(table["fe_h"][hot]) and np.ma.is_masked(table["cu_h_err"][hot])
    assert not np.ma.is_masked(table["fe_h"][big]) and float(table["fe_h"][big]) == pytest.approx(-0.2)


def test_fits_binary_table(release):
    body, response = download(release, "fits")
    assert response["Content-Type"] == "application/fits" and len(body) % 2880 == 0
    with fits.open(io.BytesIO(body)) as hdus:
        header = hdus[1].header
        assert header["NAXIS2"] == 3 and header["RELEASE"] == release.name
        assert header["FORMAL"] == release.formal_model.name and len(header["FORMSHA"]) == 64
        teff = NAMES.index("teff") + 1
        gaia = NAMES.index("gaia_source_id") + 1
        assert header[f"TUNIT{teff}"] == "K" and header[f"TUCD{teff}"].startswith("phys.temperature.effective")
        assert header[f"TFORM{gaia}"] == "K" and header[f"TNULL{gaia}"] == -(2**63)
    table = Table.read(io.BytesIO(body), format="fits")
    assert str(table["teff"].unit) == "K"
    _check_table(table)  # astropy masks TNULL integers and NaN floats


def test_votable_has_units_ucds_descriptions_and_nulls(release):
    body, response = download(release, "votable")
    assert response["Content-Type"] == "application/x-votable+xml"
    parsed = votable.parse(io.BytesIO(body), verify="exception")
    field = {f.name: f for f in parsed.get_first_table().fields}
    assert field["teff_err"].ucd == "stat.error;phys.temperature.effective"
    assert field["fe_h"].ucd == "phys.abund.Fe" and field["fe_h"].description
    assert field["gaia_source_id"].datatype == "long"
    _check_table(parsed.get_first_table().to_table())


def test_parquet_schema_metadata_and_nullable_int64(release):
    body, response = download(release, "parquet")
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    arrow = pq.read_table(io.BytesIO(body))
    assert arrow.schema.field("gaia_source_id").type == "int64"
    assert arrow.schema.field("teff").metadata[b"unit"] == b"K"
    assert arrow.schema.field("teff_err").metadata[b"ucd"] == b"stat.error;phys.temperature.effective"
    provenance = json.loads(arrow.schema.metadata[b"spcanet"])
    assert provenance["release"] == release.name and provenance["formal_model"] == release.formal_model.name
    assert arrow.column("gaia_source_id").to_pylist()[:2] == [BIG_GAIA_ID, None]
    frame = pd.read_parquet(io.BytesIO(body))  # plain pandas: ids stay exact (Int64)
    assert str(frame["gaia_source_id"].dtype) == "Int64" and frame["gaia_source_id"].iloc[0] == BIG_GAIA_ID
    assert frame["fe_h"].isna().tolist() == [False, True, False] and frame["teff"].iloc[0] == 4774.0
    assert frame["logg"].iloc[0] == pytest.approx(2.612, abs=1e-6) and str(frame["teff"].dtype) == "float32"


def test_ecsv_is_typed_and_masked(release):
    body, response = download(release, "ecsv")
    assert body.startswith(b"# %ECSV 1.0")
    table = Table.read(io.BytesIO(body), format="ascii.ecsv")
    assert table["teff"].description == COLUMNS_BY_NAME["teff"].description
    assert table.meta["release"] == release.name
    _check_table(table)


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits", "votable", "parquet"])
def test_a_filtered_download_has_only_the_filtered_rows(release, fmt):
    body, _ = download(release, fmt, teff_max=4900, flag=1)
    if fmt == "csv":
        table = Table.read(io.BytesIO(body), format="ascii.csv")
    elif fmt == "votable":
        table = votable.parse(io.BytesIO(body)).get_first_table().to_table()
    elif fmt == "parquet":
        table = pq.read_table(io.BytesIO(body)).to_pydict()
    else:
        table = Table.read(io.BytesIO(body), format={"ecsv": "ascii.ecsv"}.get(fmt, fmt))
    assert len(table["teff"]) == 1 and float(table["teff"][0]) == 4774.0


@pytest.mark.parametrize("fmt", ["csv", "fits", "votable", "parquet", "ecsv"])
def test_downloads_stream_in_blocks(release_factory, settings, monkeypatch, fmt):
    import inference.downloads
    import inference.export

    settings.EXPORT_CHUNK_SIZE = 2  # rows per block, Python path
    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", 400)  # bytes per block, COPY path
    monkeypatch.setattr(inference.downloads, "PARQUET_ROW_GROUP_ROWS", 2)
    monkeypatch.setattr(inference.downloads, "ROW_BLOCK_BYTES", 400)
    positions = [(float(i), 1.0) for i in range(9)]
    release = release_factory(make_spectra(positions), label_rows([5000.0] * 9), label_rows([5000.0] * 9))
    response = Client().get(f"/api/v1/releases/{release.name}/export/", {"format": fmt})
    blocks = [block for block in response.streaming_content if block]
    assert len(blocks) >= 4
    body = b"".join(blocks)
    if fmt == "parquet":
        assert pq.ParquetFile(io.BytesIO(body)).num_row_groups >= 3
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(body)).to_pydict()
    elif fmt == "votable":
        table = votable.parse(io.BytesIO(body)).get_first_table().to_table()
    else:
        table = Table.read(io.BytesIO(body), format={"csv": "ascii.csv", "ecsv": "ascii.ecsv"}.get(fmt, fmt))
    assert len(table["ra"]) == 9 and sorted(float(ra) for ra in table["ra"]) == [float(i) for i in range(9)]


@pytest.mark.parametrize("fmt", ["csv", "csv-paper", "ecsv", "fits", "votable", "parquet"])
def test_the_python_path_writes_the_same_bytes_as_the_copy_path(release, monkeypatch, fmt):
    """SQLite (the embedded default) has no COPY: rows come through a cursor, formatted in
    Python, and must come out as the COPY path writes them."""
    import inference.downloads
    import inference.export

    copy_body, _ = download(release, fmt)
    monkeypatch.setattr(inference.export, "copy_available", lambda: False)
    monkeypatch.setattr(inference.downloads, "copy_available", lambda: False)
    python_body, _ = download(release, fmt)
    if fmt in ("csv", "csv-paper"):
        assert python_body == copy_body
    else:  # the typed formats say when they were written: compare what they hold
        assert read_rows(fmt, python_body) == read_rows(fmt, copy_body)


@pytest.mark.parametrize("fmt", ["parquet", "fits", "votable"])
def test_typed_formats_round_as_the_csv_does(release, fmt):
    """The typed formats round floats with numpy (the binary COPY sends the stored
    doubles); the CSV is rounded by PostgreSQL. Both give the same numbers: ties (half to
    even, as ``round(double precision)``), negatives that round to zero (0, never -0),
    and values with more digits than the column keeps."""
    import csv

    from inference.models import CatalogEntry

    rng = np.random.default_rng(5)
    floats = [column for column in CATALOG_COLUMNS if column.is_float]
    ids = list(CatalogEntry.objects.filter(release=release).order_by("id").values_list("id", flat=True))
    for row, pk in enumerate(ids):
        values = {}
        for j, column in enumerate(floats):
            unit = 10.0 ** -column.decimals
            values[column.field] = [(2 * j + 1) * unit / 2, -0.4 * unit, float(rng.normal(0, 300) + rng.random())][row]
        CatalogEntry.objects.filter(pk=pk).update(**values)
    text = download(release, "csv")[0].decode()
    expected = list(csv.DictReader(io.StringIO(text)))
    rows = read_rows(fmt, download(release, fmt)[0])
    for column in floats:
        want = np.array([float(row[column.name]) for row in expected], dtype=column.dtype)
        got = np.array(rows[column.name], dtype=column.dtype)
        assert want.tobytes() == got.tobytes(), (column.name, want, got)  # bit for bit: no -0 either
    j = floats.index(COLUMNS_BY_NAME["teff"])
    assert expected[0]["teff"] == str(round((2 * j + 1) / 2))  # a tie in whole K: to the even one
    assert all(expected[1][column.name] == "0" for column in floats)  # -0.4 units: 0, not -0


def read_rows(fmt: str, body: bytes) -> dict[str, list]:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(body)).to_pydict()
    if fmt == "votable":
        table = votable.parse(io.BytesIO(body)).get_first_table().to_table()
    else:
        table = Table.read(io.BytesIO(body), format={"ecsv": "ascii.ecsv"}.get(fmt, fmt))
    return {name: [None if np.ma.is_masked(v) else v for v in table[name].tolist()] for name in table.colnames}


def test_docs_column_table_is_generated_from_the_definition():
    from pathlib import Path

    from inference.columns import columns_markdown

    committed = (Path(__file__).resolve().parents[1] / "docs" / "catalog_columns.md").read_text()
    assert committed == columns_markdown(), "docs/catalog_columns.md is stale: run python manage.py catalog_columns_doc"


def test_api_schema_takes_the_column_descriptions_from_the_definition():
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    entry = response.json()["components"]["schemas"]["CatalogEntry"]["properties"]
    for column in CATALOG_COLUMNS:
        assert column.description in entry[column.field]["description"]
        assert column.ucd in entry[column.field]["description"]


def test_docs_pages_load_their_scripts_from_the_site():
    client = Client()
    for url in ("/api/docs/", "/api/redoc/"):
        page = client.get(url).content.decode()
        assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
        assert "/static/drf_spectacular_sidecar/" in page
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")


@pytest.mark.parametrize("fmt", ["fits", "votable", "parquet", "ecsv"])
def test_a_typed_download_stopped_early_leaves_the_connection_usable(release_factory, monkeypatch, fmt):
    """The client went away: the generator is closed mid-COPY, the COPY is cancelled and
    the request's connection (inside the test's transaction) answers at once."""
    import inference.downloads
    import inference.export
    from inference.downloads import FORMATS
    from inference.models import CatalogEntry

    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", 200)
    monkeypatch.setattr(inference.downloads, "ROW_BLOCK_BYTES", 200)
    monkeypatch.setattr(inference.downloads, "PARQUET_ROW_GROUP_ROWS", 2)
    positions = [(float(i), 1.0) for i in range(30)]
    release = release_factory(make_spectra(positions), label_rows([5000.0] * 30), label_rows([5000.0] * 30))
    entries = CatalogEntry.objects.filter(release=release)
    stream = FORMATS[fmt].stream(release, entries, {}, 5)
    next(stream), next(stream), next(stream)
    stream.close()
    assert entries.count() == 30


@pytest.mark.parametrize("fmt", ["csv", "csv-paper", "ecsv", "fits", "votable", "parquet"])
def test_a_filter_that_matches_nothing_by_construction_gives_an_empty_file(release, fmt):
    """Django compiles no SQL for a filter it knows matches nothing (EmptyResultSet, e.g.
    an integer bound outside its column's range): the download is an empty table, not a
    500 in the middle of the response."""
    from inference.downloads import FORMATS
    from inference.models import CatalogEntry

    body = b"".join(part if isinstance(part, bytes) else part.encode()
                    for part in FORMATS[fmt].stream(release, CatalogEntry.objects.none(), {}, 5))
    if fmt in ("csv", "csv-paper"):
        assert body.count(b"\n") == 1  # the header row only
    elif fmt == "parquet":
        assert pq.read_table(io.BytesIO(body)).num_rows == 0
    else:
        assert len(read_rows(fmt, body)["teff"]) == 0
