"""A published release's whole tables, written once as files and served from them."""

import base64
import hashlib
import io
import json
import time

import pandas as pd
import pytest
from django.test import Client

from inference.download_api import RangeNotSatisfiable, byte_range
from inference.downloads import FORMATS
from inference.selectors import release_entries, release_stars
from inference.services import release_files
from inference.services.release_files import (
    ENTRIES,
    STARS,
    TABLES,
    release_file_get,
    release_files_dir,
    release_files_discard,
    release_files_list,
    release_files_write,
)
from spectra.models import Star

from .conftest import label_rows, make_spectra
from .test_downloads import read_rows

pytestmark = pytest.mark.django_db

URL = {ENTRIES: "/api/v1/releases/{name}/export/", STARS: "/api/v1/releases/{name}/stars/export/"}


@pytest.fixture
def files_root(settings, tmp_path):
    settings.RELEASE_FILES_ROOT = tmp_path / "releases"
    return settings.RELEASE_FILES_ROOT


@pytest.fixture
def release(release_factory, files_root):
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0), (13.0, 13.0)])
    Star.objects.filter(pk=spectra[1].star_id).update(gaia_source_id=None)
    return release_factory(spectra, label_rows([4773.9, 6700.0, 5000.0, 5500.0]),
                           label_rows([4800.0, 6700.0, 5300.0, 5510.0]))


def get(release, table: str, fmt: str, if_none_match: str | None = None, **params):
    headers = {"HTTP_IF_NONE_MATCH": if_none_match} if if_none_match else {}
    response = Client().get(URL[table].format(name=release.name), {"format": fmt, **params}, **headers)
    assert response.status_code in (200, 304), response.content[:300]
    return (b"".join(response.streaming_content) if response.status_code == 200 else b""), response


def streamed(release, table: str, fmt: str) -> bytes:
    rows_of = release_entries if table == ENTRIES else release_stars
    pieces = FORMATS[fmt].stream(release, rows_of(release=release), {}, 2)
    return b"".join(piece.encode() if isinstance(piece, str) else piece for piece in pieces)


def test_publishing_writes_every_table_in_every_format_and_downloads_are_served_from_them(
        settings, release_factory, files_root, django_capture_on_commit_callbacks):
    settings.RELEASE_FILES_ON_PUBLISH = True
    spectra = make_spectra([(10.0, 10.0), (11.0, 11.0)])
    with django_capture_on_commit_callbacks(execute=True):
        release = release_factory(spectra, label_rows([5000.0, 5200.0]), label_rows([5010.0, 5190.0]))
    written = {(f.table, f.format) for f in release_files_list(release=release)}
    assert written == {(table, fmt) for table, (_, formats) in TABLES.items() for fmt in formats}
    assert len(written) == 11  # six formats of the entries, five of the star table (no paper layout)
    for table, fmt in sorted(written):
        body, response = get(release, table, fmt)
        digest = hashlib.sha256(body).hexdigest()
        assert response["ETag"] == f'"{digest}"'
        assert response["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
        assert response["Content-Type"].startswith(FORMATS[fmt].media_type)
        assert response["Content-Length"] == str(len(body))
        assert response["Content-Disposition"] == f'attachment; filename="{release_file_get(release=release, table=table, format_name=fmt).name}"'
        if fmt.startswith("csv"):
            assert body == streamed(release, table, fmt)
        else:  # the same rows as a streamed download (the provenance says when each was written)
            assert read_rows(fmt, body) == read_rows(fmt, streamed(release, table, fmt))


def test_the_release_lists_its_files_with_checksums_and_urls_that_serve_them(release, files_root):
    assert Client().get(f"/api/v1/releases/{release.name}/").json()["files"] == []
    release_files_write(release=release, formats=("fits", "csv"))
    listed = Client().get(f"/api/v1/releases/{release.name}/").json()["files"]
    assert [(f["name"], f["table"], f["format"]) for f in listed] == [
        (f"spcanet-{release.name}-stars.csv", STARS, "csv"), (f"spcanet-{release.name}-stars.fits", STARS, "fits"),
        (f"spcanet-{release.name}.csv", ENTRIES, "csv"), (f"spcanet-{release.name}.fits", ENTRIES, "fits")]
    for listed_file in listed:
        response = Client().get(listed_file["url"])
        body = b"".join(response.streaming_content)
        assert hashlib.sha256(body).hexdigest() == listed_file["sha256"] and len(body) == listed_file["bytes"]
        assert response["ETag"] == f'"{listed_file["sha256"]}"'


def test_the_checksum_list_and_manifest_describe_the_files_on_disk(release, files_root):
    recorded = release_files_write(release=release)
    directory = release_files_dir(release)
    sums = dict(reversed(line.split("  ")) for line in (directory / "SHA256SUMS").read_text().splitlines())
    manifest = json.loads((directory / "manifest.json").read_text())["files"]
    assert set(sums) == set(manifest) == {f.name for f in recorded}
    for written in recorded:
        data = (directory / written.name).read_bytes()
        assert sums[written.name] == manifest[written.name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest[written.name]["bytes"] == len(data)
        assert written.rows == (4 if written.table == ENTRIES else release.star_count)
    frame = pd.read_csv(directory / f"spcanet-{release.name}.csv", dtype={"gaia_source_id": "Int64"})
    assert len(frame) == 4 and frame["gaia_source_id"].isna().sum() == 1


def test_writing_again_replaces_the_files_and_leaves_nothing_else(release, files_root):
    first = {f.name: f.sha256 for f in release_files_write(release=release)}
    second = {f.name: f.sha256 for f in release_files_write(release=release, tables=(ENTRIES,), formats=("csv",))}
    assert set(second) == {f"spcanet-{release.name}.csv"} and second.items() <= first.items()
    names = sorted(p.name for p in release_files_dir(release).iterdir())
    assert names == sorted([*first, "SHA256SUMS", "manifest.json", ".lock"])  # no partial file left
    assert len(json.loads((release_files_dir(release) / "manifest.json").read_text())["files"]) == len(first)


def test_a_filtered_download_streams_from_the_database_even_with_files(release, files_root):
    release_files_write(release=release)
    body, response = get(release, ENTRIES, "csv", teff_min=5400)
    assert "ETag" not in response
    assert sorted(pd.read_csv(io.BytesIO(body))["teff"]) == [5500.0, 6700.0]  # of 4773.9, 6700, 5000, 5500


def test_a_client_holding_the_file_gets_not_modified(release, files_root):
    release_files_write(release=release)
    body, response = get(release, ENTRIES, "parquet")
    _, again = get(release, ENTRIES, "parquet", if_none_match=response["ETag"])
    assert again.status_code == 304 and again["ETag"] == response["ETag"]
    _, other = get(release, ENTRIES, "parquet", if_none_match='"0000"')
    assert other.status_code == 200


def test_a_broken_download_resumes_with_a_byte_range(release, files_root):
    release_files_write(release=release, tables=(ENTRIES,), formats=("fits",))
    whole, response = get(release, ENTRIES, "fits")
    assert response.status_code == 200 and response["Accept-Ranges"] == "bytes"
    size, etag = len(whole), response["ETag"]
    url = URL[ENTRIES].format(name=release.name)

    def ranged(value: str, **headers):
        return Client().get(url, {"format": "fits"}, HTTP_RANGE=value, **headers)

    for value, first, last in (("bytes=1000-", 1000, size - 1), ("bytes=10-2889", 10, 2889),
                               ("bytes=-100", size - 100, size - 1), (f"bytes=5-{size + 50}", 5, size - 1)):
        part = ranged(value, HTTP_IF_RANGE=etag)
        assert part.status_code == 206, value
        assert part["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert b"".join(part.streaming_content) == whole[first:last + 1]
        assert int(part["Content-Length"]) == last - first + 1
    assert ranged(f"bytes={size}-").status_code == 416
    assert ranged(f"bytes={size}-")["Content-Range"] == f"bytes */{size}"
    # Several ranges, another unit, nonsense, or a range of another version: the whole file.
    for value, headers in (("bytes=0-1,5-6", {}), ("rows=0-10", {}), ("bytes=x-y", {}),
                           ("bytes=0-10", {"HTTP_IF_RANGE": '"other"'})):
        full = ranged(value, **headers)
        assert full.status_code == 200 and b"".join(full.streaming_content) == whole, value


def test_a_damaged_or_missing_file_is_not_served(release, files_root):
    release_files_write(release=release)
    csv_file = release_files_dir(release) / f"spcanet-{release.name}.csv"
    expected = csv_file.read_bytes()
    csv_file.write_bytes(expected[:-10])  # truncated on disk: the size no longer matches the manifest
    body, response = get(release, ENTRIES, "csv")
    assert "ETag" not in response and body == expected  # streamed, whole
    csv_file.unlink()
    body, response = get(release, ENTRIES, "csv")
    assert "ETag" not in response and body == expected


def test_a_draft_release_has_no_files(release, release_factory, files_root):
    draft = release_factory([release.entries.first().spectrum], label_rows([5000.0]), label_rows([5000.0]),
                            name="draft", publish=False)
    with pytest.raises(ValueError, match="not published"):
        release_files_write(release=draft)
    assert release_file_get(release=draft, table=ENTRIES, format_name="csv") is None
    with pytest.raises(ValueError, match="unknown format"):
        release_files_write(release=release, formats=("xlsx",))


def test_a_file_written_from_rows_read_before_a_discard_is_not_recorded(release, files_root, monkeypatch):
    original = release_files._write_one

    def discarded_meanwhile(release_, table, *args):
        written = original(release_, table, *args)
        release_files_discard(release=release_, table=table)  # e.g. a star merge while this was written
        return written

    monkeypatch.setattr(release_files, "_write_one", discarded_meanwhile)
    assert release_files_write(release=release, tables=(STARS,), formats=("csv",)) == []
    assert release_file_get(release=release, table=STARS, format_name="csv") is None
    assert not (release_files_dir(release) / f"spcanet-{release.name}-stars.csv").exists()


def test_a_star_merge_rewrites_the_star_files_of_a_published_release(
        settings, release_factory, files_root, django_capture_on_commit_callbacks):
    from spectra.services.star_identity import stars_merge_duplicates

    settings.RELEASE_FILES_ON_PUBLISH = True
    spectra = make_spectra([(20.0, 20.0), (20.0 + 0.3 / 3600, 20.0)])  # one star ingested twice
    Star.objects.filter(pk=spectra[1].star_id).update(gaia_source_id=None)
    with django_capture_on_commit_callbacks(execute=True):
        release = release_factory(spectra, label_rows([5000.0, 5020.0]), label_rows([5000.0, 5020.0]))
    entries_before = release_file_get(release=release, table=ENTRIES, format_name="csv")
    stars_before = pd.read_csv(release_file_get(release=release, table=STARS, format_name="csv").path)
    assert stars_before["star"].notna().sum() == 2
    with django_capture_on_commit_callbacks(execute=True):
        stars_merge_duplicates(radius_arcsec=1.0)
    stars_after = release_file_get(release=release, table=STARS, format_name="csv")
    assert stars_after is not None
    frame = pd.read_csv(stars_after.path)
    assert frame["star"].notna().sum() == 1 and len(frame) == 2  # both published rows, one unlinked
    body, response = get(release, STARS, "csv")
    assert response["ETag"] == f'"{stars_after.sha256}"' and body == streamed(release, STARS, "csv")
    assert len(release_files_list(release=release)) == 11
    assert release_file_get(release=release, table=ENTRIES, format_name="csv") == entries_before  # untouched


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_writes_the_files_of_a_release_published_through_the_broker(
        settings, release_factory, files_root):
    from .test_pipeline import _send_to_workers, _stop, _worker, _worker_environment

    env, routes = _worker_environment(settings)
    env.update(RELEASE_FILES_ROOT=str(files_root))
    settings.CELERY_CPU_QUEUE = env["CELERY_CPU_QUEUE"]
    settings.RELEASE_FILES_ON_PUBLISH = True
    worker = _worker(env, env["CELERY_CPU_QUEUE"])
    _send_to_workers(routes)
    try:
        release = release_factory(make_spectra([(5.0, 5.0), (6.0, 6.0)]), label_rows([5000.0, 5200.0]),
                                  label_rows([5010.0, 5190.0]), name="by-worker")
        deadline = time.monotonic() + 120
        while len(release_files_list(release=release)) < 11 and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.5)
        assert len(release_files_list(release=release)) == 11
        body, response = get(release, ENTRIES, "csv")
        assert response["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"' and len(pd.read_csv(io.BytesIO(body))) == 2
    finally:
        _send_to_workers(None)
        _stop(worker)


def test_a_deleted_release_takes_its_files(release, files_root, django_capture_on_commit_callbacks):
    release_files_write(release=release, tables=(ENTRIES,), formats=("csv",))
    directory = release_files_dir(release)
    assert (directory / "SHA256SUMS").is_file()
    with django_capture_on_commit_callbacks(execute=True):
        release.delete()
    assert not directory.exists()


def test_odd_range_and_conditional_headers(release, files_root):
    release_files_write(release=release, tables=(ENTRIES,), formats=("csv",))
    whole, response = get(release, ENTRIES, "csv")
    etag, url = response["ETag"], URL[ENTRIES].format(name=release.name)
    for value in ("bytes=\u00b2-", "bytes=-\u00b2", "bytes=-", "bytes= 1 - 2 3"):  # malformed: the whole file
        full = Client().get(url, {"format": "csv"}, HTTP_RANGE=value)
        assert full.status_code == 200 and b"".join(full.streaming_content) == whole, value
    for tag in ("*", f"W/{etag}", f'"other", {etag}'):  # RFC 9110: any tag, weakly compared, or *
        assert Client().get(url, {"format": "csv"}, HTTP_IF_NONE_MATCH=tag).status_code == 304, tag
    with pytest.raises(RangeNotSatisfiable):  # an empty file has no last bytes
        byte_range("bytes=-5", 0)


def test_two_writers_of_one_file_leave_the_bytes_its_checksum_describes(release, files_root, monkeypatch):
    original = release_files._write_one
    calls = []

    def interleaved(release_, table, fmt, *args):
        calls.append(fmt.name)
        if len(calls) == 1:  # a second writer (a redelivered task, the command) runs meanwhile
            release_files_write(release=release_, tables=(table,), formats=(fmt.name,))
        return original(release_, table, fmt, *args)

    monkeypatch.setattr(release_files, "_write_one", interleaved)
    release_files_write(release=release, tables=(ENTRIES,), formats=("votable",))
    written = release_file_get(release=release, table=ENTRIES, format_name="votable")
    assert len(calls) == 2
    assert hashlib.sha256(written.path.read_bytes()).hexdigest() == written.sha256
    assert not [p for p in release_files_dir(release).iterdir() if p.name.endswith(".partial")]


def test_a_release_name_that_is_not_a_slug_is_refused(release, files_root):
    from inference.services.release import catalog_release_create

    for name in ("..", "a/../..", "", "line\nbreak"):
        with pytest.raises(ValueError, match="slug"):
            catalog_release_create(name=name, formal_model=release.formal_model,
                                   alternate_model=release.alternate_model)
    release.name = ".."  # written around the services
    with pytest.raises(ValueError, match="not a slug"):
        release_files_dir(release)
