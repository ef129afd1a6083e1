"""A release's rows as partitions of their own (PostgreSQL).

``inference_catalogentry`` and ``inference_catalogstar`` are partitioned by release
(migration ``inference/0009_release_partitions``): release N's rows live in
``<table>_r<N>``, rows written otherwise (the ORM, before a release's first build) in
``<table>_default``. A release build writes its rows into a new table without indexes,
keys or triggers, indexes it and checks its keys once for the whole table (a sort per
index, a join per key, instead of a B-tree insert per index and a trigger per key for
every row), and then swaps it in for the release's old rows in one short transaction.
Readers see the old rows, or the new ones, never a mix. README, "Release build and survey
scale", gives the figures.
"""

import re
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
from django.db import DatabaseError, OperationalError, connection, models, transaction

# First key of the two-key advisory lock that serialises the builds of one release.
_BUILD_LOCK_SPACE = 0x5043_4542  # "PCEB"
_INDEX_DEFINITION = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON (?:ONLY )?\S+ (USING .*)$")


def partition_name(model: type[models.Model], release_id: int) -> str:
    """The name of release ``release_id``'s partition of ``model``'s table."""
    return f"{model._meta.db_table}_r{int(release_id)}"


def partitioned(model: type[models.Model]) -> bool:
    """Whether ``model``'s table is a partitioned PostgreSQL table (False on other databases)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        return cursor.fetchone()[0] == "p"


@contextmanager
def release_build_lock(release_id: int):
    """Hold the advisory lock of one release for a whole build; a build waits for another of
    the same release. The lock is re-entrant. Outside a transaction it is a session lock,
    released when the block ends (the build's chunks commit apart); inside one (an atomic
    block) it lasts until that transaction ends, so that a failed transaction, in which
    no statement can run, cannot keep it. Other databases: nothing is locked."""
    if connection.vendor != "postgresql":
        yield
        return
    if connection.in_atomic_block:
        release_build_xact_locks([release_id])
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [_BUILD_LOCK_SPACE, int(release_id)])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_BUILD_LOCK_SPACE, int(release_id)])


class ReleaseBusyError(Exception):
    """Raised when a release is deleted while a build of it (or of its star table) runs."""


def release_build_running_refuse(release_id: int, name: str) -> None:
    """Raise :class:`ReleaseBusyError` when a build of release ``release_id`` holds its lock.

    Called where a release is deleted (``pre_delete``): the deletion would drop the
    partitions and the tables the build writes into under it. Otherwise takes the build
    lock until the deletion's transaction ends, so that a build asked for meanwhile waits
    and then finds the release gone. Other databases: nothing is checked.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [_BUILD_LOCK_SPACE, int(release_id)])
        if not cursor.fetchone()[0]:
            raise ReleaseBusyError(f"release {name} is being built; delete it once its build has ended")


def release_build_xact_locks(release_ids) -> None:
    """Take the build locks of these releases until the current transaction ends (in id
    order, so that two callers never wait for each other); waits for their builds."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for release_id in sorted({int(r) for r in release_ids}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_BUILD_LOCK_SPACE, release_id])


def ids_draw(model: type[models.Model], n: int) -> np.ndarray:
    """``n`` new ids from the sequence of ``model``'s table, increasing: (n,) int64.

    A build draws each chunk's ids before the chunk is written, in chunk order, so that
    new rows get ids in key order even when chunks are written at once on several
    connections. Ids a chunk does not use (its rows keep their old ids) are never used.
    """
    from core.bulk import query_numeric_records

    drawn = query_numeric_records(
        f"SELECT nextval(pg_get_serial_sequence('{model._meta.db_table}', 'id'))::bigint "
        "FROM generate_series(1, %s)", [int(n)], [("id", "i8")])["id"]
    return np.sort(drawn)


def staging_name(model: type[models.Model], release_id: int) -> str:
    """The name of the table a build of release ``release_id`` writes ``model``'s rows into."""
    return f"{partition_name(model, release_id)}_build"


def staging_create(model: type[models.Model], release_id: int) -> str:
    """(Re)create the empty table a build of release ``release_id`` writes into; returns its name.

    It has the table's columns, defaults and CHECK constraints, and nothing else: no
    identity (the build draws ids from the table's sequence), no index, no key. A table
    left by a build that died is dropped first.
    """
    staging = staging_name(model, release_id)
    _drop_briefly(staging)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {staging} (LIKE {model._meta.db_table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    return staging


def _drop_briefly(name: str) -> None:
    """DROP TABLE IF EXISTS, waiting at most ``SWAP_LOCK_TIMEOUT_MS`` for its locks.

    A build's table with its own foreign keys takes, to be dropped, the tables its keys
    reference (spectra, stars, label sets, releases) for a moment; an attached partition
    takes its parent. A long reader of any of those must not make their readers queue
    behind the drop. Raises ``django.db.OperationalError`` when the locks were not had.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = {int(SWAP_LOCK_TIMEOUT_MS)}")
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
        cursor.execute("SET LOCAL lock_timeout TO DEFAULT")


def staging_drop(model: type[models.Model], release_id: int) -> None:
    """Drop what a failed build left, never raising (the build's own error is the one to
    see). Inside a transaction (an atomic block) nothing is done: its rollback drops the
    table, and a statement in a failed transaction would raise. A table left anyway (or
    whose referenced tables stayed busy) is dropped by the release's next build."""
    if connection.in_atomic_block:
        return
    try:
        _drop_briefly(staging_name(model, release_id))
    except DatabaseError:
        pass  # the referenced tables are busy: the release's next build drops it


def staging_index(model: type[models.Model], release_id: int, *, unique_only: bool = False) -> None:
    """Make on the build's table the keys and indexes of ``model``'s table it lacks yet.

    Every index, unique constraint and foreign key of the table, and a CHECK that its
    rows are release ``release_id``'s (so that attaching it needs no scan), each made
    once for the whole table: a sort per index, a join per key. With ``unique_only``,
    only the CHECK and the unique constraints (the build's table can then be read by
    its key while the rest is made, on another connection). The first call analyses the table.
    Raises ``django.db.IntegrityError`` when a key does not hold.
    """
    table, staging = model._meta.db_table, staging_name(model, release_id)
    token = secrets.token_hex(4)  # index names are unique per schema; the old partition's are still there
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid), conindid, pg_get_indexdef(conindid) "
            "FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype, conname",
            [table])
        constraints = cursor.fetchall()
        backing = {index for _, kind, _, index, _ in constraints if kind in ("p", "u")}
        cursor.execute(
            "SELECT indexrelid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass "
            "ORDER BY indexrelid", [table])
        indexes = [definition for index, definition in cursor.fetchall() if index not in backing]
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass", [staging])
        made = {definition for _, definition in cursor.fetchall()}
        check = f"{staging}_release"
        cursor.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s", [staging, check])
        first = cursor.fetchone() is None
        if first:
            cursor.execute(f"ALTER TABLE {staging} ADD CONSTRAINT {check} CHECK (release_id = {int(release_id)})")
        for i, (_, kind, definition, _, index_definition) in enumerate(constraints):
            if definition in made or (unique_only and kind != "u"):
                continue
            name = f"{table}_{token}_{i}_{kind}"
            if kind in ("p", "u"):
                # Its index first, under a lock that lets readers of the table on (another
                # connection may read it by its unique key meanwhile), then the constraint
                # takes it over at once.
                match = _INDEX_DEFINITION.match(index_definition)
                if match is None or "DEFERRABLE" in definition:
                    raise RuntimeError(f"unexpected key on {table}: {definition}")
                cursor.execute(f"CREATE UNIQUE INDEX {name} ON {staging} {match.group(2)}")
                cursor.execute(f"ALTER TABLE {staging} ADD CONSTRAINT {name} "
                               f"{'PRIMARY KEY' if kind == 'p' else 'UNIQUE'} USING INDEX {name}")
            else:
                cursor.execute(f"ALTER TABLE {staging} ADD CONSTRAINT {name} {definition}")
        if not unique_only:
            cursor.execute(  # (those not behind a key: a key's index is no plain index of the parent's)
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)", [staging])
            made_indexes = {match.groups() for (d,) in cursor.fetchall() if (match := _INDEX_DEFINITION.match(d))}
            for i, definition in enumerate(indexes):
                match = _INDEX_DEFINITION.match(definition)
                if match is None:
                    raise RuntimeError(f"unexpected index definition on {table}: {definition}")
                if match.groups() in made_indexes:
                    continue
                cursor.execute(
                    f"CREATE {match.group(1) or ''}INDEX {table}_{token}_{i}_i ON {staging} {match.group(2)}")
        if first:
            cursor.execute(f"ANALYZE {staging}")


def staging_attach(
    models_: type[models.Model] | Sequence[type[models.Model]],
    release_id: int,
    *,
    before_swap: Callable[[], None] | None = None,
) -> None:
    """Index the build's tables, check their keys, and swap them in as release ``release_id``'s rows.

    ``models_``: one model, or several whose tables are swapped in one transaction (a
    reader sees all the old rows or all the new ones). Every index, unique constraint and
    foreign key of a table is made on the build's table first (:func:`staging_index`;
    readers go on reading the old rows meanwhile), so that attaching it finds them all
    and only records them. The swap, in one transaction: ``before_swap`` runs first (to
    lock and check what the caller needs; its error ends the attach), then per table the
    release's rows in the default partition are deleted, its old partition dropped, the
    new table renamed and attached. The transaction waits at most
    ``SWAP_LOCK_TIMEOUT_MS`` for each lock and is tried ``SWAP_ATTEMPTS`` times. Raises
    ``django.db.IntegrityError`` when a key does not hold, of the new rows or of rows
    written earlier in an enclosing transaction, and ``django.db.OperationalError`` when
    the locks were not had; the release's rows are then unchanged (the build's tables are
    left for the caller to drop).
    """
    chosen = [models_] if isinstance(models_, type) else list(models_)
    for model in chosen:
        staging_index(model, release_id)
    for attempt in range(SWAP_ATTEMPTS):
        try:
            with transaction.atomic():
                if before_swap is not None:
                    before_swap()
                for model in chosen:
                    _swap(model._meta.db_table, partition_name(model, release_id), staging_name(model, release_id),
                          int(release_id))
            return
        except OperationalError as error:
            if getattr(error.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE or attempt == SWAP_ATTEMPTS - 1:
                raise
            time.sleep(SWAP_RETRY_PAUSE_S * (attempt + 1))


# Dropping a release's old partition needs the table to itself for a moment, and attaching
# the new one the tables its keys reference. A query that holds one of them for long (a
# large download) must not make every reader queue behind the swap: the swap waits this
# long for its locks, then gives way and tries again, a few times.
SWAP_LOCK_TIMEOUT_MS = 5_000
SWAP_ATTEMPTS = 6
SWAP_RETRY_PAUSE_S = 2.0
LOCK_NOT_AVAILABLE = "55P03"


def _swap(table: str, partition: str, staging: str, release_id: int) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = {int(SWAP_LOCK_TIMEOUT_MS)}")
        # Checks still deferred in an enclosing transaction (rows curated in it) run now: a
        # table with pending trigger events cannot be dropped. Django's keys are all
        # initially deferred, as they are again after the swap.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"DELETE FROM {table}_default WHERE release_id = %s", [release_id])
        cursor.execute(f"DROP TABLE IF EXISTS {partition}")
        cursor.execute(f"ALTER TABLE {staging} RENAME TO {partition}")
        cursor.execute(f"ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES IN ({release_id})")
        # The CHECK spared the attach a scan; the partition's bound now says the same.
        cursor.execute(f"ALTER TABLE {partition} DROP CONSTRAINT {staging}_release")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute("SET LOCAL lock_timeout TO DEFAULT")


def partitions_drop(release_id: int) -> None:
    """Drop release ``release_id``'s partitions (after its rows went with the release).

    Each drop waits at most ``SWAP_LOCK_TIMEOUT_MS`` for its locks (``_drop_briefly``);
    raises ``django.db.OperationalError`` when they were not had, which undoes the
    deletion that called it.
    """
    from .models import CatalogEntry, CatalogStar

    for model in (CatalogEntry, CatalogStar):
        if partitioned(model):
            _drop_briefly(partition_name(model, release_id))
            _drop_briefly(staging_name(model, release_id))
