"""Ingest of spectrum files into the catalog: read, preprocess, store arrays, write rows.

Files are handled in batches: each batch is read (a bad file is recorded and skipped,
never fatal), preprocessed as one vectorised batch, its arrays written to one shard, and
its stars, spectra and source-file records written in one transaction with upserts, so
an interrupted or repeated ingest never duplicates anything. A file whose sha256 is
already recorded as ingested is skipped without being parsed.

Parsing and preprocessing run in worker threads (decompression and the compiled kernels
release the GIL) while this thread writes finished batches to the database; at most
``INGEST_THREADS + 1`` batches are in flight, so memory does not grow with the survey.
"""

import csv
import hashlib
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy import units as u
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef

from core.bulk import bulk_upsert
from core.flags import SPECTRUM_FLAGS

from ..array_store import ArrayStore, ArrayStoreError
from ..identifiers import gaia_source_id_from_objname, medres_specid, night_date, pipeline_version
from ..io import CorruptFileError, SpectrumFile, SpectrumFileError, read_spectrum_file
from ..models import SourceFile, Spectrum, SpectrumCopy, Star
from .star_identity import sky_cells_lock

if TYPE_CHECKING:  # imported where used: numba, scipy and astropy.coordinates load with ingest, not with the site
    from ..processing.pipeline import PreprocessConfig, PreprocessedBatch
    from ..processing.rv import TemplateBank

SPECTRUM_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fz")


@dataclass
class IngestSummary:
    files_seen: int = 0
    files_unchanged: int = 0
    files_stale: int = 0  # files read again: spectra stored from them came from an older preprocessing
    files_ingested: int = 0
    failures: Counter = field(default_factory=Counter)  # error kind -> files
    spectra_written: int = 0
    copies_not_used: int = 0  # spectra already stored from a copy at least as good
    stale_kept: int = 0  # spectra older code made, kept because this code's result is worse
    stale_kept_results: Counter = field(default_factory=Counter)  # this code's result for them: status, flag names
    spectra_by_status: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)  # flag name -> spectra

    def add(self, other: "IngestSummary") -> None:
        """Add ``other``'s counts to these (one summary for several ingest calls)."""
        for name in ("files_seen", "files_unchanged", "files_stale", "files_ingested", "spectra_written",
                     "copies_not_used", "stale_kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)
        self.stale_kept_results.update(other.stale_kept_results)
        self.spectra_by_status.update(other.spectra_by_status)
        self.flags.update(other.flags)

    def lines(self) -> list[str]:
        out = [
            f"files: {self.files_seen} seen, {self.files_ingested} ingested, {self.files_unchanged} unchanged, "
            f"{sum(self.failures.values())} failed",
        ]
        if self.files_stale:
            out.append(f"  ingested again, their spectra of an older preprocessing version: {self.files_stale}")
        out += [f"  failed ({kind}): {count}" for kind, count in sorted(self.failures.items())]
        out.append(f"spectra: {self.spectra_written} written")
        if self.copies_not_used:
            out.append(f"  kept as stored (a better copy, or a newer preprocessing version): {self.copies_not_used}")
        if self.stale_kept:
            out.append(f"  kept at their older preprocessing version, this version's result being worse "
                       f"(failed or rejected where it was not): {self.stale_kept}")
            out += [f"    this version's result, {what}: {count}" for what, count in sorted(self.stale_kept_results.items())]
        out += [f"  {status}: {count}" for status, count in sorted(self.spectra_by_status.items())]
        out += [f"  flag {name}: {count}" for name, count in sorted(self.flags.items())]
        return out


def spectrum_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files named, and spectrum files found under directories named, in sorted order."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SPECTRUM_SUFFIXES))
        else:
            yield path


@dataclass
class _ReadFile:
    path: Path
    sha256: str
    size: int
    parsed: SpectrumFile | None = None
    error: SpectrumFileError | None = None
    data: bytes | None = None  # the file's bytes until parsed


def spectra_ingest(
    *,
    paths: Iterable[str | Path],
    rv_catalog: dict[tuple[int, int | None], tuple[float, float]] | None = None,
    templates: "TemplateBank | None" = None,
    batch_files: int = 32,
    progress: Callable[[int], None] | None = None,
    config: "PreprocessConfig | None" = None,
    reread: bool = False,
) -> IngestSummary:
    """Ingest files (and directory trees). ``rv_catalog`` maps (OBSID, LMJM or None for
    every spectrum of the observation) to (RV blue, RV red) in km/s; arms without a
    catalog RV are measured against ``templates``. With ``reread``, files already
    ingested are read again too (``ingest_spectra --stale``: their stored spectra are
    replaced only by results at least as good).

    A bad file is recorded and the rest goes on. An array store that cannot take a shard
    (disk full, read-only) raises ArrayStoreError: the batches written before are kept,
    no file is recorded as failed for it, and a later run goes on from there.
    """
    summary = IngestSummary()
    store = ArrayStore(settings.SPECTRA_ARRAY_ROOT)
    max_bytes = settings.SPECTRUM_FILE_MAX_BYTES
    rv_catalog = rv_catalog or {}
    threads = max(1, settings.INGEST_THREADS)
    in_flight: deque[tuple[Future, int]] = deque()

    def finish_oldest() -> None:
        future, size = in_flight.popleft()
        for prepared in future.result():
            _write_batch(prepared, summary)
        if progress:
            progress(size)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest") as pool:
        try:
            for batch in _batches(spectrum_files(paths), batch_files):
                reads = _new_files(batch, summary, max_bytes, reread)
                in_flight.append(
                    (pool.submit(_prepare_batch, reads, store, rv_catalog, templates, config, max_bytes), len(batch))
                )
                while len(in_flight) > threads:
                    finish_oldest()
            while in_flight:
                finish_oldest()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # batches not started never start
            raise
    return summary


def _batches(paths: Iterable[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for path in paths:
        batch.append(path)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read(path: Path, max_bytes: int) -> _ReadFile:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            # Not read, so not hashed: keyed by path like an unreadable file.
            read = _ReadFile(path, hashlib.sha256(str(path).encode()).hexdigest(), size)
            read.error = CorruptFileError(str(path), f"{size} bytes, more than the {max_bytes} a spectrum file may have")
            return read
        data = path.read_bytes()
    except OSError as error:
        # No content to hash: key the failure record by the path, so it is recorded once
        # per path and a later readable copy is ingested under its real sha256.
        read = _ReadFile(path, hashlib.sha256(str(path).encode()).hexdigest(), 0)
        read.error = SpectrumFileError(str(path), f"cannot read the file ({error.strerror or error})")
        return read
    return _ReadFile(path, hashlib.sha256(data).hexdigest(), len(data), data=data)


def _new_files(paths: list[Path], summary: IngestSummary, max_bytes: int, reread: bool = False) -> list[_ReadFile]:
    """Read and hash the batch's files; drop those whose content is already ingested.

    A file counts as already ingested when its record says so, every spectrum it holds
    has its copy recorded, and it holds no copy, unread by this installation's
    preprocessing (``PREPROCESSING_VERSION``), of a spectrum an older version made
    (:func:`_stale_files`); with ``reread``, every file is read. A file whose spectra were
    damaged by a worse copy before copies were recorded is therefore read again, and its
    better copies restore them; so is a file holding spectra older code made.
    """
    reads = [_read(path, max_bytes) for path in paths]
    summary.files_seen += len(reads)
    shas = [r.sha256 for r in reads]
    known = {
        sha256
        for sha256, expected, copies in SourceFile.objects.filter(
            sha256__in=shas, status=SourceFile.Status.INGESTED
        ).annotate(copies_recorded=Count("copies")).values_list("sha256", "spectra_count", "copies_recorded")
        if copies >= expected
    }
    stale = known if reread else (_stale_files(sorted(known)) if known else set())  # (a new file: no query)
    new, seen_in_batch = [], set()
    for read in reads:
        if (read.sha256 in known and read.sha256 not in stale) or read.sha256 in seen_in_batch:
            summary.files_unchanged += 1
            continue
        summary.files_stale += read.sha256 in stale
        seen_in_batch.add(read.sha256)
        new.append(read)
    return new


def _older_versions(versions: Iterable[str]) -> set[str]:
    """Those of ``versions`` older than this installation's preprocessing (blank and
    other labels are not versions: never older)."""
    from ..processing.pipeline import PREPROCESSING_VERSION, preprocessing_version_key

    current = preprocessing_version_key(PREPROCESSING_VERSION)
    return {v for v in versions if (key := preprocessing_version_key(v)) is not None and key < current}


def _stale_files(shas: list[str]) -> set[str]:
    """Of the files ``shas``, those holding a copy, not yet read by this installation's
    preprocessing, of a spectrum stored at an older version: the file it is stored from,
    and any other copy of it, which this version may read better. Once this version has
    read a copy it is not read again for it (a spectrum kept at its older version because
    this version's results are worse stays so: its files are not read at every run)."""
    from ..processing.pipeline import PREPROCESSING_VERSION

    rows = list(SpectrumCopy.objects.filter(source_file__sha256__in=shas)
                .exclude(spectrum__preprocessing_version=PREPROCESSING_VERSION)
                .exclude(preprocessing_version=PREPROCESSING_VERSION)
                .values_list("source_file__sha256", "spectrum__preprocessing_version").distinct())
    older = _older_versions({version for _, version in rows})
    return {sha for sha, version in rows if version in older}


def spectra_stale_versions() -> dict[str, int]:
    """Stored spectra of an older preprocessing version than this installation's, per
    version (counted over the index on ``(preprocessing_version, status)``). Spectra of a
    newer version (a database shared with a newer installation) are not counted: older
    code never replaces them; nor are those whose version is no version (blank, or the
    synthetic demo catalog's)."""
    rows = Spectrum.objects.values("preprocessing_version").annotate(n=Count("pk")).order_by("preprocessing_version")
    counts = {row["preprocessing_version"]: row["n"] for row in rows}
    older = _older_versions(counts)
    return {version: n for version, n in counts.items() if version in older}


@dataclass
class StaleBatch:
    """Files to ingest again (:func:`spectra_stale_batches`) and the catalog RVs of their spectra."""

    paths: list[str]
    rv_catalog: dict[tuple[int, int | None], tuple[float, float]]  # (OBSID, LMJM) -> (blue, red), as rv_catalog_read


def spectra_stale_batches(*, batch_files: int = 1000) -> Iterator[StaleBatch]:
    """The files holding the spectra an older preprocessing version made, ``batch_files`` at a time.

    A model reads only spectra of its own preprocessing version
    (``inference.selectors.spectra_to_predict``): spectra stored by older code wait
    until they are ingested again. This yields the files to read: every file holding a
    copy of such a spectrum, read by this version already or not (a spectrum kept at
    its older version because this version's result was worse is tried again: the RV
    templates or a catalog may have come since), the one it is stored from and the other
    copies, in source-file order, from the paths recorded at ingest; then the recorded
    paths of such spectra whose own file has no copy recorded (from before copies were
    kept). With each batch come the RVs the spectra of its files
    (stale or not: all are read again) took from an input catalog, so that preprocessing
    them again uses the same RVs rather than measuring new ones where no catalog is
    given. A coadd's RV is keyed (OBSID, None), which serves every exposure of the
    observation without its own key, so it is left out where an exposure of the same
    observation had no catalog RV. Memory is bounded by the batch, whatever the number
    of stale spectra; rows changed by ingesting a batch do not move the pagination.
    """
    older = sorted(spectra_stale_versions())
    if not older:
        return
    stale = Spectrum.objects.filter(preprocessing_version__in=older)
    last = 0
    while True:
        files = list(SourceFile.objects.filter(pk__gt=last, copies__spectrum__in=stale).order_by("pk").distinct()
                     .values_list("pk", "path")[:batch_files])
        if not files:
            break
        last = files[-1][0]
        # (Every spectrum these files hold is read again, stale or not: the catalog RVs of all.)
        held = Spectrum.objects.filter(copies__source_file_id__in=[pk for pk, _ in files])
        yield StaleBatch(paths=[path for _, path in files], rv_catalog=_stale_rv_catalog(held))
    own_copy = SpectrumCopy.objects.filter(spectrum=OuterRef("pk"), source_file__sha256=OuterRef("source_sha256"))
    uncopied = stale.exclude(source_sha256="").filter(~Exists(own_copy))
    last = 0
    while True:
        rows = list(uncopied.filter(pk__gt=last).order_by("pk").values_list("pk", "source_sha256", "source_path")
                    [:batch_files])
        if not rows:
            break
        last = rows[-1][0]
        # Whole files: every spectrum stored from them, whichever batch its id falls in.
        shas = {sha for _, sha, _ in rows}
        held = Spectrum.objects.filter(source_sha256__in=shas)
        yield StaleBatch(paths=sorted({path for _, _, path in rows}), rv_catalog=_stale_rv_catalog(held))


def _stale_rv_catalog(spectra) -> dict[tuple[int, int | None], tuple[float, float]]:
    """The catalog RVs the ``spectra`` (a queryset) were given, keyed as ``rv_catalog_read`` keys them."""
    catalog, coadds, measured_exposures = {}, {}, set()
    rows = spectra.filter(obsid__isnull=False).values_list("obsid", "lmjm", "kind", "rv_source", "rv_blue", "rv_red")
    for obsid, lmjm, kind, source, blue, red in rows.distinct():
        if source != Spectrum.RVSource.CATALOG:
            if kind != Spectrum.Kind.COADD:
                measured_exposures.add(int(obsid))
            continue
        if blue is None or red is None or not (math.isfinite(blue) and math.isfinite(red)):
            continue
        if kind == Spectrum.Kind.COADD or lmjm is None:  # (a coadd has no LMJM: the observation's RV)
            coadds[int(obsid)] = (float(blue), float(red))
        else:
            catalog[(int(obsid), int(lmjm))] = (float(blue), float(red))
    catalog.update({(obsid, None): rv for obsid, rv in coadds.items() if obsid not in measured_exposures})
    return catalog


@dataclass
class _PreparedBatch:
    reads: list[_ReadFile]
    entries: list  # (read, RawSpectrum)
    result: "PreprocessedBatch | None" = None
    supplied: np.ndarray | None = None  # catalog RVs (n, 2), NaN where none
    shard: str = ""


class PreprocessingError(SpectrumFileError):
    """Reading worked but preprocessing raised: recorded for this file, the rest goes on."""

    kind = "preprocessing_failed"


def _prepare_batch(
    reads: list[_ReadFile], store: ArrayStore, rv_catalog, templates, config, max_bytes: int
) -> list[_PreparedBatch]:
    """Parse and preprocess a batch and write its array shard; no database access (worker thread).

    If preprocessing the batch raises, each file is retried alone, so that one poisoned
    file is recorded as failed and the others go on. An array store that cannot take the
    shard (disk full, read-only) is no file's fault: ArrayStoreError stops the ingest.
    """
    try:
        return [_prepare(reads, store, rv_catalog, templates, config, max_bytes)]
    except ArrayStoreError:
        raise
    except Exception as error:  # noqa: BLE001  (isolate the file that breaks the batch)
        if len(reads) == 1:
            reads[0].error = PreprocessingError(str(reads[0].path), f"preprocessing failed: {error!r}")
            reads[0].parsed = None
            return [_PreparedBatch(reads=reads, entries=[])]
        return [
            prepared
            for read in reads
            for prepared in _prepare_batch([read], store, rv_catalog, templates, config, max_bytes)
        ]


def preprocess(spectra: list, **options) -> "PreprocessedBatch":
    """:func:`spectra.processing.pipeline.preprocess`, imported on first use (numba, scipy)."""
    from ..processing.pipeline import preprocess as preprocess_batch

    return preprocess_batch(spectra, **options)


def _prepare(reads: list[_ReadFile], store: ArrayStore, rv_catalog, templates, config, max_bytes) -> _PreparedBatch:
    for read in reads:
        if read.error is None:
            try:
                read.parsed = read_spectrum_file(str(read.path), read.data, max_bytes=max_bytes)
            except SpectrumFileError as error:
                read.error = error
    entries = [(r, spectrum) for r in reads if r.parsed is not None for spectrum in r.parsed.spectra]
    prepared = _PreparedBatch(reads=reads, entries=entries)
    if entries:
        supplied = np.full((len(entries), 2), np.nan)
        for i, (read, spectrum) in enumerate(entries):
            value = rv_catalog.get((read.parsed.obsid, spectrum.lmjm)) or rv_catalog.get((read.parsed.obsid, None))
            if value is not None:
                supplied[i] = value
        file_of = {id(read): i for i, read in enumerate(reads)}
        prepared.result = preprocess([s for _, s in entries], rv_supplied=supplied, templates=templates, config=config,
                                     files=np.array([file_of[id(read)] for read, _ in entries], dtype=np.int64))
        processed = np.flatnonzero(prepared.result.processed)
        if processed.size:
            prepared.shard = store.write(prepared.result.flux[processed], prepared.result.ivar[processed])
        prepared.supplied = supplied
    for read in reads:
        read.data = None  # the bytes are no longer needed once the batch is prepared
    return prepared


def _write_batch(prepared: _PreparedBatch, summary: IngestSummary) -> None:
    with transaction.atomic():
        source_file_ids = _write_source_files(prepared.reads, summary)
        if prepared.entries:
            _write_spectra(prepared, summary, source_file_ids)


def _write_source_files(reads: list[_ReadFile], summary: IngestSummary) -> dict[str, int]:
    """Upsert the batch's file records; their ids by sha256."""
    if not reads:
        return {}
    for read in reads:
        if read.error is not None:
            summary.failures[read.error.kind] += 1
        else:
            summary.files_ingested += 1
    bulk_upsert(
        SourceFile,
        {
            "sha256": [r.sha256 for r in reads],
            "path": [str(r.path) for r in reads],
            "size": np.array([r.size for r in reads], dtype=np.int64),
            "reader": [r.parsed.format if r.parsed else "" for r in reads],
            "status": [SourceFile.Status.FAILED if r.error else SourceFile.Status.INGESTED for r in reads],
            "error_kind": [r.error.kind if r.error else "" for r in reads],
            "error_message": [str(r.error) if r.error else "" for r in reads],
            "spectra_count": np.array([len(r.parsed.spectra) if r.parsed else 0 for r in reads], dtype=np.int64),
        },
        unique_fields=["sha256"],
    )
    return dict(SourceFile.objects.filter(sha256__in=[r.sha256 for r in reads]).values_list("sha256", "id"))


# Status of a copy, worst to best: a stored spectrum is only replaced by a better copy.
_STATUS_RANK = {
    Spectrum.Status.FAILED.value: 0,
    Spectrum.Status.INGESTED.value: 1,
    Spectrum.Status.REJECTED.value: 1,
    Spectrum.Status.PREPROCESSED.value: 2,
}


def _copy_quality(status: str, snr_blue: float | None, snr_red: float | None) -> tuple[int, float]:
    """(status rank, lower S/N of the two arms): the order in which copies of a spectrum are preferred."""
    snr = [v for v in (snr_blue, snr_red) if v is not None and math.isfinite(v)]
    return _STATUS_RANK.get(status, 0), (min(snr) if len(snr) == 2 else -math.inf)


def _copies_to_store(
    ids: list[str], shas: list[str], quality: list[tuple[int, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the batch's copies that become the stored spectrum.

    Of several copies of one spectrum the best is kept; the first of equals. A copy
    replaces a stored spectrum only if it comes from the same file (re-ingest) or is
    strictly better: a truncated, corrupt or noisier copy never overwrites a good one.
    Nor does this installation's preprocessing replace a spectrum a newer version made.
    A spectrum an older version made is replaced by any copy at least as good (from its
    own file: of the same status rank or better); where this version's result is worse
    (failed or rejected where it was not: an RV it cannot measure, say) the older one is
    kept. Returns the indices to store and, for each spectrum kept that way, the index of
    this version's best result for it (what the caller reports as the reason).
    """
    from ..processing.pipeline import PREPROCESSING_VERSION, preprocessing_version_key

    current = preprocessing_version_key(PREPROCESSING_VERSION)
    copies: dict[str, list[int]] = {}
    for i, specid in enumerate(ids):
        copies.setdefault(specid, []).append(i)
    stored = {
        specid: (sha, _copy_quality(status, snr_blue, snr_red), preprocessing_version_key(version))
        for specid, sha, status, snr_blue, snr_red, version in Spectrum.objects.filter(
            medres_specid__in=list(copies)).values_list(
            "medres_specid", "source_sha256", "status", "snr_blue", "snr_red", "preprocessing_version"
        )
    }

    def replaces(i: int, sha: str, stored_quality: tuple, version: tuple | None) -> bool:
        if version is not None and version > current:
            return False
        if version is not None and version < current:
            return quality[i][0] >= stored_quality[0] if sha == shas[i] else quality[i] >= stored_quality
        return sha == shas[i] or quality[i] > stored_quality

    keep, stale_kept = [], []
    for specid, candidates in copies.items():
        best = max(candidates, key=lambda i: quality[i])  # (the first of equals)
        if specid in stored:
            candidates = [i for i in candidates if replaces(i, *stored[specid])]
            if not candidates:
                version = stored[specid][2]
                if version is not None and version < current:
                    stale_kept.append(best)
                continue
            best = max(candidates, key=lambda i: quality[i])
        keep.append(best)
    return np.array(sorted(keep), dtype=np.int64), np.array(sorted(stale_kept), dtype=np.int64)


def _write_spectra(prepared: _PreparedBatch, summary: IngestSummary, source_file_ids: dict[str, int]) -> None:
    from ..processing.pipeline import PREPROCESSING_VERSION

    entries, result, shard = prepared.entries, prepared.result, prepared.shard
    spectra = [spectrum for _, spectrum in entries]
    files = [read.parsed for read, _ in entries]
    supplied = prepared.supplied
    processed = np.flatnonzero(result.processed)
    rows = np.full(len(spectra), -1, dtype=np.int64)
    rows[processed] = np.arange(processed.size)
    star_ids = stars_for_files(files)
    reject = SPECTRUM_FLAGS.reject_mask()
    status = np.where(
        ~result.processed,
        Spectrum.Status.FAILED,
        np.where((result.flags & reject) != 0, Spectrum.Status.REJECTED, Spectrum.Status.PREPROCESSED),
    )
    # A file's rows first, so failed preprocessing is visible: FAILED rows keep no arrays.
    ids = [
        medres_specid(
            date=night_date(sf.mjd), plan_id=sf.plan_id, spectrograph=sf.spectrograph, fiber=sf.fiber,
            lmjm=spectrum.lmjm, pipeline=pipeline_version(sf.data_release),
        )
        for sf, spectrum in zip(files, spectra, strict=True)
    ]
    measured = result.rv_measured
    shas = [read.sha256 for read, _ in entries]
    quality = [
        _copy_quality(str(st), b, r) for st, b, r in zip(status.tolist(), result.snr[:, 0].tolist(), result.snr[:, 1].tolist(), strict=True)
    ]
    keep, stale_kept = _copies_to_store(ids, shas, quality)
    columns = {
        "star_id": star_ids,
        "medres_specid": ids,
        "medid_blue": [f"{i}-B" for i in ids],
        "medid_red": [f"{i}-R" for i in ids],
        "kind": [spectrum.kind for spectrum in spectra],
        "obsid": [sf.obsid for sf in files],
        "objname": [sf.objname for sf in files],
        "plan_id": [sf.plan_id for sf in files],
        "spectrograph": [sf.spectrograph for sf in files],
        "fiber": [sf.fiber for sf in files],
        "lmjd": [sf.lmjd for sf in files],
        "lmjm": [spectrum.lmjm for spectrum in spectra],
        "exptime": [spectrum.exptime for spectrum in spectra],
        "snr_blue": result.snr[:, 0],
        "snr_red": result.snr[:, 1],
        "rv_blue": result.rv[:, 0],
        "rv_red": result.rv[:, 1],
        "rv_blue_err": result.rv_err[:, 0],
        "rv_red_err": result.rv_err[:, 1],
        "rv_source": [
            Spectrum.RVSource.MEASURED if m else Spectrum.RVSource.CATALOG if not np.isnan(s).all() else Spectrum.RVSource.NONE
            for m, s in zip(measured, supplied, strict=True)
        ],
        "source_path": [str(read.path) for read, _ in entries],
        "source_sha256": shas,
        "file_format": [sf.layout_version for sf in files],
        "data_release": [sf.data_release for sf in files],
        "array_shard": [shard if row >= 0 else "" for row in rows],
        "array_row": [int(row) if row >= 0 else None for row in rows],
        "preprocessing_version": [PREPROCESSING_VERSION] * len(spectra),
        "status": status.tolist(),
        "flags": result.flags,
    }
    if keep.size:
        bulk_upsert(
            Spectrum,
            {name: (values[keep] if isinstance(values, np.ndarray) else [values[i] for i in keep]) for name, values in columns.items()},
            unique_fields=["medres_specid"],
        )
    # Every copy's provenance, used or not.
    spectrum_ids = dict(Spectrum.objects.filter(medres_specid__in=ids).values_list("medres_specid", "id"))
    bulk_upsert(
        SpectrumCopy,
        {
            "spectrum_id": np.array([spectrum_ids[i] for i in ids], dtype=np.int64),
            "source_file_id": np.array([source_file_ids[sha] for sha in shas], dtype=np.int64),
            "status": status.tolist(),
            "flags": result.flags,
            "snr_blue": result.snr[:, 0],
            "snr_red": result.snr[:, 1],
            "preprocessing_version": [PREPROCESSING_VERSION] * len(ids),
        },
        unique_fields=["spectrum_id", "source_file_id"],
    )
    kept_status = status[keep]
    summary.spectra_written += int(keep.size)
    summary.copies_not_used += len(spectra) - int(keep.size) - int(stale_kept.size)
    summary.stale_kept += int(stale_kept.size)
    summary.stale_kept_results.update(status[stale_kept].tolist())
    summary.spectra_by_status.update(kept_status.tolist())
    for flag in SPECTRUM_FLAGS:
        count = int(((result.flags[keep] & flag.mask) != 0).sum())
        if count:
            summary.flags[flag.name] += count
        count = int(((result.flags[stale_kept] & flag.mask) != 0).sum())
        if count:
            summary.stale_kept_results[f"flag {flag.name}"] += count


def stars_for_files(files: list[SpectrumFile]) -> np.ndarray:
    """The Star id of each file's object, matched by position, created when new.

    The same star appears under different OBJNAMEs and even designations differing in
    the last digit, so identity is positional: within STAR_MATCH_RADIUS_ARCSEC of an
    existing star, or of another new one in the same batch. Runs inside the caller's
    transaction, which holds the sky-cell locks (``star_identity``) until it commits.
    """
    from astropy.coordinates import SkyCoord, search_around_sky

    radius = settings.STAR_MATCH_RADIUS_ARCSEC * u.arcsec
    ra = np.array([sf.ra for sf in files])
    dec = np.array([sf.dec for sf in files])
    # Concurrent ingests of the same sky wait here until this transaction commits its stars.
    sky_cells_lock(ra, dec, radius.to_value(u.deg))
    coordinates = SkyCoord(ra * u.deg, dec * u.deg)
    pad = radius.to_value(u.deg) * 2
    candidates = list(
        Star.objects.filter(dec__gte=dec.min() - pad, dec__lte=dec.max() + pad).values_list("id", "ra", "dec", "gaia_source_id")
        if (ra.max() - ra.min()) > 180
        else Star.objects.filter(
            dec__gte=dec.min() - pad, dec__lte=dec.max() + pad,
            ra__gte=ra.min() - pad / max(np.cos(np.radians(np.abs(dec).max())), 1e-3),
            ra__lte=ra.max() + pad / max(np.cos(np.radians(np.abs(dec).max())), 1e-3),
        ).values_list("id", "ra", "dec", "gaia_source_id")
    )
    star_ids = np.zeros(len(files), dtype=np.int64)
    if candidates:
        known = SkyCoord(np.array([c[1] for c in candidates]) * u.deg, np.array([c[2] for c in candidates]) * u.deg)
        index, separation, _ = coordinates.match_to_catalog_sky(known)
        matched = separation <= radius
        star_ids[matched] = np.array([candidates[i][0] for i in index[matched]])
    new = np.flatnonzero(star_ids == 0)
    if new.size:
        # Group the new positions among themselves, then create one star per group.
        first, second, _, _ = search_around_sky(coordinates[new], coordinates[new], radius)
        group = np.arange(new.size)
        for a, b in sorted(zip(first.tolist(), second.tolist(), strict=True)):
            group[max(a, b)] = min(group[a], group[b])
        leaders = np.unique(group)
        created = Star.objects.bulk_create(
            [
                Star(
                    designation=files[new[g]].designation,
                    gaia_source_id=gaia_source_id_from_objname(files[new[g]].objname),
                    ra=files[new[g]].ra,
                    dec=files[new[g]].dec,
                )
                for g in leaders
            ]
        )
        by_leader = {int(g): star.pk for g, star in zip(leaders, created, strict=True)}
        star_ids[new] = [by_leader[int(group[i])] for i in range(new.size)]
    # A Gaia id read from this batch fills a star that had none (one query per such star).
    gaia_for_star: dict[int, int] = {}
    for sf, star_id in zip(files, star_ids, strict=True):
        gaia = gaia_source_id_from_objname(sf.objname)
        if gaia is not None:
            gaia_for_star.setdefault(int(star_id), gaia)
    lacking = Star.objects.filter(pk__in=list(gaia_for_star), gaia_source_id__isnull=True).values_list("pk", flat=True)
    for star_id in lacking:
        Star.objects.filter(pk=star_id, gaia_source_id__isnull=True).update(gaia_source_id=gaia_for_star[star_id])
    return star_ids


def rv_catalog_read(path: str | Path) -> dict[tuple[int, int | None], tuple[float, float]]:
    """CSV with columns obsid, rv_blue, rv_red (km/s) and optionally lmjm (empty: every spectrum)."""
    path = Path(path)
    catalog = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"obsid", "rv_blue", "rv_red"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                lmjm = int(row["lmjm"]) if row.get("lmjm") else None
                values = (float(row["rv_blue"]), float(row["rv_red"]))
                if not all(math.isfinite(v) for v in values):
                    raise ValueError("non-finite RV")
                catalog[(int(row["obsid"]), lmjm)] = values
            except ValueError as error:
                raise ValueError(f"{path}:{line}: {error}") from error
    return catalog
