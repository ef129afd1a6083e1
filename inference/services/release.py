"""Writes of the inference app: label sets, catalog releases and their entries."""

from collections.abc import Callable
from functools import partial

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from core.bulk import (
    bulk_upsert,
    key_range_bounds,
    keyed_numeric_columns,
    planner_statistics_refresh,
    postgresql_bulk_session,
    postgresql_jit_off,
    query_numeric_records,
    statement_after,
    table_analyze,
    tables_vacuum,
    temp_table_fill,
)
from core.flags import CATALOG_FLAGS
from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS, LABELS
from core.parallel import beside, map_on_connections
from core.rules import CatalogRules, catalog_rules_current
from spectra.models import CurationRecord, Spectrum, Star
from spectra.services.curation import curation_records_write

from ..catalog_rules import WITHHELD_WHEN_HOT, catalog_flags, combine_models
from ..models import CatalogEntry, CatalogRelease, CatalogStar, LabelSet, ModelVersion
from ..partitions import (
    LOCK_NOT_AVAILABLE,
    ids_draw,
    partition_name,
    partitioned,
    release_build_lock,
    release_build_xact_locks,
    staging_attach,
    staging_create,
    staging_drop,
    staging_index,
    staging_name,
)
from ..selectors import release_build_chunk_bounds, release_build_chunks, release_build_numeric_chunk
from ..star_combine import stars_combine
from .release_files import STARS, release_files_discard, release_files_schedule


class ReleaseImmutableError(Exception):
    """Raised on any attempt to change a published release."""


def catalog_release_models_check(*, formal_model: ModelVersion, alternate_model: ModelVersion) -> None:
    """Raise ValueError unless the two models can make a release together."""
    if formal_model.pk == alternate_model.pk:
        raise ValueError("a release needs two different models (formal and alternate)")
    if formal_model.role != ModelVersion.Role.FORMAL or alternate_model.role != ModelVersion.Role.ALTERNATE:
        raise ValueError(
            f"model roles must be formal and alternate, got {formal_model.role} and {alternate_model.role}"
        )
    if formal_model.preprocessing_version != alternate_model.preprocessing_version:
        raise ValueError("the two models were trained on differently preprocessed spectra")


def catalog_release_create(
    *,
    name: str,
    formal_model: ModelVersion,
    alternate_model: ModelVersion,
    description: str = "",
    created_by=None,
    rules: CatalogRules | None = None,
) -> CatalogRelease:
    """Register a draft release of the two models' combined labels. Raises ValueError for
    a name that is not a slug (it names the release's URLs and its directory of files)."""
    try:
        validate_slug(name)
    except ValidationError as error:
        raise ValueError(f"release name {name[:80]!r}: {error.messages[0]}") from None
    catalog_release_models_check(formal_model=formal_model, alternate_model=alternate_model)
    rules = rules or catalog_rules_current()
    return CatalogRelease.objects.create(
        name=name,
        description=description,
        formal_model=formal_model,
        alternate_model=alternate_model,
        rules=rules.as_dict(),
        created_by=created_by,
    )


def catalog_release_get_or_create(
    *,
    name: str,
    formal_model: ModelVersion,
    alternate_model: ModelVersion,
    description: str = "",
    created_by=None,
) -> CatalogRelease:
    """The release ``name`` of these two models, registered as a draft if it does not exist.

    Raises ValueError when a release of that name exists with other models, or when the
    models cannot make a release together (:func:`catalog_release_models_check`).
    """
    release = CatalogRelease.objects.filter(name=name).first()
    if release is None:
        return catalog_release_create(name=name, formal_model=formal_model, alternate_model=alternate_model,
                                      description=description, created_by=created_by)
    if (release.formal_model_id, release.alternate_model_id) != (formal_model.pk, alternate_model.pk):
        raise ValueError(f"release {name} exists with other models")
    return release


def catalog_release_build(
    *,
    release: CatalogRelease,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """(Re)compute the entries of a draft release from the two models' label sets.

    Every spectrum predicted by the formal model gets an entry; one the alternate model
    has not predicted fails the agreement rules (Flag = 0) instead of being dropped.
    An entry a curator flagged in this draft (``catalog_entries_curate``) keeps its
    CURATOR_FLAGGED bit and Flag = 0 through the rebuild. The star table is rebuilt
    from the entries afterwards (as :func:`catalog_stars_build` does). Returns the number
    of entries written.
    """
    with release_build_lock(release.pk):
        # Read under the lock: a curation or a publication that landed while this build
        # waited for another is seen.
        try:
            release.refresh_from_db(fields=["status", "rules"])
        except CatalogRelease.DoesNotExist:
            raise CatalogRelease.DoesNotExist(f"release {release.name} was deleted before its build began") from None
        if release.is_published:
            raise ReleaseImmutableError(f"release {release.name} is published and cannot be rebuilt")
        rules = CatalogRules.from_mapping(release.rules)
        curator_mask = np.int64(CATALOG_FLAGS["CURATOR_FLAGGED"].mask)
        curated = np.fromiter(
            CatalogEntry.objects.filter(release=release)
            .alias(_curated=F("flag_bits").bitand(int(curator_mask)))
            .exclude(_curated=0)
            .values_list("spectrum_id", flat=True),
            dtype=np.int64,
        )
        if partitioned(CatalogEntry):
            written = _release_build_postgresql(
                release, rules, curated, chunk_size or RELEASE_BUILD_CHUNK_SPECTRA, progress)
        else:
            written = _entries_build_orm(release, rules, curated, chunk_size or 20_000, progress)
            entries = CatalogEntry.objects.filter(release=release)
            release.entry_count = entries.count()
            release.good_count = entries.filter(flag=1).count()
            release.save(update_fields=["entry_count", "good_count"])
            catalog_stars_build(release=release)
    if written >= ANALYZE_AFTER_ROWS:
        # The API's pages then read ids from the indexes alone. Only this release's partitions:
        # the others' pages are all-visible already.
        tables = [CatalogEntry, CatalogStar]
        if partitioned(CatalogEntry):  # (both tables are, by one migration)
            tables = [partition_name(model, release.pk) for model in tables]
        tables_vacuum(*tables)
    return written


def _chunk_combined(chunk, rules, curated: np.ndarray):
    """The catalog rules on one chunk of the ORM build; a curator's flag survives the rebuild."""
    combined = combine_models(
        chunk.formal, chunk.alternate, chunk.formal_errors,
        chunk.snr_blue, chunk.snr_red, chunk.spectrum_flags, rules,
    )
    _curated_keep(combined, chunk.spectrum_ids, curated)
    return combined


def _curated_keep(flags, spectrum_ids: np.ndarray, curated: np.ndarray) -> None:
    """CURATOR_FLAGGED and Flag = 0, in place, on the rows of the spectra a curator flagged."""
    if curated.size:
        kept = np.isin(spectrum_ids, curated)
        flags.bits[kept] |= np.int64(CATALOG_FLAGS["CURATOR_FLAGGED"].mask)
        flags.flag[kept] = 0


def _entries_build_orm(release, rules, curated, chunk_size, progress) -> int:
    """The entries through the ORM and ``bulk_upsert`` (any database: the SQLite default)."""
    written = 0
    for chunk in release_build_chunks(release=release, chunk_size=chunk_size):
        combined = _chunk_combined(chunk, rules, curated)
        n = chunk.spectrum_ids.shape[0]
        columns: dict = {
            "release_id": np.full(n, release.pk, dtype=np.int64),
            "spectrum_id": chunk.spectrum_ids,
            "formal_labels_id": chunk.formal_ids,
            "alternate_labels_id": chunk.alternate_ids,
            **chunk.identity,
            "flag": combined.flag,
            "flag_bits": combined.bits,
        }
        for i, field in enumerate(LABEL_FIELDS):
            columns[field] = combined.values[:, i]
        for i, field in enumerate(LABEL_ERROR_FIELDS):
            columns[field] = combined.errors[:, i]
        written += bulk_upsert(CatalogEntry, columns, unique_fields=["release_id", "spectrum_id"])
        if progress is not None:
            progress(n)
    # Entries of spectra this build no longer covers go, as the PostgreSQL build's swap
    # drops them: no formal labels any more, or preprocessed again since (another version).
    formal = LabelSet.objects.filter(model_version=release.formal_model_id, spectrum_id=OuterRef("spectrum_id"))
    CatalogEntry.objects.filter(release=release).filter(
        ~Exists(formal) | ~Q(spectrum__preprocessing_version=release.formal_model.preprocessing_version)).delete()
    return written


# Writes of at least this many rows refresh the table's planner statistics (ANALYZE samples
# a fixed number of rows: about a second whatever the table's size).
ANALYZE_AFTER_ROWS = 10_000
# Spectra combined per round trip of the PostgreSQL build: about 30 MB of numpy arrays.
RELEASE_BUILD_CHUNK_SPECTRA = 50_000
# Entry columns copied from the spectrum (s) and its star (st) when the rows are written.
_ENTRY_IDENTITY_SQL = {
    "designation": "st.designation", "gaia_source_id": "st.gaia_source_id", "medres_specid": "s.medres_specid",
    "medid_blue": "s.medid_blue", "medid_red": "s.medid_red", "ra": "st.ra", "dec": "st.dec",
    "snr_blue": "s.snr_blue", "snr_red": "s.snr_red", "rv_blue": "s.rv_blue", "rv_red": "s.rv_red",
    "rv_blue_err": "s.rv_blue_err", "rv_red_err": "s.rv_red_err",
}


def _entries_write_postgresql(release, rules, curated, chunk_size, progress) -> tuple[int, int]:
    """The entries on PostgreSQL: numeric columns in and out by binary COPY, text joined in SQL.

    The spectra are cut into ranges of ``chunk_size`` (:func:`release_build_chunk_bounds`),
    written on ``settings.RELEASE_BUILD_CONNECTIONS`` connections at once (``map_on_connections``;
    one after another inside a transaction). Each chunk's inputs come from one query
    (:func:`release_build_numeric_chunk`); the rules run on them in numpy
    (:func:`inference.catalog_rules.catalog_flags`); Flag and its bits go by binary COPY
    into a temporary table and one ``INSERT ... SELECT`` writes the rows into a table of
    the build's own (``inference.partitions``), copying the formal model's labels, and the
    identity, position, S/N and RV columns of the spectrum and its star, inside the
    database, so no row becomes a Python object. An entry keeps its id through a rebuild; a new one takes an
    id drawn for its chunk before any chunk is written, in spectrum order. The caller
    holds the release's build lock, and indexes the table and swaps it in
    (``staging_attach``: entries of spectra this build no longer covers go with the old
    rows). Returns the number of entries written and of those with Flag = 1.
    """
    quote = connection.ops.quote_name
    table = CatalogEntry._meta.db_table
    labels = [*LABEL_FIELDS, *LABEL_ERROR_FIELDS]
    targets = ["id", "release_id", "spectrum_id", "formal_labels_id", "alternate_labels_id", *_ENTRY_IDENTITY_SQL,
               "flag", "flag_bits", *labels]
    hot = int(CATALOG_FLAGS["HOT_STAR_NO_ABUNDANCES"].mask)
    # A spectrum given labels after the ids were drawn (the last chunk reaches every id
    # above) takes one from the sequence. The published values are the formal model's
    # (catalog_rules.combine_models), copied here; those the rules withhold are NULL.
    sources = [f"COALESCE(old.id, NULLIF(t.new_id, 0), nextval(pg_get_serial_sequence('{table}', 'id')))", "%s",
               "t.spectrum_id", "t.formal_labels_id", "NULLIF(t.alternate_labels_id, 0)",
               *_ENTRY_IDENTITY_SQL.values(), "t.flag", "t.flag_bits",
               *(f"CASE WHEN t.flag_bits & {hot} = 0 THEN f.{quote(c)} END" if c in WITHHELD_WHEN_HOT
                 else f"f.{quote(c)}" for c in labels)]
    staging = staging_create(CatalogEntry, release.pk)
    insert_sql = (
        f"INSERT INTO {staging} ({', '.join(quote(c) for c in targets)}) "
        f"SELECT {', '.join(sources)} FROM _release_build t "
        f"JOIN {LabelSet._meta.db_table} f ON f.id = t.formal_labels_id AND f.model_version_id = %s "
        "AND f.spectrum_id > %s AND f.spectrum_id <= %s "
        f"JOIN {Spectrum._meta.db_table} s ON s.id = t.spectrum_id JOIN {Star._meta.db_table} st ON st.id = s.star_id "
        f"LEFT JOIN {table} old ON old.release_id = %s AND old.spectrum_id = t.spectrum_id "
        # The chunk's spectrum-id range bounds every side: without it a merge join reads the
        # spectra and the old entries from the first one on, every chunk.
        "AND old.spectrum_id > %s AND old.spectrum_id <= %s WHERE s.id > %s AND s.id <= %s "
        "ORDER BY t.spectrum_id"  # in spectrum order: the downloads' order
    )

    def chunks():
        for low, high, n in release_build_chunk_bounds(release=release, chunk_size=chunk_size):
            yield low, high, ids_draw(CatalogEntry, n)

    def write(chunk_bounds) -> tuple[int, int]:
        low, high, new_ids = chunk_bounds
        chunk = release_build_numeric_chunk(release=release, low=low, high=high)
        n = chunk.spectrum_ids.shape[0]
        if n == 0:
            return 0, 0
        flags = catalog_flags(
            chunk.formal, chunk.alternate, chunk.snr_blue, chunk.snr_red, chunk.spectrum_flags, rules)
        _curated_keep(flags, chunk.spectrum_ids, curated)
        columns = {
            "spectrum_id": chunk.spectrum_ids,
            "new_id": np.pad(new_ids[:n], (0, max(0, n - new_ids.size))),  # 0: none drawn
            "formal_labels_id": chunk.formal_ids,
            "alternate_labels_id": chunk.alternate_ids,
            "flag": flags.flag.astype(np.int16),
            "flag_bits": flags.bits.astype(np.int64),
        }
        with transaction.atomic():
            temp_table_fill("_release_build", columns)
            with connection.cursor() as cursor:
                cursor.execute(insert_sql, [release.pk, release.formal_model_id, low, high, release.pk, low, high,
                                            low, high])
                if cursor.rowcount != n:
                    raise RuntimeError(f"release build wrote {cursor.rowcount} entries for {n} spectra")
        return n, int(np.count_nonzero(flags.flag == 1))

    written = good = 0
    # (The workers' connections are closed at the end: their tables go with them.)
    with statement_after("DROP TABLE IF EXISTS _release_build"), postgresql_jit_off():
        for n, n_good in map_on_connections(
            write, chunks(), connections=settings.RELEASE_BUILD_CONNECTIONS, setup=_build_worker_session
        ):
            written, good = written + n, good + n_good
            if progress is not None and n:
                progress(n)
    return written, good


# A build's worker connections and the one indexing beside them wait at most this long for
# a lock: the build's own connection waits for them in Python, where PostgreSQL's deadlock
# detector cannot see it, so a transaction that holds what a worker needs while it waits
# for the build's lock would otherwise make both wait forever. A worker's reads and
# writes take no lock anyone holds for long: running out of time fails the build with a
# clear error. The indexing gives way much sooner and leaves what it did not make to the
# build's own connection, where a deadlock is seen and ends one of the two.
BUILD_WORKER_LOCK_TIMEOUT_MS = 60_000
BUILD_BESIDE_LOCK_TIMEOUT_MS = 1_000


def _build_worker_session() -> None:
    postgresql_bulk_session(lock_timeout_ms=BUILD_WORKER_LOCK_TIMEOUT_MS)


def _release_build_postgresql(release, rules, curated, chunk_size, progress) -> int:
    """Entries and stars of a release on PostgreSQL, each written into a table of the build's
    own and swapped in (``inference.partitions``).

    Once the entries are written (:func:`_entries_write_postgresql`) and their table has
    its unique key, the star rows are computed from that table while another connection
    makes its other indexes and keys (``beside``); then the star table is indexed and both
    are swapped in at once, in the transaction that locks the release's row, checks it is
    still a draft and records the counts. On any error both tables are dropped and the
    release's rows and counts are as they were. Returns the number of entries.
    """
    def entries_index() -> None:
        if connection.in_atomic_block:  # (run on this connection, after the stars: no wait unseen)
            staging_index(CatalogEntry, release.pk)
            return
        with connection.cursor() as cursor:  # (a connection of its own, closed after)
            cursor.execute("SET jit = off")
            cursor.execute(f"SET lock_timeout = {BUILD_BESIDE_LOCK_TIMEOUT_MS}")
        try:
            staging_index(CatalogEntry, release.pk)
        except OperationalError as error:
            if getattr(error.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            # What is not made yet is made by the swap's staging_attach, on the build's connection.

    def swap_with_counts() -> None:  # (in the swap's transaction)
        locked = CatalogRelease.objects.select_for_update().get(pk=release.pk)
        if locked.is_published:  # (published while the rows were written)
            raise ReleaseImmutableError(f"release {locked.name} was published during its build")
        _counts_save(locked, release, entry_count=written, good_count=good, **_staging_star_counts(release))

    planner_statistics_refresh({  # (what the build's joins and id ranges read)
        LabelSet: ["model_version_id", "spectrum_id"], Spectrum: ["id", "star_id"], Star: ["id"]})
    try:
        written, good = _entries_write_postgresql(release, rules, curated, chunk_size, progress)
        staging_index(CatalogEntry, release.pk, unique_only=True)  # (and analysed: the star reads use the key)
        entries = staging_name(CatalogEntry, release.pk)
        with beside(entries_index), postgresql_jit_off():
            _stars_write_postgresql(release, None, STAR_BUILD_CHUNK_STARS_POSTGRESQL, swap=True, entries=entries)
        # Both tables at once: a reader sees the old entries and stars, or the new ones.
        staging_attach([CatalogEntry, CatalogStar], release.pk, before_swap=swap_with_counts)
    except BaseException:
        staging_drop(CatalogEntry, release.pk)  # (inside a transaction its rollback does both)
        staging_drop(CatalogStar, release.pk)
        raise
    return written


# Stars combined per round trip of the ORM build: bounds memory (measured: 70 MB above the baseline at 5,000).
STAR_BUILD_CHUNK_STARS = 5_000
# Star and spectrum ids travel through the float64 columns of keyed_numeric_columns.
_EXACT_FLOAT_INT = 2**53


def catalog_stars_build(
    *, release: CatalogRelease, star_ids: list[int] | None = None, chunk_stars: int | None = None,
    chunk_rows: int | None = None,
) -> int:
    """(Re)build the star table of a release from its entries: one row per star.

    Each star's Flag = 1 entries are combined by :func:`inference.star_combine.stars_combine`
    (inverse-variance weighted means, their uncertainties, the reduced chi-square, the
    best spectrum). Rows are upserts on (release, star), so a rebuild never duplicates;
    rows of stars that no longer have an entry are removed. ``star_ids`` limits the work
    to those stars (after a curation). A published release is never changed: its star
    table can only be built once, where it has none (a release published before star
    tables existed: ``manage.py build_star_tables``); the entries it derives from are
    frozen, so that first build is what a build at publication would have written.
    Returns the number of star rows written. On PostgreSQL a whole table is written apart
    and swapped in for the release's old rows (``inference.partitions``). The stars are
    combined chunk by chunk: on PostgreSQL, for the whole table, star-id ranges of about
    ``chunk_rows`` rows (the entries read and the star rows written; whole stars), so that
    memory follows neither the number of stars nor how many spectra a star has; else
    (listed stars, or SQLite) ``chunk_stars`` stars at a time.
    """
    with release_build_lock(release.pk):
        if not CatalogRelease.objects.filter(pk=release.pk).exists():  # (deleted while this waited)
            raise CatalogRelease.DoesNotExist(f"release {release.name} was deleted before its star table was built")
        if star_ids is None and partitioned(CatalogStar):
            return _stars_build_swapped(release, chunk_rows or STAR_BUILD_CHUNK_ROWS_POSTGRESQL)
        with transaction.atomic():
            return _stars_build(release, star_ids, chunk_stars, chunk_rows)


def _star_table_immutable_check(release: CatalogRelease) -> None:
    if release.is_published and CatalogStar.objects.filter(release=release).exists():
        raise ReleaseImmutableError(f"release {release.name} is published: its star table cannot change")


def _star_chunk_bounds(release: CatalogRelease, chunk_rows: int, entries: str | None = None) -> list[tuple]:
    """Star-id ranges of the stars with an entry in the release, of about ``chunk_rows``
    rows each, counting a star's entries and its own row (PostgreSQL; a star's entries are
    never split).

    Returns ``(low, high, n)`` per chunk: its stars are those with ``low < id <= high``,
    ``n`` of them. ``entries``: the table to read the entries from (a build's own), by
    default the entry table. Only the bounds are held, never every star's id
    (``core.bulk.key_range_bounds``), so memory does not grow with the number of stars;
    the ranges are cut by the rows a chunk holds in memory, entries and stars, so it does
    not grow with the spectra per star either (DR9 holds 9.2 spectra per star or more on
    average, its time-domain stars tens).
    """
    return key_range_bounds(
        f"SELECT s.star_id::bigint AS key, count(*)::bigint + 1 AS weight FROM {entries or CatalogEntry._meta.db_table} e "
        f"JOIN {Spectrum._meta.db_table} s ON s.id = e.spectrum_id WHERE e.release_id = %s GROUP BY s.star_id",
        [release.pk], chunk_rows, weighted=True)


def _stars_build_swapped(release: CatalogRelease, chunk_rows: int) -> int:
    """The whole star table on a partitioned PostgreSQL table: written into a table of the
    build's own (on several connections at once where no transaction encloses the call),
    then indexed and swapped in, with the release's row locked, in one transaction."""
    release.refresh_from_db(fields=["status"])
    _star_table_immutable_check(release)

    def swap_with_counts() -> None:  # (in the swap's transaction)
        locked = CatalogRelease.objects.select_for_update().get(pk=release.pk)
        _star_table_immutable_check(locked)  # (published while the rows were written)
        _counts_save(locked, release, **_staging_star_counts(release))

    planner_statistics_refresh({Spectrum: ["id", "star_id"], Star: ["id"]})
    try:
        written, _ = _stars_write_postgresql(release, None, STAR_BUILD_CHUNK_STARS_POSTGRESQL, swap=True,
                                             chunk_rows=chunk_rows)
        staging_attach(CatalogStar, release.pk, before_swap=swap_with_counts)
    except BaseException:
        staging_drop(CatalogStar, release.pk)
        raise
    return written


def _staging_star_counts(release: CatalogRelease) -> dict[str, int]:
    """The star counts of the star table a build wrote and has not swapped in yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), count(*) FILTER (WHERE flag = 1) FROM {staging_name(CatalogStar, release.pk)}")
        stars, good = cursor.fetchone()
    return {"star_count": stars, "good_star_count": good}


def _counts_save(locked: CatalogRelease, release: CatalogRelease, **counts: int) -> None:
    """Save these counts on the locked release row, and copy them onto the caller's instance."""
    for field, value in counts.items():
        setattr(locked, field, value)
        setattr(release, field, value)
    locked.save(update_fields=list(counts))


def _star_counts_save(locked: CatalogRelease, release: CatalogRelease) -> None:
    existing = CatalogStar.objects.filter(release=locked)
    _counts_save(locked, release, star_count=existing.count(), good_star_count=existing.filter(flag=1).count())


def _stars_build(release: CatalogRelease, star_ids: list[int] | None, chunk_stars: int | None,
                 chunk_rows: int | None) -> int:
    locked = CatalogRelease.objects.select_for_update().get(pk=release.pk)
    existing = CatalogStar.objects.filter(release=locked)
    _star_table_immutable_check(locked)
    entries = CatalogEntry.objects.filter(release=locked)
    if star_ids is None and connection.vendor == "postgresql":
        wanted = None  # (every star with an entry, read range by range)
    elif star_ids is None:
        wanted = np.unique(np.fromiter(
            entries.order_by().values_list("spectrum__star_id", flat=True).distinct(), dtype=np.int64))
    else:
        wanted = np.unique(np.asarray(star_ids, dtype=np.int64))
    if connection.vendor == "postgresql":
        written, present = _stars_write_postgresql(locked, wanted, chunk_stars or STAR_BUILD_CHUNK_STARS_POSTGRESQL,
                                                   chunk_rows=chunk_rows or STAR_BUILD_CHUNK_ROWS_POSTGRESQL)
    else:
        written, present = _stars_write_orm(locked, wanted, chunk_stars or STAR_BUILD_CHUNK_STARS)
    if written >= ANALYZE_AFTER_ROWS:
        table_analyze(CatalogStar)  # else the anti-join below may run as a nested loop over stale estimates
    if star_ids is None:
        # NOT EXISTS (an anti-join), not NOT IN: PostgreSQL runs NOT IN over a subquery
        # larger than work_mem once per row.
        has_entry = CatalogEntry.objects.filter(release=locked, spectrum__star_id=OuterRef("star_id"))
        existing.exclude(Exists(has_entry)).delete()
    else:
        kept = np.concatenate(present) if present else np.empty(0, dtype=np.int64)
        existing.filter(star_id__in=wanted.tolist()).exclude(star_id__in=kept.tolist()).delete()
    _star_counts_save(locked, release)
    return written


def _stars_write_orm(locked: CatalogRelease, wanted: np.ndarray, chunk_stars: int) -> tuple[int, list[np.ndarray]]:
    """The star rows through the ORM and ``bulk_upsert`` (any database: the SQLite default)."""
    entries = CatalogEntry.objects.filter(release=locked)
    numeric = ["spectrum__star_id", "flag", "snr_blue", "snr_red", *LABEL_FIELDS, *LABEL_ERROR_FIELDS]
    n_labels = len(LABEL_FIELDS)
    written = 0
    present: list[np.ndarray] = []
    for start in range(0, wanted.size, chunk_stars):
        chunk = wanted[start : start + chunk_stars]
        if chunk[-1] >= _EXACT_FLOAT_INT:
            raise ValueError(f"star id {chunk[-1]} does not survive float64; the star table needs ids below 2**53")
        spectrum_ids, columns = keyed_numeric_columns(
            entries.filter(spectrum__star_id__in=chunk.tolist()).order_by("spectrum_id"), "spectrum_id", numeric
        )
        if spectrum_ids.size == 0:
            continue
        combined = stars_combine(
            columns[:, 0].astype(np.int64), spectrum_ids, columns[:, 1].astype(np.int64), columns[:, 2], columns[:, 3],
            columns[:, 4 : 4 + n_labels], columns[:, 4 + n_labels : 4 + 2 * n_labels],
        )
        present.append(combined.star_ids)
        identity = {
            row[0]: row[1:]
            for row in Star.objects.filter(pk__in=combined.star_ids.tolist()).values_list(
                "pk", "designation", "gaia_source_id", "ra", "dec")
        }
        best_specid = dict(
            CatalogEntry.objects.filter(release=locked, spectrum_id__in=combined.best_spectrum_ids.tolist())
            .values_list("spectrum_id", "medres_specid")
        )
        stars = [identity[int(star)] for star in combined.star_ids]
        m = combined.star_ids.size
        out: dict = {
            "release_id": np.full(m, locked.pk, dtype=np.int64),
            "star_id": combined.star_ids,
            "designation": [star[0] for star in stars],
            "gaia_source_id": [star[1] for star in stars],
            "ra": np.array([star[2] for star in stars], dtype=np.float64),
            "dec": np.array([star[3] for star in stars], dtype=np.float64),
            "n_spectra": combined.n_spectra,
            "n_spectra_all": combined.n_spectra_all,
            "flag": (combined.n_spectra > 0).astype(np.int64),
            "best_spectrum_id": combined.best_spectrum_ids,
            "best_medres_specid": [best_specid[int(s)] for s in combined.best_spectrum_ids],
        }
        for i, label in enumerate(LABELS):
            out[label.field] = combined.values[:, i]
            out[label.error_field] = combined.errors[:, i]
            out[f"{label.field}_chi2r"] = combined.chi2r[:, i]
        written += bulk_upsert(CatalogStar, out, unique_fields=["release_id", "star_id"])
    return written, present


# Stars combined per round trip of the PostgreSQL build: listed stars (about 70,000 entries
# at 3.5 spectra per star: 20 MB of arrays), or for the whole table star-id ranges of
# about this many rows, the entries read plus the star rows written (20,000 stars of one
# spectrum each, 4,000 of nine), whatever the number of spectra per star.
STAR_BUILD_CHUNK_STARS_POSTGRESQL = 20_000
STAR_BUILD_CHUNK_ROWS_POSTGRESQL = 40_000


def _stars_write_postgresql(
    locked: CatalogRelease, wanted: np.ndarray | None, chunk_stars: int, *, swap: bool = False,
    entries: str | None = None, chunk_rows: int = STAR_BUILD_CHUNK_ROWS_POSTGRESQL,
) -> tuple[int, list[np.ndarray]]:
    """The star rows on PostgreSQL: entries in by binary COPY, rows out by COPY and one INSERT.

    ``wanted``: the stars, sorted; None for every star with an entry (the whole table),
    whose chunks are then star-id ranges of about ``chunk_rows`` entries and stars
    (:func:`_star_chunk_bounds`; an index range on the spectrum's star); listed stars go
    ``chunk_stars`` at a time.
    The star's identity and the best spectrum's medres_specid are joined in SQL. Rows are
    upserts into the table, or with ``swap`` plain inserts into a table of the build's own,
    which the caller then swaps in for the release's old rows (``inference.partitions``;
    a row keeps its id, a new one takes an id drawn for its chunk, in star order). The
    chunks are written on ``settings.RELEASE_BUILD_CONNECTIONS`` connections at once where no
    transaction encloses the call (``map_on_connections``). ``entries``: the table the
    entries are read from (a build's own, with its unique key), by default the entry table.
    Returns the number of rows written and, for listed stars, the ids of the stars that
    got one.
    """
    quote = connection.ops.quote_name
    labels = [*LABEL_FIELDS, *LABEL_ERROR_FIELDS]
    n_labels = len(LABEL_FIELDS)
    entry_table, spectrum_table = entries or CatalogEntry._meta.db_table, Spectrum._meta.db_table
    select = (
        "SELECT s.star_id::bigint, e.spectrum_id::bigint, e.flag::bigint, COALESCE(e.snr_blue, 'NaN'::float8), "
        "COALESCE(e.snr_red, 'NaN'::float8), "
        + ", ".join(f"COALESCE(e.{quote(c)}, 'NaN'::float8)" for c in labels)
        # Each spectrum's entry by its index (OFFSET 0 keeps the subquery a nested loop): a
        # plain join scanned the release's whole partition for every chunk of stars.
        + f" FROM {spectrum_table} s CROSS JOIN LATERAL (SELECT * FROM {entry_table} x WHERE x.release_id = %s"
        " AND x.spectrum_id = s.id OFFSET 0) e WHERE "
    )
    dtypes = [("star_id", "i8"), ("spectrum_id", "i8"), ("flag", "i8"), ("snr_blue", "f8"), ("snr_red", "f8")]
    dtypes += [(f"v{i}", "f8") for i in range(2 * n_labels)]
    star_columns = [f"{label.field}{suffix}" for label in LABELS for suffix in ("", "_err", "_chi2r")]
    targets = ["release_id", "star_id", "designation", "gaia_source_id", "ra", "dec", "n_spectra", "n_spectra_all",
               "flag", "best_spectrum_id", "best_medres_specid", *star_columns]
    sources = ["%s", "t.star_id", "st.designation", "st.gaia_source_id", "st.ra", "st.dec", "t.n_spectra",
               "t.n_spectra_all", "t.flag", "t.best_spectrum_id", "b.medres_specid",
               *(f"NULLIF(t.{quote(c)}, 'NaN'::float8)" for c in star_columns)]
    updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in targets if c not in ("release_id", "star_id"))
    star_table = CatalogStar._meta.db_table
    # The chunk's star-id range bounds the star and old-row sides (a merge join would read
    # them from the first star on, every chunk).
    joins = (f"FROM _star_build t JOIN {Star._meta.db_table} st ON st.id = t.star_id AND st.id BETWEEN %s AND %s "
             f"JOIN {entry_table} b ON b.release_id = %s AND b.spectrum_id = t.best_spectrum_id ")
    if swap:
        into = staging_create(CatalogStar, locked.pk)
        # A star that gained a spectrum after the ids were drawn takes one from the sequence.
        insert_sql = (
            f"INSERT INTO {into} (id, {', '.join(quote(c) for c in targets)}) "
            f"SELECT COALESCE(old.id, NULLIF(t.new_id, 0), nextval(pg_get_serial_sequence('{star_table}', 'id'))), "
            f"{', '.join(sources)} {joins}LEFT JOIN {star_table} old ON old.release_id = %s "
            "AND old.star_id = t.star_id AND old.star_id BETWEEN %s AND %s ORDER BY t.star_id"
        )
    else:
        insert_sql = (
            f"INSERT INTO {star_table} ({', '.join(quote(c) for c in targets)}) "
            f"SELECT {', '.join(sources)} {joins}ORDER BY t.star_id "
            f"ON CONFLICT (release_id, star_id) DO UPDATE SET {updates}"
        )

    def chunks():
        if wanted is None:
            for low, high, n in _star_chunk_bounds(locked, chunk_rows, entries):
                yield (low, high), (ids_draw(CatalogStar, n) if swap else None)
            return
        for start in range(0, wanted.size, chunk_stars):
            chunk = wanted[start : start + chunk_stars]
            yield chunk, (ids_draw(CatalogStar, chunk.size) if swap else None)

    def write(item) -> tuple[int, np.ndarray]:
        chunk, new_ids = item
        if wanted is None:
            rows = query_numeric_records(select + "s.star_id > %s AND s.star_id <= %s", [locked.pk, *chunk], dtypes)
        else:
            rows = query_numeric_records(select + "s.star_id = ANY(%s)", [locked.pk, chunk.tolist()], dtypes)
        if rows.size == 0:
            return 0, np.empty(0, dtype=np.int64)
        rows = rows[np.argsort(rows["spectrum_id"], kind="stable")]
        values = np.column_stack([rows[f"v{i}"] for i in range(2 * n_labels)])
        combined = stars_combine(
            rows["star_id"], rows["spectrum_id"], rows["flag"], rows["snr_blue"], rows["snr_red"],
            values[:, :n_labels], values[:, n_labels:],
        )
        del rows, values
        m = combined.star_ids.size
        out: dict = {"star_id": combined.star_ids}
        if swap:
            out["new_id"] = np.pad(new_ids[:m], (0, max(0, m - new_ids.size)))  # 0: none drawn
        out.update({
            "n_spectra": combined.n_spectra.astype(np.int64),
            "n_spectra_all": combined.n_spectra_all.astype(np.int64),
            "flag": (combined.n_spectra > 0).astype(np.int16),
            "best_spectrum_id": combined.best_spectrum_ids.astype(np.int64),
        })
        for i, label in enumerate(LABELS):
            out[label.field] = combined.values[:, i]
            out[label.error_field] = combined.errors[:, i]
            out[f"{label.field}_chi2r"] = combined.chi2r[:, i]
        low, high = int(combined.star_ids.min()), int(combined.star_ids.max())
        parameters = [locked.pk, low, high, locked.pk] + ([locked.pk, low, high] if swap else [])
        with transaction.atomic():
            temp_table_fill("_star_build", out)
            with connection.cursor() as cursor:
                cursor.execute(insert_sql, parameters)
                if cursor.rowcount != m:
                    raise RuntimeError(f"star table build wrote {cursor.rowcount} rows for {m} stars")
        return m, combined.star_ids

    written = 0
    present: list[np.ndarray] = []
    try:
        # (The workers' connections are closed at the end: their tables go with them.)
        with statement_after("DROP TABLE IF EXISTS _star_build"), postgresql_jit_off():
            for m, star_ids in map_on_connections(
                write, chunks(), connections=settings.RELEASE_BUILD_CONNECTIONS, setup=_build_worker_session
            ):
                written += m
                if m and wanted is not None:  # (only a partial build needs them: the whole table's would grow with N)
                    present.append(star_ids)
    except BaseException:
        if swap:
            staging_drop(CatalogStar, locked.pk)
        raise
    return written, present


@transaction.atomic
def catalog_stars_follow_merge(*, merged: dict[int, int]) -> None:
    """The star table after duplicate stars were merged (``spectra.services.star_identity``), called
    once the spectra have moved and before the merged stars are deleted.

    ``merged`` maps each merged star id to the id of the star it was merged into. In draft
    releases the merged stars' rows go and the kept stars are combined again from all
    their spectra. Published rows never change their values: a row follows its star to the
    kept one, or, where the kept star already has a row in that release, keeps its values
    with no star (NULL), so that a published release keeps both rows as published; that
    release's written star-table files are discarded and written again.
    """
    rows = CatalogStar.objects.filter(star_id__in=list(merged))
    rebuild: dict[int, set[int]] = {}
    republished: set[int] = set()
    for row_id, release_id, star_id, published in rows.values_list(
        "pk", "release_id", "star_id", "release__status"
    ).order_by("pk"):
        kept = merged[star_id]
        if published != CatalogRelease.Status.PUBLISHED:
            CatalogStar.objects.filter(pk=row_id).delete()
            rebuild.setdefault(release_id, set()).add(kept)
        elif CatalogStar.objects.filter(release_id=release_id, star_id=kept).exists():
            CatalogStar.objects.filter(pk=row_id).update(star=None)
            republished.add(release_id)
        else:
            CatalogStar.objects.filter(pk=row_id).update(star_id=kept)
            republished.add(release_id)
    # The written star-table files of those published releases go, and are written again.
    for release in CatalogRelease.objects.filter(pk__in=list(republished)):
        transaction.on_commit(partial(_star_files_renew, release))
    for release in CatalogRelease.objects.filter(pk__in=list(rebuild)):
        catalog_stars_build(release=release, star_ids=sorted(rebuild[release.pk]))


def _star_files_renew(release: CatalogRelease) -> None:
    release_files_discard(release=release, table=STARS)
    release_files_schedule(release=release, tables=(STARS,))


@transaction.atomic
def catalog_release_publish(*, release: CatalogRelease) -> CatalogRelease:
    """Freeze a release. Published releases are never changed again."""
    locked = CatalogRelease.objects.select_for_update().get(pk=release.pk)
    if locked.is_published:
        raise ReleaseImmutableError(f"release {locked.name} is already published")
    if locked.entry_count == 0:
        raise ValueError(f"release {locked.name} has no entries: build it before publishing")
    locked.status = CatalogRelease.Status.PUBLISHED
    locked.published_at = timezone.now()
    locked.save(update_fields=["status", "published_at"])
    release_files_schedule(release=locked)
    return locked


def catalog_entries_curate(*, user, ids: list[int], flagged: bool, reason: str) -> int:
    """Set or clear CURATOR_FLAGGED on entries of draft releases, recomputing Flag.

    Entries of a published release are refused: a published release never changes. A
    build of one of the entries' releases running meanwhile is waited for: its build lock
    is taken first in the curation's transaction, before any entry is read in it (reading
    the entries holds their tables until the transaction ends, and the build's swap needs
    them to itself: each would wait for the other). The entries' releases are looked up
    before that transaction; called inside a transaction of the caller's, that lookup is
    part of it.
    """
    if not reason.strip():
        raise ValueError("a curation needs a reason")
    releases = list(  # (an entry never changes release)
        CatalogEntry.objects.filter(pk__in=ids).order_by().values_list("release_id", flat=True).distinct())
    with transaction.atomic():
        release_build_xact_locks(releases)
        return _entries_curate(user=user, ids=ids, releases=releases, flagged=flagged, reason=reason)


def _entries_curate(*, user, ids: list[int], releases: list[int], flagged: bool, reason: str) -> int:
    # (The release ids let PostgreSQL read those releases' partitions alone.)
    entries = CatalogEntry.objects.filter(pk__in=ids, release_id__in=releases)
    published = set(
        entries.filter(release__status=CatalogRelease.Status.PUBLISHED).values_list(
            "release__name", flat=True
        )
    )
    if published:
        raise ValueError(f"entries of published release(s) {', '.join(sorted(published))} cannot change")
    mask = CATALOG_FLAGS["CURATOR_FLAGGED"].mask
    reject = CATALOG_FLAGS.reject_mask()
    changes, updated = [], []
    for entry in entries.select_for_update().only("pk", "flag_bits", "flag"):
        before = entry.flag_bits
        after = before | mask if flagged else before & ~mask
        if after != before:
            changes.append((entry.pk, before, after))
            entry.flag_bits = after
            entry.flag = 0 if after & reject else 1
            updated.append(entry)
    CatalogEntry.objects.bulk_update(updated, ["flag_bits", "flag"])
    curation_records_write(
        user=user, target_type=CurationRecord.Target.CATALOG_ENTRY, changes=changes, flagged=flagged, reason=reason
    )
    # The stars of the changed entries are combined again, so the star table follows Flag.
    touched: dict[int, set[int]] = {}
    for release_id, star_id in entries.filter(pk__in=[pk for pk, _, _ in changes]).values_list(
        "release_id", "spectrum__star_id"
    ):
        touched.setdefault(release_id, set()).add(star_id)
    for release in CatalogRelease.objects.filter(pk__in=list(touched)):
        catalog_stars_build(release=release, star_ids=sorted(touched[release.pk]))
    return len(changes)
