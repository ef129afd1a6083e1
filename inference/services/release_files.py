"""A published release's whole-table download files, written once.

A published release never changes its values, so each of its tables (the entries and the
star table) is written once in every download format into
``settings.RELEASE_FILES_ROOT/<release>/``, beside two checksum lists: ``SHA256SUMS``
(``sha256sum -c SHA256SUMS`` checks a mirrored copy) and ``manifest.json`` (per file: its
table, format, rows, bytes, SHA-256 and when it was written). A download of a whole
published table is then a file read, whatever the size of the release; a filtered download
streams from the database (:mod:`inference.downloads`).

The files are written by a task on a worker when the release is published
(``settings.RELEASE_FILES_ON_PUBLISH``) or by ``manage.py release_files``. Each file is
written under a temporary name and renamed into place, and enters the manifest only then,
so a reader never sees half a file. The star table's ``star`` column follows star merges
(:func:`inference.services.release.catalog_stars_follow_merge`): a merge that touches a
published release discards its star-table files, and they are written again. A file
written from rows read before such a discard is not recorded (the table's generation in the
manifest moved on).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.validators import slug_re
from django.db import connection, transaction

from ..downloads import FORMATS, download_file_name
from ..models import CatalogRelease
from ..selectors import release_entries, release_stars

logger = logging.getLogger(__name__)

ENTRIES, STARS = "entries", "stars"
TABLES: dict[str, tuple] = {
    ENTRIES: (release_entries, tuple(FORMATS)),
    STARS: (release_stars, tuple(name for name in FORMATS if name != "csv-paper")),  # Table 2 is per spectrum
}
MANIFEST, CHECKSUMS, LOCK = "manifest.json", "SHA256SUMS", ".lock"


@dataclass(frozen=True)
class ReleaseFile:
    """One written file of a release: ``path`` is absolute; ``name`` its file name."""

    table: str
    format: str
    name: str
    rows: int
    bytes: int
    sha256: str
    written: str
    path: Path


def release_files_dir(release: CatalogRelease) -> Path:
    """The directory of ``release``'s files (``settings.RELEASE_FILES_ROOT/<name>``).

    Raises ValueError for a name that is not a slug (release names are; this guards the
    file system against one written around the services).
    """
    if not slug_re.match(release.name or ""):
        raise ValueError(f"release name {release.name[:80]!r} is not a slug: no files for it")
    return Path(settings.RELEASE_FILES_ROOT) / release.name


@contextmanager
def _manifest_locked(directory: Path) -> Iterator[dict]:
    """The release directory's manifest, under an exclusive lock; written back on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = _manifest_read(directory)
        yield manifest
        _atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        sums = "".join(f"{entry['sha256']}  {name}\n" for name, entry in sorted(manifest["files"].items()))
        _atomic_write_text(directory / CHECKSUMS, sums)


def _manifest_read(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        manifest = {}
    manifest.setdefault("files", {})
    manifest.setdefault("generations", {})
    return manifest


def _atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


@contextmanager
def _manifest_shared(directory: Path) -> Iterator[dict | None]:
    """The release directory's manifest under a shared lock (None where there is none):
    no file is replaced or removed while it is held."""
    try:
        lock = open(directory / LOCK)
    except FileNotFoundError:
        yield None
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield _manifest_read(directory)


def release_file_open(*, release: CatalogRelease, table: str, format_name: str):
    """``(ReleaseFile, open binary file)`` of ``release``'s written ``table`` in
    ``format_name``, or None (as :func:`release_file_get`). The file is opened under the
    manifest's lock, so its bytes are the ones the manifest's checksum describes even if it
    is replaced or removed while it is read."""
    if not release.is_published:
        return None
    directory = release_files_dir(release)
    name = download_file_name(release, FORMATS[format_name], stars=table == STARS)
    with _manifest_shared(directory) as manifest:
        entry = (manifest or {}).get("files", {}).get(name)
        if entry is None or entry["format"] != format_name or entry["table"] != table:
            return None
        try:
            file = open(directory / name, "rb")
        except FileNotFoundError:
            return None
    if os.fstat(file.fileno()).st_size != entry["bytes"]:
        file.close()
        return None
    return _release_file(entry, directory, name), file


def _release_file(entry: dict, directory: Path, name: str) -> ReleaseFile:
    return ReleaseFile(path=directory / name, name=name, **{key: entry[key] for key in
                                                           ("table", "format", "rows", "bytes", "sha256", "written")})


def release_file_get(*, release: CatalogRelease, table: str, format_name: str) -> ReleaseFile | None:
    """The written file of ``release``'s ``table`` in ``format_name``, or None where there is
    none (not written yet, discarded, the release not published, or the file on disk no
    longer the size the manifest records)."""
    opened = release_file_open(release=release, table=table, format_name=format_name)
    if opened is None:
        return None
    written, file = opened
    file.close()
    return written


def release_files_list(*, release: CatalogRelease) -> list[ReleaseFile]:
    """Every file of ``release`` that :func:`release_file_get` would serve, by name (one
    read of the manifest)."""
    if not release.is_published:
        return []
    directory = release_files_dir(release)
    found = []
    with _manifest_shared(directory) as manifest:
        for name, entry in (manifest or {}).get("files", {}).items():
            try:
                size = (directory / name).stat().st_size
            except FileNotFoundError:
                continue
            if size == entry["bytes"]:
                found.append(_release_file(entry, directory, name))
    return sorted(found, key=lambda written: written.name)


def release_files_write(*, release: CatalogRelease, tables: tuple[str, ...] = (ENTRIES, STARS),
                        formats: tuple[str, ...] | None = None, chunk_size: int | None = None) -> list[ReleaseFile]:
    """Write ``release``'s ``tables`` in ``formats`` (by default every download format of
    each table); return the files recorded.

    Only a published release has files (a draft can still change). Writing again replaces
    each file and its manifest entry, so a re-run never leaves two copies. Raises
    ValueError for a release that is not published, or an unknown table or format.
    """
    release = CatalogRelease.objects.get(pk=release.pk)
    if not release.is_published:
        raise ValueError(f"release {release.name} is not published: only a published release has files")
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(unknown)}: the tables are {', '.join(TABLES)}")
    if formats is not None:
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown format(s) {', '.join(unknown)}: the formats are {', '.join(FORMATS)}")
    chunk_size = chunk_size or settings.EXPORT_CHUNK_SIZE
    directory = release_files_dir(release)
    directory.mkdir(parents=True, exist_ok=True)
    recorded = []
    for table in tables:
        rows_of, table_formats = TABLES[table]
        for format_name in table_formats:
            if formats is not None and format_name not in formats:
                continue
            with _manifest_locked(directory) as manifest:
                generation = manifest["generations"].get(table, 0)
            written, partial = _write_one(release, table, FORMATS[format_name], rows_of, chunk_size, directory)
            with _manifest_locked(directory) as manifest:
                if manifest["generations"].get(table, 0) != generation:
                    partial.unlink(missing_ok=True)
                    logger.info("release %s: %s discarded while it was written", release.name, written.name)
                    continue
                # Renamed into place with its manifest entry, under the lock: a reader sees
                # the old file with the old checksum or the new with the new.
                os.replace(partial, written.path)
                entry = asdict(written)
                del entry["path"], entry["name"]
                manifest["files"][written.name] = entry
            recorded.append(written)
    return recorded


def _write_one(release, table, fmt, rows_of, chunk_size, directory: Path) -> tuple[ReleaseFile, Path]:
    """Write one file under a temporary name of its own (two writers never share one);
    return what it is and that temporary path, which the caller renames into place."""
    name = download_file_name(release, fmt, stars=table == STARS)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
    partial = Path(temporary)
    digest = hashlib.sha256()
    size = 0
    try:
        # One snapshot for the count and every row written (where this opens the transaction).
        outermost = not connection.in_atomic_block
        with transaction.atomic(), open(handle, "wb") as out:
            if outermost and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = rows_of(release=release)
            count = rows.count()
            for piece in fmt.stream(release, rows, {}, chunk_size):
                data = piece.encode() if isinstance(piece, str) else piece
                digest.update(data)
                size += len(data)
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.chmod(partial, 0o644)  # mkstemp makes it private; the web servers read it
    written = ReleaseFile(table=table, format=fmt.name, name=name, rows=count, bytes=size,
                          sha256=digest.hexdigest(), written=datetime.now(UTC).isoformat(timespec="seconds"),
                          path=directory / name)
    return written, partial


def release_files_discard(*, release: CatalogRelease, table: str) -> list[str]:
    """Remove ``release``'s files of ``table`` and move its generation on, so that a file
    being written from older rows is not recorded; return the names removed."""
    directory = release_files_dir(release)
    if not directory.exists():
        return []
    removed = []
    with _manifest_locked(directory) as manifest:
        manifest["generations"][table] = manifest["generations"].get(table, 0) + 1
        for name, entry in list(manifest["files"].items()):
            if entry["table"] == table:
                del manifest["files"][name]
                (directory / name).unlink(missing_ok=True)
                removed.append(name)
    return sorted(removed)


def release_files_remove(release: CatalogRelease) -> None:
    """After ``release``'s row is deleted: remove its directory of files once the deletion
    commits."""
    directory = release_files_dir(release)
    transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))


def release_files_schedule(*, release: CatalogRelease, tables: tuple[str, ...] = (ENTRIES, STARS)) -> None:
    """Have workers write ``release``'s files of ``tables``, one task per file, once the
    current transaction commits, where ``settings.RELEASE_FILES_ON_PUBLISH`` is on."""
    if not settings.RELEASE_FILES_ON_PUBLISH:
        return
    from celery import current_app

    def send() -> None:
        task = current_app.tasks["tasks.release_file_write"]
        for table in tables:
            for format_name in TABLES[table][1]:
                task.apply_async(args=[release.pk, table, format_name], queue=settings.CELERY_CPU_QUEUE)

    transaction.on_commit(send)
