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
from contextlib import contextmanager

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
    """Hold a session advisory lock on one release for a whole build (its chunks may commit
    apart); a build waits for another of the same release. The lock is re-entrant. Other
    databases: nothing is locked."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [_BUILD_LOCK_SPACE, int(release_id)])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_BUILD_LOCK_SPACE, int(release_id)])


def release_build_xact_locks(release_ids) -> None:
    """Take the build locks of these releases until the current transaction ends (in id
    order, so that two callers never wait for each other); waits for their builds."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for release_id in sorted({int(r) for r in release_ids}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_BUILD_LOCK_SPACE, release_id])


def _staging(model: type[models.Model], release_id: int) -> str:
    return f"{partition_name(model, release_id)}_build"


def staging_create(model: type[models.Model], release_id: int) -> str:
    """(Re)create the empty table a build of release ``release_id`` writes into; returns its name.

    It has the table's columns, defaults and CHECK constraints, and nothing else: no
    identity (the build draws ids from the table's sequence), no index, no key. A table
    left by a build that died is dropped first.
    """
    staging = _staging(model, release_id)
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
        _drop_briefly(_staging(model, release_id))
    except DatabaseError:
        pass  # the referenced tables are busy: the release's next build drops it


def staging_attach(model: type[models.Model], release_id: int) -> None:
    """Index the build's table, check its keys, and swap it in as release ``release_id``'s rows.

    Every index, unique constraint and foreign key of the table is made on the build's
    table first (readers go on reading the old rows meanwhile), so that attaching it
    finds them all and only records them. The swap, in one transaction: the release's
    rows in the default partition are deleted, its old partition dropped, the new table
    renamed and attached; it waits at most ``SWAP_LOCK_TIMEOUT_MS`` for its locks and is
    tried ``SWAP_ATTEMPTS`` times. Raises ``django.db.IntegrityError`` when a key does not
    hold, of the new rows or of rows written earlier in an enclosing transaction, and
    ``django.db.OperationalError`` when the locks were not had; the release's rows are
    then unchanged (the build's table is left for the caller to drop).
    """
    table, partition, staging = model._meta.db_table, partition_name(model, release_id), _staging(model, release_id)
    token = secrets.token_hex(4)  # index names are unique per schema; the old partition's are still there
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid), conindid FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype, conname", [table])
        constraints = cursor.fetchall()
        backing = {index for _, kind, _, index in constraints if kind in ("p", "u")}
        cursor.execute(
            "SELECT indexrelid, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass "
            "ORDER BY indexrelid", [table])
        indexes = [definition for index, definition in cursor.fetchall() if index not in backing]
        cursor.execute(f"ALTER TABLE {staging} ADD CONSTRAINT {staging}_release CHECK (release_id = {int(release_id)})")
        for i, (_, kind, definition, _) in enumerate(constraints):
            cursor.execute(f"ALTER TABLE {staging} ADD CONSTRAINT {table}_{token}_{i}_{kind} {definition}")
        for i, definition in enumerate(indexes):
            match = _INDEX_DEFINITION.match(definition)
            if match is None:
                raise RuntimeError(f"unexpected index definition on {table}: {definition}")
            cursor.execute(f"CREATE {match.group(1) or ''}INDEX {table}_{token}_{i}_i ON {staging} {match.group(2)}")
        cursor.execute(f"ANALYZE {staging}")
    for attempt in range(SWAP_ATTEMPTS):
        try:
            _swap(table, partition, staging, int(release_id))
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
            _drop_briefly(_staging(model, release_id))
