"""Which schema a database holds, and creating schema 2 in an empty one.

A result database says its schema in ``ablate_meta.schema_version``. One written by the first
release has none (its metrics are columns of ``runs``, its runs not keyed by task): reading it
would mean guessing which column is which metric of which task, so it is refused with one line
saying what to do, and nothing is written to it. A database of a newer ablate is refused likewise.
"""
from __future__ import annotations

from sqlalchemy import insert, inspect, select

from ablations.errors import InputError
from runner.store._tables import CORE_TABLES, SCHEMA_VERSION, ablate_meta, metadata


def prepare_schema(conn, where: str, *, local_file: bool, create: bool) -> bool:
    """Check the schema of the database behind ``conn``; with ``create``, make schema 2 in a
    database that holds none of ablate's tables (tables and version row in the caller's one
    transaction: a kill leaves all or nothing). Returns whether the tables are there.

    Raises :class:`InputError` (one line naming ``where``) for a database of an earlier or newer
    ablate, one with tables of another program named like ours, or one missing some of ours;
    nothing is written then. ``local_file``: ``where`` is a file in a workspace (the advice
    differs from a database server's)."""
    tables = set(inspect(conn).get_table_names())
    if ablate_meta.name not in tables:
        if CORE_TABLES <= tables:
            aside = ("move the workspace aside (ablate 0.1 still reads it) and run again" if local_file else
                     "give this ablate a new, empty database (ablate 0.1 still reads this one)")
            raise InputError(f"{where}: result database of an earlier ablate (schema 1: metrics as columns, "
                             f"runs not keyed by task); this ablate cannot read it without guessing: {aside}")
        clash = sorted(tables & set(metadata.tables))
        if clash:
            raise InputError(f"{where}: not ablate's result database: it has tables named like ablate's "
                             f"({', '.join(clash)}) but no ablate_meta; give ablate a database of its own")
        if not create:
            return False
        metadata.create_all(conn)
        conn.execute(insert(ablate_meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        return True
    _check_version(conn.execute(select(ablate_meta.c.value).where(
        ablate_meta.c.key == "schema_version")).scalar(), where)
    missing = sorted(set(metadata.tables) - tables)
    if missing:
        raise InputError(f"{where}: result database (schema {SCHEMA_VERSION}) without its tables "
                         f"{', '.join(missing)}: restore it from a backup, or move it aside to start a new one")
    _add_missing_columns(conn, where, create=create)
    return True


def _add_missing_columns(conn, where: str, *, create: bool) -> None:
    """Schema 2's only migration: a nullable column a later ablate added (one that older readers
    may ignore, so the version stays) is added to a database that lacks it, its rows kept, NULL
    in them. A read-only open cannot add it and says so; a missing column that is not nullable
    means a damaged schema."""
    inspector = inspect(conn)
    missing = []
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [(table, column) for column in table.columns if column.name not in present]
    if not missing:
        return
    required = [f"{t.name}.{c.name}" for t, c in missing if not c.nullable]
    if required or not create:
        names = ", ".join(required or [f"{t.name}.{c.name}" for t, c in missing])
        raise InputError(f"{where}: result database (schema {SCHEMA_VERSION}) without the columns {names}: "
                         + ("restore it from a backup, or move it aside to start a new one" if required
                            else "`ablate run` adds them (read commands write nothing)"))
    for table, column in missing:
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')


def _check_version(value, where: str) -> None:
    try:
        version = int(value)
    except (TypeError, ValueError):
        version = None
    if version == SCHEMA_VERSION:
        return
    if version is not None and version > SCHEMA_VERSION:
        raise InputError(f"{where}: result database written by a newer ablate (schema {version}; this one "
                         f"reads schema {SCHEMA_VERSION}); upgrade ablate to use it")
    raise InputError(f"{where}: result database of an unknown schema (ablate_meta.schema_version "
                     f"{value!r}); this ablate reads schema {SCHEMA_VERSION} only")
