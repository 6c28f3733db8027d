"""The one seam every SQL statement of the platform goes through.

Stage code never holds a database connection: it receives a `Sql` runner and asks it to execute a
statement, create a table from a select, fetch rows or a frame, hand a pandas frame to SQL, apply Python
to rows where they are (`map_rows` per row, `map_groups` per group of rows, `map_arrow` per batch: on
Spark, on the executors), or open a scope of temporary tables that are dropped when the step ends.
Keeping every statement behind this small surface is what lets a second engine (Spark) plug in by
implementing the same methods, and what keeps the rules about intermediate tables (named, owned and
dropped by the step that makes them) in one place instead of in each module.

SQL is written in DuckDB's dialect. Where it costs nothing it stays portable: `left(s, 1)` over `s[1]`,
`row_number()` with an `order by`, no trailing commas.

Errors: the runner's callers catch `SqlError` (any statement failure) or `SqlDataError` (a value that
does not convert, is out of range or is invalid input), never an engine's own exception classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from itertools import groupby
from operator import itemgetter
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

# Any statement failure, whatever the engine.
SqlError = duckdb.Error
# A value the statement could not convert, fit or accept: the data is at fault, not the SQL.
SqlDataError = (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.OutOfRangeException)

Params = Sequence[Any] | Mapping[str, Any] | None


class Sql:
    """Runs statements on one warehouse connection; see the module docstring.

    Built by `Warehouse.sql()` for the length of one step (or by `Sql.in_memory()` for an isolated
    scratch database); a test may wrap its own connection with `Sql(conn)`.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn

    @classmethod
    def in_memory(cls, **settings: Any) -> Sql:
        """A private in-memory database with its own settings (e.g. `enable_external_access=False` for a
        sandbox): nothing it does can touch the warehouse. Close it with `close()`."""
        return cls(duckdb.connect(":memory:", config=settings))

    def close(self) -> None:
        """Close the connection; only for a runner made by `in_memory`."""
        self._conn.close()

    # Statements -----------------------------------------------------------------------------------

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement (or several separated by `;`) for its effect."""
        self._conn.execute(sql, params)

    def rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Every row of a query, as tuples."""
        return self._conn.execute(sql, params).fetchall()

    def row(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        """The first row of a query, or None when it has none. The whole result is fetched: DuckDB refuses
        further work on a connection while a result is only partly read."""
        found = self._conn.execute(sql, params).fetchall()
        return found[0] if found else None

    def value(self, sql: str, params: Params = None) -> Any:
        """The first column of the first row (a count, a max, a setting); None when there is no row."""
        found = self.row(sql, params)
        return None if found is None else found[0]

    def frame(self, sql: str, params: Params = None) -> pd.DataFrame:
        """A query's result as a pandas frame."""
        return self._conn.execute(sql, params).df()

    def arrays(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        """A query's columns as numpy arrays, for numeric work that would be slow row by row."""
        return self._conn.execute(sql, params).fetchnumpy()

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        """A query's result as an Arrow table, every type kept exactly (a decimal stays a decimal, where a
        pandas frame would make it a float): for handing rows to another database, such as the sandbox
        segment conditions run in."""
        return self._conn.sql(sql, params=params).to_arrow_table()

    def stream(self, sql: str, params: Params = None, batch_rows: int = 50_000) -> Iterator[tuple[Any, ...]]:
        """A query's rows, fetched a batch at a time so a large result is never held whole."""
        cursor = self._conn.execute(sql, params)
        while batch := cursor.fetchmany(batch_rows):
            yield from batch

    def columns(self, sql: str) -> list[str]:
        """The column names a select would produce; the statement is bound, not run."""
        return list(self._conn.sql(sql).columns)

    def column_types(self, sql: str) -> list[tuple[str, str]]:
        """The (name, DuckDB type) of each column a select would produce; the statement is bound, not run."""
        return self.rows(f"select column_name, column_type from (describe {sql})")

    def export(self, sql: str, path: str, file_format: str, params: Params = None, *, delimiter: str = ",") -> int:
        """Write a query's rows to one file, `csv` (with a header, cells separated by `delimiter`) or `parquet`;
        returns how many were written."""
        options = (
            f"format csv, header true, delimiter {sql_literal(delimiter)}" if file_format == "csv" else "format parquet"
        )
        return int(self._conn.execute(f"copy ({sql}) to {sql_literal(path)} ({options})", params).fetchone()[0])

    # Tables ---------------------------------------------------------------------------------------

    def create_table_as(self, name: str, select: str, params: Params = None, *, temporary: bool = False) -> None:
        """Create (or replace) table `name` from a select."""
        kind = "temp table" if temporary else "table"
        self._conn.execute(f"create or replace {kind} {name} as {select}", params)

    def drop_table(self, name: str) -> None:
        """Drop a table if it exists."""
        self._conn.execute(f"drop table if exists {name}")

    def map_rows(self, name: str, select: str, rule: Callable[..., tuple], outputs: Sequence[str]) -> int:
        """Temporary table `name`: each row of `select` with the outputs `rule` gives for it, for the rules
        SQL cannot say (a phone number's parse, a name's nicknames). Every column is text; the rule is called
        with the row's values as text (None for NULL) and returns one text or None per output.

        Here the rows come into this process as one frame; Spark's runner applies the rule where the rows
        are, in batches on its executors, so no table passes through the driver. Returns the rows' count."""
        inputs = self.frame(f"select {_as_text(self.columns(select))} from ({select})")
        self._keep_as_text(name, ruled_rows(inputs, rule, outputs), [*inputs.columns, *outputs])
        return len(inputs)

    def map_arrow(
        self, name: str, select: str, function: Callable[[pa.Table], pa.Table], outputs: Sequence[str]
    ) -> int:
        """Temporary table `name` of the rows (columns `outputs`, all text) that `function` gives for
        `select`'s rows as an Arrow table: for work done by another engine over rows one at a time (a
        segment's condition in its sandbox). The function must not depend on which rows come together.

        Here it gets all the rows at once; Spark's runner calls it on its executors for each batch of rows
        (`mapInArrow`), so no table passes through the driver. Returns the rows' count."""
        given = function(self.arrow(select))
        self._keep_as_text(name, given, outputs)
        return given.num_rows

    def map_groups(
        self,
        name: str,
        select: str,
        keys: Sequence[str],
        rule: Callable[[list[tuple]], list[tuple]],
        outputs: Sequence[str],
    ) -> int:
        """Temporary table `name` of the rows (columns `outputs`, all text) that `rule` gives for each group
        of `select`'s rows sharing the values of `keys`: for the judgements made over a group that SQL cannot
        say (how many people the records under one e-mail address are). The rule gets the group's rows as
        tuples of text (None for NULL) in `select`'s column order, sorted as `sorted_text_rows` sorts them,
        so both engines call it with the same list, and returns tuples of text or None.

        Here the rows come into this process, in order of their keys; Spark's runner calls the rule on its
        executors for each group (`applyInPandas`), so no table passes through the driver. Returns the
        number of rows written."""
        columns = self.columns(select)
        text = _as_text(columns)
        order = ", ".join(f'"{k}"' for k in keys)
        # The rows come ordered by their keys, so each group is one run of equal keys.
        key = itemgetter(*(columns.index(k) for k in keys))
        written: list[tuple] = []
        for _, group in groupby(self.stream(f"select {text} from ({select}) order by {order}"), key=key):
            written += grouped_rows(list(group), rule, outputs)
        self._keep_as_text(name, pd.DataFrame(written, columns=list(outputs), dtype=object), outputs)
        return len(written)

    def _keep_as_text(self, name: str, rows: pd.DataFrame | pa.Table, columns: Sequence[str]) -> None:
        """Temporary table `name` of `rows`' `columns` as text: what the map_ methods leave, whatever type a
        column of Python values (or of none at all) would be given."""
        with self.registered(f"{name}_rows", rows) as registered:
            self.create_table_as(name, f"select {_as_text(columns)} from {registered}", temporary=True)

    def table_exists(self, qualified: str) -> bool:
        """Whether table or view `schema.name` exists: for a step that reads what another stage may not have
        written yet."""
        schema, name = qualified.split(".")
        return bool(
            self.value(
                "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                [schema, name],
            )
        )

    def table_names(self) -> list[tuple[str, str]]:
        """Every table of the warehouse (not views, nor temporary tables) as (schema, name), sorted: for a step
        that must reach every table holding some kind of row, those added after it was written too."""
        return [
            (schema, name)
            for schema, name in self.rows(
                """select table_schema, table_name from information_schema.tables
                   where table_type = 'BASE TABLE' and table_catalog = current_database() order by 1, 2"""
            )
        ]

    def is_view(self, qualified: str) -> bool:
        """Whether `schema.name` is a view (not a table, nor missing): for a view that replaces what an
        earlier version wrote as a table."""
        schema, name = qualified.split(".")
        kind = self.value(
            "select table_type from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, name],
        )
        return kind == "VIEW"

    @contextmanager
    def registered(self, name: str, frame: pd.DataFrame | Any) -> Iterator[str]:
        """`frame` (pandas or Arrow) readable from SQL as `name` for the block, then forgotten."""
        self._conn.register(name, frame)
        try:
            yield name
        except BaseException:
            # Inside a failed transaction the unregister fails too; the error that matters is the first.
            with suppress(SqlError):
                self._conn.unregister(name)
            raise
        self._conn.unregister(name)

    @contextmanager
    def scratch(self, step: str) -> Iterator[Scratch]:
        """The step's temporary tables: `tables("x")` names one (`<step>__x`); all are dropped when the
        block ends, on error too."""
        tables = Scratch(self, step)
        try:
            yield tables
        except BaseException:
            tables.close(failing=True)
            raise
        tables.close()

    @contextmanager
    def transaction(self) -> Iterator[Sql]:
        """Run the block's statements as one transaction: committed if the block ends normally, rolled back
        if it raises (even on KeyboardInterrupt), so a half-written change is never left behind for the
        next statement or run to see."""
        self._conn.execute("begin transaction")
        try:
            yield self
            self._conn.execute("commit")
        except BaseException:
            # A commit that failed has already ended the transaction; the error that matters is the first.
            with suppress(duckdb.TransactionException):
                self._conn.execute("rollback")
            raise


class Scratch:
    """The temporary tables and registered frames of one step; see `Sql.scratch`.

    A table another step reads is handed to it by name, as an argument, never found by a name both
    modules happen to know.
    """

    def __init__(self, sql: Sql, step: str) -> None:
        self.sql = sql
        self.step = step
        self._tables: list[str] = []
        self._frames: list[str] = []

    def __call__(self, name: str) -> str:
        """The step's name for its table `name`; the table is dropped when the step ends."""
        table = f"{self.step}__{name}"
        if table not in self._tables:
            self._tables.append(table)
        return table

    def frame(self, name: str, frame: pd.DataFrame | Any) -> str:
        """Register `frame` under the step's name for it; unregistered when the step ends."""
        view = f"{self.step}__{name}"
        self.sql._conn.register(view, frame)
        if view not in self._frames:
            self._frames.append(view)
        return view

    def drop(self, name: str) -> None:
        """Drop the step's table or frame `name` before the step ends, to free its memory for what follows."""
        view = f"{self.step}__{name}"
        if view in self._frames:  # a registered frame: unregistering lets its memory go
            self.sql._conn.unregister(view)
            self._frames.remove(view)
            return
        self.sql.drop_table(view)
        if view in self._tables:
            self._tables.remove(view)

    def close(self, failing: bool = False) -> None:
        """Drop every table and unregister every frame; while an error is on its way out, a drop that fails
        too must not hide it."""
        for view in reversed(self._frames):
            try:
                self.sql._conn.unregister(view)
            except SqlError:
                if not failing:
                    raise
        for table in reversed(self._tables):
            try:
                self.sql.drop_table(table)
            except SqlError:
                if not failing:
                    raise
        self._frames.clear()
        self._tables.clear()


def ruled_rows(inputs: pd.DataFrame, rule: Callable[..., tuple], outputs: Sequence[str]) -> pd.DataFrame:
    """`inputs` with `rule`'s outputs for each of its rows as columns of text: `map_rows`'s one way of
    applying a rule, on either engine (on Spark to each batch of rows an executor holds)."""
    values = [rule(*row) for row in inputs.itertuples(index=False, name=None)]
    # The first row tells a rule that gives other than text (which each engine would write differently).
    if values and (len(values[0]) != len(outputs) or not all(v is None or isinstance(v, str) for v in values[0])):
        raise TypeError(f"{getattr(rule, '__name__', rule)} gave {values[0]!r}, not {len(outputs)} texts or None")
    ruled = pd.DataFrame(values, columns=list(outputs), dtype=object) if values else None
    if ruled is None:
        ruled = pd.DataFrame({o: pd.Series(dtype=object) for o in outputs})
    return pd.concat([inputs.reset_index(drop=True).astype(object), ruled], axis=1)


def _as_text(columns: Sequence[str]) -> str:
    """A select list of `columns` cast to text under their own names."""
    return ", ".join(f'"{c}"::varchar as "{c}"' for c in columns)


def sorted_text_rows(rows: list[tuple]) -> list[tuple]:
    """Rows of text sorted column by column, None first: the order `map_groups` hands a group's rows to
    its rule on either engine (Spark gives a group's rows in no set order). The identity stage hands
    hundreds of thousands of groups over, most of one row, which is its own order and is not sorted."""
    return rows if len(rows) < 2 else sorted(rows, key=_text_order)


def _text_order(row: tuple) -> tuple:
    """A row's sort key for sorted_text_rows: each value as (present, text), so None sorts first."""
    return tuple([(False, "") if v is None else (True, v) for v in row])


def grouped_rows(group: list[tuple], rule: Callable[[list[tuple]], list[tuple]], outputs: Sequence[str]) -> list[tuple]:
    """What `rule` gives for one group of `map_groups`, checked to be rows of len(outputs) texts or None
    (each engine would write another type its own way)."""
    given = rule(sorted_text_rows(group))
    for row in given[:1]:
        if len(row) != len(outputs) or not all(v is None or isinstance(v, str) for v in row):
            raise TypeError(f"{getattr(rule, '__name__', rule)} gave {row!r}, not {len(outputs)} texts or None")
    return given


def sql_literal(value: str | None) -> str:
    """A string as a SQL literal, for the few names (sources, segments, destinations) and the rules' fixed
    words spliced into SQL."""
    return "null" if value is None else "'" + value.replace("'", "''") + "'"


def portable_hash(*expressions: str) -> str:
    """SQL for a hash of the expressions' values that DuckDB and Spark compute alike: a non-negative
    60-bit BIGINT, the first 15 hex digits of the md5 of the values' text.

    The engines' own `hash()` functions give other values for the same input, so a result that depends on
    one (an order, a sample, a fingerprint kept for the next run) would change with the engine; the Spark
    dialect refuses raw `hash()` and reads this expression's `'0x' || ...` cast as a hexadecimal number.

    The text is each value cast to VARCHAR, NULL as U+001E, joined by U+001F: the two engines write
    strings, integers, booleans, dates, timestamps and lists of integers alike (not floating-point
    numbers, nor lists of strings or structs, which each engine quotes its own way). Values holding those
    control characters could meet another tuple's text; a shared hash only ever costs a candidate pair
    or a missed change, as any 60-bit hash may. Lengths prefixed to make the text unambiguous would
    double the cost (a million whole person records: about 0.9 s more, README's Performance section).
    """
    if not expressions:
        raise ValueError("portable_hash needs at least one expression")
    values = ", ".join(f"coalesce(cast({e} as varchar), chr(30))" for e in expressions)
    return f"('0x' || left(md5(concat_ws(chr(31), {values})), 15))::bigint"
