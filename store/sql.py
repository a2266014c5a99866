"""Hand-written SQL for the hot paths (append, projections, rebuilds).

Peewee builds a statement from an expression tree on every call; on the append path that
costs more than the database does. These helpers cache the SQL text per table and column set
(with the database's own placeholder) and convert values with the models' own fields, so the
statements stay exactly what Peewee would send, minus the building.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import peewee

from store.models import BaseModel

Row = dict[str, Any]


def _param(db: peewee.Database) -> str:
    return str(db.param)


def _quote(db: peewee.Database, name: str) -> str:
    quotes = str(db.quote)  # the opening and closing quote characters, e.g. '""'
    return f"{quotes[0]}{name}{quotes[-1]}"


@lru_cache(maxsize=256)
def _insert_sql(
    db: peewee.Database, table: str, columns: tuple[str, ...], rows: int, returning: str | None
) -> str:
    cols = ", ".join(_quote(db, c) for c in columns)
    one = "(" + ", ".join([_param(db)] * len(columns)) + ")"
    values = ", ".join([one] * rows)
    tail = (
        f" RETURNING {', '.join(_quote(db, c) for c in returning.split(','))}" if returning else ""
    )
    return f"INSERT INTO {_quote(db, table)} ({cols}) VALUES {values}{tail}"


def insert_rows(
    db: peewee.Database,
    model: type[BaseModel],
    rows: Sequence[Row],
    *,
    returning: str | None = None,
    chunk: int = 400,
) -> list[tuple[Any, ...]]:
    """INSERT ``rows`` (all with the same keys, field names = column names) in chunks."""
    if not rows:
        return []
    fields = model._meta.fields
    columns = tuple(rows[0])
    table = model._meta.table_name
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        params = [fields[c].db_value(row[c]) for row in part for c in columns]
        cursor = db.execute_sql(_insert_sql(db, table, columns, len(part), returning), params)
        if returning:
            out.extend(tuple(r) for r in cursor.fetchall())
    return out


@lru_cache(maxsize=256)
def _update_sql(db: peewee.Database, table: str, columns: tuple[str, ...], pk: str) -> str:
    sets = ", ".join(f"{_quote(db, c)} = {_param(db)}" for c in columns)
    return f"UPDATE {_quote(db, table)} SET {sets} WHERE {_quote(db, pk)} = {_param(db)}"


def update_row(db: peewee.Database, model: type[BaseModel], pk: Any, values: Row) -> None:
    fields = model._meta.fields
    pk_name: str = model._meta.primary_key.name  # type: ignore[union-attr]
    columns = tuple(sorted(values))
    params = [fields[c].db_value(values[c]) for c in columns] + [fields[pk_name].db_value(pk)]
    db.execute_sql(_update_sql(db, model._meta.table_name, columns, pk_name), params)


@lru_cache(maxsize=256)
def _select_sql(db: peewee.Database, table: str, columns: tuple[str, ...], pk: str) -> str:
    cols = ", ".join(_quote(db, c) for c in columns)
    return f"SELECT {cols} FROM {_quote(db, table)} WHERE {_quote(db, pk)} = {_param(db)}"


def select_row(db: peewee.Database, model: type[BaseModel], pk: Any) -> Row | None:
    fields = model._meta.fields
    pk_name: str = model._meta.primary_key.name  # type: ignore[union-attr]
    columns = tuple(fields)
    cursor = db.execute_sql(
        _select_sql(db, model._meta.table_name, columns, pk_name), [fields[pk_name].db_value(pk)]
    )
    found = cursor.fetchone()
    if found is None:
        return None
    return {c: fields[c].python_value(v) for c, v in zip(columns, found, strict=True)}


def execute(db: peewee.Database, sql: str, params: Sequence[Any]) -> Any:
    """Run ``sql`` written with ``?`` placeholders (translated for the database); the cursor."""
    return db.execute_sql(_translate(db, sql), list(params))


def scalar(db: peewee.Database, sql: str, params: Sequence[Any]) -> Any:
    found = execute(db, sql, params).fetchone()
    return None if found is None else found[0]


@lru_cache(maxsize=64)
def _translate(db: peewee.Database, sql: str) -> str:
    return sql.replace("?", _param(db))
