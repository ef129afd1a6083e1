import csv

import pytest
from django.test import Client

from core.flags import CATALOG_FLAGS
from core.labels import LABELS
from inference.export import spreadsheet_safe
from spectra.models import Star

from .conftest import label_rows, make_spectra

pytestmark = pytest.mark.django_db

TABLE_2 = [
    "starid", "Gaia_source_id", "medres_specid", "medid_blue", "medid_red", "RA", "Dec", "S/N_blue", "S/N_red",
    "RV_blue", "RV_red", "Teff", "logg", "[Fe/H]", "[C/H]", "[N/H]", "[O/H]", "[Mg/H]", "[Al/H]", "[Si/H]",
    "[S/H]", "[Ca/H]", "[Ti/H]", "[Cr/H]", "[Ni/H]", "[Cu/H]", "Flag",
]


def read_export(response):
    assert response.status_code == 200
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    comments = [line for line in text.splitlines() if line.startswith("#")]
    rows = list(csv.reader(line for line in text.splitlines() if not line.startswith("#")))
    return comments, rows[0], rows[1:]


def test_export_has_one_header_row_and_the_paper_csv_has_table_2_columns(release_factory):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0)])
    release = release_factory(spectra, label_rows([4800.0, 6700.0, 5300.0]), label_rows([4800.0, 6700.0, 5000.0]))
    comments, header, rows = read_export(Client().get(f"/api/v1/releases/{release.name}/export.csv"))
    assert comments == []  # no '#' lines: STILTS's CSV reader (and RFC 4180) allow none
    assert header[:3] == ["designation", "gaia_source_id", "medres_specid"] and header[-1] == "flag_bits"
    assert len(rows) == 3
    hot = next(r for r in rows if float(r[header.index("teff")]) == 6700.0)
    assert hot[header.index("flag")] == "1" and hot[header.index("flag_bits")] == str(CATALOG_FLAGS.mask("HOT_STAR_NO_ABUNDANCES"))
    assert [hot[header.index(label.field)] for label in LABELS if label.is_abundance] == [""] * 13  # no value
    assert float(hot[header.index("logg")]) == 2.5
    disagree = next(r for r in rows if float(r[header.index("teff")]) == 5300.0)
    assert int(disagree[header.index("flag_bits")]) & CATALOG_FLAGS.mask("MODELS_DISAGREE_TEFF")
    _, paper, paper_rows = read_export(Client().get(f"/api/v1/releases/{release.name}/export.csv", {"format": "csv-paper"}))
    assert paper[: len(TABLE_2)] == TABLE_2 and paper[-1] == "Flag_bits"
    hot = next(r for r in paper_rows if float(r[paper.index("Teff")]) == 6700.0)
    assert [hot[paper.index(label.column)] for label in LABELS if label.is_abundance] == ["-9999"] * 13
    _, _, good = read_export(Client().get(f"/api/v1/releases/{release.name}/export.csv", {"flag": 1, "teff_max": 5000}))
    assert [float(r[header.index("teff")]) for r in good] == [4800.0]


def test_export_refuses_bad_filters(release_factory):
    spectra = make_spectra([(10.0, 10.0)])
    release = release_factory(spectra, label_rows([4800.0]), label_rows([4800.0]))
    response = Client().get(f"/api/v1/releases/{release.name}/export.csv", {"teff_min": "hot"})
    assert response.status_code == 400


def test_export_neutralises_spreadsheet_formulas(release_factory):
    spectra = make_spectra([(10.0, 10.0)])
    Star.objects.filter(pk=spectra[0].star_id).update(designation='=HYPERLINK("http://x")')
    release = release_factory(spectra, label_rows([4800.0]), label_rows([4800.0]))
    _, header, rows = read_export(Client().get(f"/api/v1/releases/{release.name}/export.csv"))
    assert rows[0][header.index("designation")] == "'=HYPERLINK(\"http://x\")"
    assert float(rows[0][header.index("fe_h")]) == -0.2  # numbers are never altered
    assert rows[0][header.index("medres_specid")] == spectra[0].medres_specid
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)" and spreadsheet_safe("LAMOST J1") == "LAMOST J1"


def test_export_output_is_streamed_in_blocks(release_factory, settings, monkeypatch):
    import inference.export

    settings.EXPORT_CHUNK_SIZE = 2  # rows per block, Python path
    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", 300)  # bytes per block, COPY path
    positions = [(float(i), 1.0) for i in range(7)]
    release = release_factory(make_spectra(positions), label_rows([5000.0] * 7), label_rows([5000.0] * 7))
    response = Client().get(f"/api/v1/releases/{release.name}/export.csv")
    blocks = list(response.streaming_content)
    assert len(blocks) >= 4  # the column header, then several blocks of rows
    assert sum(block.count(b"\n") for block in blocks) == 8  # column header + 7 rows


def test_export_stopped_early_leaves_the_connection_usable(release_factory, monkeypatch):
    import inference.export
    from inference.models import CatalogEntry

    monkeypatch.setattr(inference.export, "_COPY_BLOCK_BYTES", 100)
    positions = [(float(i), 1.0) for i in range(20)]
    release = release_factory(make_spectra(positions), label_rows([5000.0] * 20), label_rows([5000.0] * 20))
    stream = inference.export.stream_csv(release, CatalogEntry.objects.filter(release=release), {}, 5)
    next(stream), next(stream), next(stream)
    stream.close()  # the client went away: the generator is closed mid-COPY
    assert CatalogEntry.objects.filter(release=release).count() == 20
