"""`SparkSql`: the `Sql` runner's methods over a SparkSession, each statement translated from DuckDB's
dialect by resources/spark/dialect.py.

What differs from DuckDB, on purpose:
- A temporary table (`create_table_as(..., temporary=True)`) is computed once and kept (a local
  checkpoint behind a temporary view), never left a lazy view that would run its select again each time
  it is read and could give another answer once its sources change.
- A Spark table is not a database file with a log, so a transaction is made of swaps: in `transaction()`
  each catalogued table the block changes is changed as its staged copy (`<table>__staged`, which the
  block's statements read in its place), except that the rows a block only adds to a table are written
  as a table of their own (`<table>__added`, read with the table's), so a file's load does not write its
  table again; when the block ends, the staged tables are swapped in and the added rows' files moved into
  their tables' folders, by a journal in the warehouse folder that `finish_interrupted_writes` completes
  if the run is killed meanwhile; a block that raises, or a run killed inside it, changes no table. It
  raises unless the runner is made with `staged_transactions` (the Spark warehouse's runner,
  resources/spark/warehouse.py, whose session start runs that repair).
- Tables are kept in the session's catalog (in memory, or a Hive metastore in the warehouse folder, which
  outlives the session) over files in the warehouse folder, as parquet unless configured otherwise.
  `create or replace table t (columns...)` drops t first (parquet tables cannot be replaced in place).
- What Spark's parser refuses and the stages need: `alter table t add column if not exists` adds the
  column when t lacks it; `insert or replace into t` and `insert into t ... on conflict do nothing` write
  t anew by the conflict target or t's declared primary key (resources/tables.py), Spark's tables
  enforcing none.
- What Spark cannot do to a temporary table (a view), the runner does: `create temp table t (columns...)`
  keeps an empty table of those columns, and `insert into t select ...` keeps t's rows and the new ones
  as the table anew.
- `update` and `delete` (with `from`/`using` too), which parquet tables and views do not take, are run by
  writing the table anew with the picked rows changed or gone (Delta and Iceberg tables take the dialect's
  MERGE INTO instead). A table written anew, or replaced by `create_table_as`, is written beside the old
  one and swapped in; what a killed run leaves of a swap is finished or undone by
  `finish_interrupted_writes` when the warehouse is next opened, so each such statement leaves the table
  as it was or as the statement made it, and each block all its tables as they were or as it made them.
- A copy of the warehouse (what the rebuild check and the identity change preview run the stages on) is a
  set of databases in the same catalogue, `<copy>__<schema>`: a runner made with `schemas` reads and
  writes `clean.t` as `<copy>__clean.t`, so the stage code runs on the copy unchanged, and one made with
  `copies` reads DuckDB's name for an attached copy's table, `<copy>.clean.t`, as `<copy>__clean.t`.

Errors are raised as `SparkSqlError` and `SparkDataError`, subclasses of the DuckDB classes that
`SqlError` and `SqlDataError` name, so a caller's `except SqlError` holds on either engine.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any
from uuid import uuid4

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from resources.spark.dialect import to_spark
from resources.spark.udfs import ensure_jar, register
from resources.sql import Params, Sql, grouped_rows, ruled_rows, sql_literal
from resources.tables import primary_key_of

# Table formats that change rows in place (the dialect's MERGE INTO, `create or replace`); the session's
# parquet tables do not, and the runner rewrites them instead.
ROW_LEVEL_FORMATS = ("delta", "iceberg")
# A table's replacement is written beside it under its name and this suffix, then swapped in.
BESIDE = "__new"
# A table a block of statements changes (`SparkSql.transaction`) is changed as its staged copy, under its
# name and this suffix, and the block's staged tables are swapped in together when it ends.
STAGED = "__staged"
# The rows a block adds to a table, and nothing else, are written as a table of this suffix, whose files
# are moved into the table's folder when the block ends: the table is not written again for them.
ADDED = "__added"
# Where, in the warehouse folder, a block's list of swaps is kept while they are made (a hidden folder:
# not a database's, nor swept as a table's).
JOURNALS = "_cdp_blocks"
# Spark's error conditions that mean the data, not the statement, is at fault (as SqlDataError does).
_DATA_ERRORS = ("CAST_INVALID_INPUT", "CAST_OVERFLOW", "ARITHMETIC_OVERFLOW", "DIVIDE_BY_ZERO", "NUMERIC_VALUE_OUT")


class SparkSqlError(duckdb.Error):
    """A statement failed on Spark."""


class SparkDataError(SparkSqlError, duckdb.InvalidInputException):
    """A value did not convert or fit on Spark: the data is at fault."""


class TransactionsUnavailable(SparkSqlError):
    """A runner made without `staged_transactions` was asked for a transaction; see the module docstring."""


def spark_session(
    master: str = "local[2]",
    warehouse_dir: str | Path | None = None,
    app_name: str = "dagster-cdp",
    catalog: str = "in-memory",
    conf: Mapping[str, str] | None = None,
) -> Any:
    """A SparkSession set up as the platform needs it: UTC, timestamps without time zone (DuckDB's
    TIMESTAMP), the UDF jar on the classpath and registered, a small number of shuffle partitions and no
    UI (a local session serves one step, not a cluster). `catalog` "hive" keeps the tables' catalogue in a
    metastore in `warehouse_dir`, so they outlive the session; "in-memory" forgets them with it. `conf`
    (the user's `warehouse.spark.conf`, checked when the configuration loaded) comes over these defaults:
    a cluster wants more shuffle partitions than 2, and a large local run a larger driver. An existing
    session in the process is reused, with its own settings."""
    from pyspark.sql import SparkSession

    if warehouse_dir:
        warehouse = Path(warehouse_dir)
    else:
        # A folder of the process's own, removed when it exits: the session dies with the process too.
        warehouse = Path(tempfile.mkdtemp(prefix="cdp-spark-"))
        atexit.register(shutil.rmtree, warehouse, ignore_errors=True)
    # The Python that runs the cleaning rules on the executors (`map_rows`): this one, where the platform is
    # installed, unless PYSPARK_PYTHON names another (a cluster's executors' own).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.jars", str(ensure_jar()))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
        .config("spark.sql.catalogImplementation", catalog)
        .config("spark.sql.warehouse.dir", str(warehouse.resolve()))
        .config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={warehouse.resolve()}/metastore_db;create=true",
        )
        .config("spark.hadoop.hive.metastore.warehouse.dir", str(warehouse.resolve()))
        # Hive's folder for resources a session downloads (none here): by default a new
        # `<tmp>/<session id>_resources` per session, never removed, one more in /tmp for every run. One
        # folder in the warehouse's instead, which every session reuses.
        .config("spark.hadoop.hive.downloaded.resources.dir", str(warehouse.resolve() / "hive_resources"))
        # Off: with it, a union over locally checkpointed tables (the runner's temporary tables) can fail
        # in Union.rewriteConstraints ("key not found" of an attribute), as Splink met too (its #2524).
        .config("spark.sql.constraintPropagation.enabled", "false")
        # Derby's log beside its metastore, not in whatever folder the process started in.
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={warehouse.resolve()}")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    _quiet_codegen_fallback(session)
    register(session)
    return session


# Spark's logger of generated Java code. A plan whose generated method outgrows the JVM's 64 KB limit (cleaning's
# long CASE expressions do) fails to compile; Spark then runs that part interpreted (`spark.sql.codegen.fallback`,
# on by default), giving the same rows, but first logs the failure as an ERROR with a Java stack trace of a few
# hundred lines, which reads as a failed run. A compile failure it cannot fall back from still raises.
CODEGEN_LOGGER = "org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator"


def _quiet_codegen_fallback(session: Any) -> None:
    """Silence `CODEGEN_LOGGER` when Spark falls back from what it cannot compile (see there)."""
    if session.conf.get("spark.sql.codegen.fallback", "true").lower() != "true":
        return
    jvm = session.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        CODEGEN_LOGGER, jvm.org.apache.logging.log4j.Level.OFF
    )


class _Registry:
    """The two calls `Scratch` makes on a runner's connection (register and unregister a frame), on a
    SparkSession's temporary views."""

    def __init__(self, spark: Any) -> None:
        self._spark = spark

    def register(self, name: str, frame: pd.DataFrame | pa.Table) -> None:
        # Through Arrow, whose types hold when the frame has no rows (Spark infers a pandas frame's types
        # from its rows); a column of nothing but NULLs, which Arrow cannot type, is text.
        table = pa.Table.from_pandas(frame, preserve_index=False) if isinstance(frame, pd.DataFrame) else frame
        for index, column in enumerate(table.schema):
            if pa.types.is_null(column.type):
                table = table.set_column(index, column.name, table.column(index).cast(pa.string()))
        self._spark.createDataFrame(table).createOrReplaceTempView(name)

    def unregister(self, name: str) -> None:
        self._spark.catalog.dropTempView(name)


class SparkSql:
    """The `Sql` runner's surface on Spark; see the module docstring."""

    def __init__(
        self,
        spark: Any,
        table_format: str = "parquet",
        *,
        staged_transactions: bool = False,
        schemas: Mapping[str, str] | None = None,
        copies: tuple[str, ...] = (),
    ) -> None:
        self.spark = spark
        self.table_format = table_format
        self.staged_transactions = staged_transactions
        self._conn = _Registry(spark)
        self._kept: dict[str, Any] = {}  # temporary table -> its checkpointed DataFrame
        self._held: dict[str, Any] = {}  # temporary table -> the checkpoint it is computed from, if not its own
        # Where a copy's tables live (see the module docstring): schema -> its copy's database, and the
        # copies read by DuckDB's attached name.
        self._schemas = dict(schemas or {})
        self._copies = copies
        # In a block (`transaction`): each catalogued table it changes (its name lower-cased) -> the staged
        # table standing for it until the block ends; None outside a block.
        self._block: dict[str, str] | None = None
        # In a block, each catalogued table it has only added rows to -> the table holding those rows.
        self._added: dict[str, str] = {}

    # Names ----------------------------------------------------------------------------------------

    def _mapped(self, sql: str, *, block: bool = True) -> str:
        """`sql` with its tables named where this runner keeps them: a copy's tables in the copy's databases,
        and in a block (unless not `block`) the tables it has changed as their staged copies, and a table
        it has added rows to as the table with those rows (an insert into it, as their table); as it is
        for the warehouse's."""
        staged_tables = (self._block or {}) if block else {}
        added_tables = self._added if block else {}
        if not self._schemas and not self._copies and not staged_tables and not added_tables:
            return sql
        import sqlglot
        from sqlglot import exp

        def rename(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Table) and node.args.get("db") is not None:
                catalog, db = node.catalog, node.db
                if catalog in self._copies:
                    node.set("catalog", None)
                    node.set("db", exp.to_identifier(copy_database_name(catalog, db)))
                elif not catalog and db in self._schemas:
                    node.set("db", exp.to_identifier(self._schemas[db]))
                key = f"{node.db}.{node.name}".lower()
                if key in staged_tables:
                    node.set("this", exp.to_identifier(staged_tables[key].rpartition(".")[2]))
                elif key in added_tables:
                    into = node.parent.parent if isinstance(node.parent, exp.Schema) else node.parent
                    if isinstance(into, exp.Insert) and into.this in (node, node.parent):
                        node.set("this", exp.to_identifier(added_tables[key].rpartition(".")[2]))
                    else:
                        both = sqlglot.parse_one(
                            f"select * from {key} union all select * from {added_tables[key]}", read="duckdb"
                        )
                        return exp.Subquery(this=both, alias=exp.TableAlias(this=exp.to_identifier(node.alias_or_name)))
            return node

        trees = _duckdb_statements(sql)
        if not trees:
            return sql
        return ";\n".join(tree.transform(rename).sql(dialect="duckdb") for tree in trees)

    def _mapped_name(self, name: str) -> str:
        """A table's name `schema.table` where this runner keeps it (see `_mapped`)."""
        schema, dot, table = name.rpartition(".")
        name = f"{self._schemas[schema]}.{table}" if dot and schema in self._schemas else name
        return (self._block or {}).get(name.lower(), name)

    def _warehouse_name(self, name: str) -> str:
        """The warehouse's name of a table this runner names (`_mapped_name` undone)."""
        schema, dot, table = name.rpartition(".")
        table = table.removesuffix(STAGED)
        found = [s for s, mapped in self._schemas.items() if mapped == schema]
        return f"{found[0] if found else schema}{dot}{table}"

    # Statements -----------------------------------------------------------------------------------

    def _statements(self, sql: str) -> list[str]:
        return to_spark(sql, columns_of=self.columns_of_spark)

    def _df(self, sql: str, params: Params) -> Any:
        statements = self._statements(self._mapped(sql))
        if len(statements) != 1:
            raise SparkSqlError(f"expected one query, found {len(statements)} statements")
        return self._run(statements[0], params)

    def _run(self, statement: str, params: Params) -> Any:
        from pyspark.errors import PySparkException

        args = None if params is None else dict(params) if isinstance(params, Mapping) else list(params)
        try:
            return self.spark.sql(statement, args=args)
        except PySparkException as exc:
            raise _error(exc, statement) from exc

    def _collect(self, df: Any) -> list[Any]:
        return _guarded(df.collect)

    def columns_of_spark(self, select: str) -> list[str]:
        """The columns a Spark select produces (analysed, not run)."""
        return list(self._run(select, None).columns)

    def execute(self, sql: str, params: Params = None) -> None:
        """Run a statement (or several separated by `;`) for its effect."""
        if self._block is not None:
            for tree in _duckdb_statements(self._mapped(sql, block=False)):
                self._stage_written(tree)
        sql = self._mapped(sql)
        trees = _duckdb_statements(sql)
        if len(trees) > 1 and params is None:
            for tree in trees:
                self.execute(tree.sql(dialect="duckdb"))
            return
        tree = trees[0] if len(trees) == 1 else None
        if tree is not None and (
            self._create_empty_temporary(tree, sql)
            or self._changed_in_place(tree, sql, params)
            or self._add_column_if_missing(tree)
            or self._upsert(tree, sql, params)
        ):
            return
        statements = self._statements(sql)
        if params is not None and len(statements) > 1:
            raise SparkSqlError("parameters go with one statement at a time")
        for statement in statements:
            if not self._insert_into_kept(statement, params):
                self._collect(self._run(self._replacing(statement), params))

    def _replacing(self, statement: str) -> str:
        """`create or replace table t (...)` as the drop of t and its creation: the session's parquet tables
        cannot be replaced in place (Delta and Iceberg tables can). The schema is created when missing."""
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(statement, read="spark")
        if not (isinstance(tree, exp.Create) and tree.kind == "TABLE" and isinstance(tree.this, exp.Schema)):
            return statement
        table = tree.this.this
        if table.db:
            self._run(f"create database if not exists {table.db}", None)
        if not tree.args.get("replace") or self.table_format in ROW_LEVEL_FORMATS:
            return statement
        self.drop_table(table.sql(dialect="spark"))
        tree.set("replace", False)
        return tree.sql(dialect="spark")

    def _create_empty_temporary(self, tree: Any, sql: str) -> bool:
        """`create [or replace] temp table t (columns...)` (DuckDB, parsed: `tree`) as an empty kept table of
        those columns: Spark's temporary tables are views of a select, which the dialect cannot write for a
        bare list of columns; False when `sql` is not one such statement."""
        from sqlglot import exp

        if not isinstance(tree, exp.Create) or not isinstance(tree.this, exp.Schema):
            return False
        if tree.find(exp.TemporaryProperty) is None:
            return False
        columns = [c for c in tree.this.expressions if isinstance(c, exp.ColumnDef)]
        ddl = to_spark(f"create table t ({', '.join(c.sql(dialect='duckdb') for c in columns)})")[0]
        schema = ddl[ddl.index("(") + 1 : ddl.rindex(")")]
        self._keep(tree.this.this.sql(dialect="spark"), self.spark.createDataFrame([], schema=schema), sql)
        return True

    def _add_column_if_missing(self, tree: Any) -> bool:
        """`alter table t add column if not exists c type` (DuckDB), which Spark's parser refuses, as the
        column added when t lacks it; False when `tree` is not one such statement."""
        from sqlglot import exp

        if not isinstance(tree, exp.Alter) or len(tree.args.get("actions") or []) != 1:
            return False
        column = tree.args["actions"][0]
        if not isinstance(column, exp.ColumnDef) or not column.args.get("exists"):
            return False
        table = tree.this.sql(dialect="spark")
        if column.name.lower() in {c.lower() for c in self.spark.table(table).columns}:
            return True
        definition = column.copy()
        definition.set("exists", False)
        ddl = to_spark(f"create table t ({definition.sql(dialect='duckdb')})")[0]
        self._run(f"alter table {table} add columns ({ddl[ddl.index('(') + 1 : ddl.rindex(')')]})", None)
        return True

    def _changed_in_place(self, tree: Any, sql: str, params: Params) -> bool:
        """`update t [alias] set c = e [from s] where w` and `delete from t [alias] [using s] where w` (DuckDB)
        on a table Spark cannot change row by row (its session's parquet tables, and temporary tables): the
        rows w picks (each once, where a `from` matches several) are computed, and the table is written
        anew with them changed or gone and its other rows as they were. False when `sql` is not one such
        statement, or the tables are Delta or Iceberg, which take the dialect's MERGE INTO.

        A run killed part way leaves the table as it was or as the statement made it, once
        `finish_interrupted_writes` has run (see `_write_anew`)."""
        from pyspark.sql import functions as F
        from sqlglot import exp

        if self.table_format in ROW_LEVEL_FORMATS or not isinstance(tree, exp.Update | exp.Delete):
            return False
        target = tree.this
        name = exp.table_name(target)
        alias = target.alias_or_name
        others = [tree.args["from_"].this] if isinstance(tree, exp.Update) and tree.args.get("from_") else []
        others += list(tree.args.get("using") or []) if isinstance(tree, exp.Delete) else []
        where = tree.args.get("where")
        condition = f" where {where.this.sql(dialect='duckdb')}" if where is not None else ""
        assigned = {e.this.name: e.expression.sql(dialect="duckdb") for e in tree.expressions}
        values = "".join(f", {value} as {column}" for column, value in assigned.items())
        # A statement that picks no row changes nothing: the table is not read whole and written anew (a file
        # loaded for the first time deletes its earlier rows, of which it has none). The assigned values are
        # selected too, so that parameters bind in the statement's order.
        probe = ", ".join([f"{name} as {alias}", *(o.sql(dialect="duckdb") for o in others)])
        if not _guarded(lambda: self._df(f"select 1{values} from {probe}{condition} limit 1", params).take(1), sql):
            return True
        row = "__cdp_row"
        base = _guarded(
            lambda: self.spark.table(name).withColumn(row, F.monotonically_increasing_id()).localCheckpoint(eager=True),
            sql,
        )
        base.createOrReplaceTempView("__cdp_base")
        sources = ", ".join([f"__cdp_base as {alias}", *(o.sql(dialect="duckdb") for o in others)])
        picked = self._df(f"select {alias}.{row}{values} from {sources}{condition}", params).dropDuplicates([row])
        kept = base.join(picked.select(row), row, "left_anti")
        if assigned:
            types = {f.name: f.dataType for f in base.schema.fields}
            changed = (
                base.drop(*assigned)
                .join(picked, row)
                .select(*[F.col(c).cast(types[c]) if c in assigned else F.col(c) for c in base.columns])
            )
            kept = kept.unionByName(changed)
        self._write_anew(name, kept.drop(row), sql)
        self.spark.catalog.dropTempView("__cdp_base")
        base.unpersist()
        return True

    def _write_anew(self, name: str, df: Any, statement: str) -> None:
        """Table `name` (kept temporary or in the catalogue) replaced by the rows of `df`, which may be
        computed from it: written beside it as `<name>__new`, then swapped in (the old table dropped, the new
        one renamed). Spark catalogues a table only once its files are written, so a run killed at any point
        leaves the old table, or the new one complete under `<name>__new` with the old one gone or still
        there, which `finish_interrupted_writes` completes or undoes when the warehouse is next opened. In a
        block, a table it has not changed yet gets its staged copy written from `df` instead."""
        if name in self._kept:
            self._keep(name, df, statement)
            return
        if self._first_change(name):
            self._save_as_table(self._stage(name, copy=False), df, statement)
            return
        beside = f"{name}{BESIDE}"
        self._run(f"drop table if exists {beside}", None)
        self._save_as_table(beside, df, statement)
        _swap_in(self.spark, beside, name, lambda text: self._run(text, None))

    def _save_as_table(self, name: str, df: Any, statement: str) -> None:
        """Write `df` as new table `name`. A folder left where the table's files go (by a write that failed
        or was killed before its table was catalogued) is removed first: Spark refuses to create a table
        over one, and nothing in it is a table's."""
        _remove_folder(self.spark, _table_folder(self.spark, name))
        _guarded(lambda: df.write.format(self.table_format).saveAsTable(name), statement)

    def _upsert(self, tree: Any, sql: str, params: Params) -> bool:
        """`insert or replace into t ...` and `insert into t ... on conflict do nothing` (DuckDB), which
        need a key Spark's tables do not enforce, as t written anew: its rows whose key the new rows do not
        have and the new rows (replace), or its rows and the new rows whose key it does not have (do
        nothing). The key is the conflict target, else t's declared primary key (resources/tables.py);
        False when `tree` is not one such statement."""
        from sqlglot import exp

        if not isinstance(tree, exp.Insert):
            return False
        conflict = tree.args.get("conflict")
        replace = tree.args.get("alternative") == "replace"
        if not replace and conflict is None:
            return False
        if conflict is not None and "NOTHING" not in str(conflict.args.get("action") or "").upper():
            return False  # `do update`: the dialect names it as unsupported
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        name = exp.table_name(target)
        key = [c.name for c in (conflict.args.get("conflict_keys") or [])] if conflict is not None else []
        key = key or list(primary_key_of(self._warehouse_name(name)))
        if not key:
            raise SparkSqlError(f"{name} has no declared primary key to replace or skip rows by\n{sql}")
        table = self.spark.table(name)
        listed = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else table.columns
        added = self._df(tree.expression.sql(dialect="duckdb"), params)
        if len(listed) != len(added.columns):
            raise SparkSqlError(f"insert into {name}: {len(listed)} columns, {len(added.columns)} values\n{sql}")
        added = _fitted(added, listed, table.schema)
        current = _guarded(lambda: table.localCheckpoint(eager=True), sql)
        if replace:
            rows = current.join(added.select(*key), key, "left_anti").unionByName(added)
        else:
            rows = current.unionByName(added.join(current.select(*key), key, "left_anti").dropDuplicates(key))
        self._write_anew(name, _guarded(lambda: rows.localCheckpoint(eager=True), sql), sql)
        return True

    def _insert_into_kept(self, statement: str, params: Params) -> bool:
        """Run `insert into <temporary table> select ...` as the kept rows and the new ones computed and kept
        anew (Spark cannot insert into a view); and in a block, an insert into a catalogued table it has not
        changed yet as its staged copy written with the new rows in one pass (rather than copied, then added
        to). False when the statement is neither."""
        import sqlglot
        from sqlglot import exp

        tree = sqlglot.parse_one(statement, read="spark")
        if not isinstance(tree, exp.Insert) or not isinstance(tree.this, exp.Table | exp.Schema):
            return False
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        name = target.sql(dialect="spark")
        if name not in self._kept and not (self._first_change(name) and self.spark.catalog.tableExists(name)):
            return False
        kept = self._kept[name] if name in self._kept else self.spark.table(name)
        select = tree.expression.copy()
        if tree.args.get("with_") is not None:  # `with ... insert into t select ...`: the select's CTEs
            select.set("with_", tree.args["with_"].copy())
        # Computed on its own first: planned together with the kept rows' union, a select with CTEs can
        # fail in Spark's optimizer (an attribute of the CTE "not found").
        added = self._run(select.sql(dialect="spark"), params)
        added = _guarded(lambda: added.localCheckpoint(eager=True), statement)
        if tree.args.get("by_name"):  # `insert into t by name select ...`: each column by its name
            listed = list(added.columns)
            unknown = sorted({c.lower() for c in listed} - {c.lower() for c in kept.columns})
            if unknown:
                raise SparkSqlError(f"insert into {name} by name: {name} has no column {', '.join(unknown)}")
        else:
            listed = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else kept.columns
        if len(listed) != len(added.columns):
            raise SparkSqlError(f"insert into {name}: {len(listed)} columns, {len(added.columns)} values")
        # By position, as SQL's insert is, or by the select's names for `by name`.
        added = _fitted(added, listed, kept.schema)
        if name in self._kept:
            self._keep(name, kept.unionByName(added), statement)
        else:  # the block's first change of the table: its new rows as a table of their own
            self._save_as_table(f"{name}{ADDED}", added, statement)
            self._added[name.lower()] = f"{name}{ADDED}"
        return True

    def _keep(self, name: str, df: Any, statement: str) -> None:
        """Compute `df` now and keep it as temporary table `name`, in place of what had the name (a kept
        table computed from which `df` may be: it is let go only once `df` holds its own rows)."""
        kept = _guarded(lambda: df.localCheckpoint(eager=True), statement)
        self.drop_table(name)
        kept.createOrReplaceTempView(name)
        self._kept[name] = kept

    def rows(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Every row of a query, as tuples (a struct as a dict, as DuckDB gives it)."""
        return [tuple(_python(v) for v in row) for row in self._collect(self._df(sql, params))]

    def row(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        """The first row of a query, or None when it has none."""
        found = self.rows(sql, params)
        return found[0] if found else None

    value = Sql.value  # the first column of the first row, through `row`

    def frame(self, sql: str, params: Params = None) -> pd.DataFrame:
        """A query's result as a pandas frame."""
        return _guarded(self._df(sql, params).toPandas)

    def arrays(self, sql: str, params: Params = None) -> dict[str, np.ndarray]:
        """A query's columns as numpy arrays."""
        frame = self.frame(sql, params)
        return {column: frame[column].to_numpy() for column in frame.columns}

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        """A query's result as an Arrow table."""
        return _guarded(self._df(sql, params).toArrow)

    def stream(self, sql: str, params: Params = None, batch_rows: int = 50_000) -> Iterator[tuple[Any, ...]]:
        """A query's rows, a partition at a time (`batch_rows` is DuckDB's batching and unused here)."""
        for row in self._df(sql, params).toLocalIterator():
            yield tuple(_python(v) for v in row)

    def columns(self, sql: str) -> list[str]:
        """The column names a select would produce; the statement is analysed, not run."""
        return list(self._df(sql, None).columns)

    def column_types(self, sql: str) -> list[tuple[str, str]]:
        """The (name, type) of each column a select would produce, text as DuckDB's VARCHAR; analysed, not run."""
        from pyspark.sql.types import StringType

        return [
            (f.name, "VARCHAR" if isinstance(f.dataType, StringType) else f.dataType.simpleString().upper())
            for f in self._df(sql, None).schema.fields
        ]

    def export(self, sql: str, path: str, file_format: str, params: Params = None, *, delimiter: str = ",") -> int:
        """Write a query's rows to one file, as `Sql.export` does, in the same format to the byte. Spark
        writes a folder of part files, so the executors write the rows as Parquet parts (numbered in the
        order of the query's partitions, so an ordered query's parts are in its order) into a folder of
        their own beside `path` (`.<name>.parts`, owner-only); DuckDB loads the parts, in that order, into
        a table of a database file there, and its writer makes the one file from the table (written
        straight from the parts, a Parquet file's pages would fall where the parts end). The driver holds
        a batch of rows at a time, never the result."""
        target = Path(path)
        parts = target.with_name("." + target.name + ".parts")
        df = self._df(sql, params)
        shutil.rmtree(parts, ignore_errors=True)  # a crashed export's
        try:
            parts.mkdir(mode=0o700)
            _guarded(lambda: df.write.mode("overwrite").parquet(str(parts / "rows")), sql)
            files = sorted(str(p) for p in (parts / "rows").glob("part-*.parquet"))
            writer = Sql(duckdb.connect(str(parts / "rows.duckdb")))
            try:
                listed = ", ".join(sql_literal(f) for f in files)
                # Nothing written: the columns (a CSV file's header) come from the plan.
                with (
                    nullcontext(f"read_parquet([{listed}])")
                    if files
                    else writer.registered("no_rows", df.limit(0).toArrow())
                ) as rows:
                    writer.create_table_as("exported_rows", f"select * from {rows}")
                    if not writer.value("select count(*) from exported_rows"):
                        # An empty table's columns would be written as required (no nulls seen).
                        return writer.export(f"select * from {rows}", path, file_format, delimiter=delimiter)
                return writer.export("select * from exported_rows", path, file_format, delimiter=delimiter)
            finally:
                writer.close()
        finally:
            shutil.rmtree(parts, ignore_errors=True)

    # Tables ---------------------------------------------------------------------------------------

    def create_table_as(self, name: str, select: str, params: Params = None, *, temporary: bool = False) -> None:
        """Create (or replace) table `name` from a select; a temporary one is computed now and kept. A table
        that exists is replaced as `_write_anew` replaces it: written beside it first, so a select reading
        the table it replaces reads its files before they are gone, and a killed run leaves a whole table."""
        select = self._mapped(select)
        df = self._df(select, params)
        name = self._mapped_name(name)
        if temporary:
            if "." in name:
                raise SparkSqlError(f"a temporary table has no schema: {name}")
            self._keep(name, df, select)
            return
        schema, _, _ = name.rpartition(".")
        if schema:
            self._run(f"create database if not exists {schema}", None)
        if self._first_change(name):
            self._save_as_table(self._stage(name, copy=False), df, select)
            return
        if self.spark.catalog.tableExists(name):  # replaced beside, so a killed run leaves one or the other
            self._write_anew(name, df, select)
            return
        self._save_as_table(name, df, select)

    def map_rows(self, name: str, select: str, rule: Callable[..., tuple], outputs: Sequence[str]) -> int:
        """`Sql.map_rows` where the rows are: the rule runs on Spark's executors (`mapInPandas`), on each
        batch of rows as Arrow gives it, and the result is kept as temporary table `name`; no row comes to
        the driver. The executors' Python imports the rule's module, so the platform is installed there too."""
        from pyspark.sql.types import StringType, StructField, StructType

        select = self._mapped(select)
        df = self._df(select, None)
        columns = list(df.columns)
        text = df.selectExpr(*(f"cast(`{c}` as string) as `{c}`" for c in columns))
        schema = StructType([StructField(c, StringType()) for c in [*columns, *outputs]])
        listed = list(outputs)

        def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in batches:
                yield ruled_rows(batch, rule, listed)

        self._keep(name, text.mapInPandas(apply, schema), select)
        return int(self.value(f"select count(*) from {name}"))

    def map_arrow(
        self, name: str, select: str, function: Callable[[pa.Table], pa.Table], outputs: Sequence[str]
    ) -> int:
        """`Sql.map_arrow` where the rows are: `function` runs on Spark's executors for each batch of rows
        (`mapInArrow`), which Arrow gives in the types `arrow()` would, and the result is kept as
        temporary table `name`; no row comes to the driver."""
        from pyspark.sql.types import StringType, StructField, StructType

        select = self._mapped(select)
        schema = StructType([StructField(c, StringType()) for c in outputs])
        text = pa.schema([(c, pa.string()) for c in outputs])

        def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                yield from function(pa.Table.from_batches([batch])).select(list(text.names)).cast(text).to_batches()

        self._keep(name, self._df(select, None).mapInArrow(apply, schema), select)
        return int(self.value(f"select count(*) from {name}"))

    def numbered_lines(self, name: str, path: str) -> int:
        """Temporary table `name` of a text file's lines, (line_number, line): each line's bytes as the file
        holds them, without its line feed (a carriage return before it stays), numbered from 1 in file order;
        returns how many. Spark's text reader reads the file's splits on the executors, each split's lines
        in order, so a line's number is the lines of the splits before its own (by their start in the file,
        a count per split) plus its place in its split: no line passes through the driver. A file with no
        final line feed ends with its last line; one with a final line feed has no empty line after it.
        `path` is an absolute local path, the same on every executor (a shared mount): it is read as a
        `file:` path even where the cluster's default file system is another (HDFS)."""
        from pyspark.sql import functions as f

        lines = self.spark.read.option("lineSep", "\n").text(f"file://{path}")
        placed = lines.select(
            f.col("value").cast("binary").alias("line"),
            f.col("_metadata.file_block_start").alias("block"),
            f.monotonically_increasing_id().alias("at"),
        )
        # Read once: the counts and the numbers must come from the same reading of the file. The lines are
        # kept as read, and the table is their numbering over them (a projection and a join with one row
        # per block, computed again wherever it is read) rather than a second copy of every line.
        placed = _guarded(lambda: placed.localCheckpoint(eager=True), f"read {path}")
        blocks = sorted(
            self._collect(placed.groupBy("block").agg(f.count("*").alias("lines"), f.min("at").alias("first")))
        )
        starts, offset = [], 0
        for block, count, first in blocks:
            starts.append((block, first, offset))
            offset += count
        starts_frame = self.spark.createDataFrame(starts, "block long, first long, offset long")
        numbered = placed.join(f.broadcast(starts_frame), "block").select(
            (f.col("offset") + f.col("at") - f.col("first") + 1).cast("bigint").alias("line_number"), "line"
        )
        self.drop_table(name)
        numbered.createOrReplaceTempView(name)
        self._kept[name] = numbered
        self._held[name] = placed  # let go with the table
        return offset

    def on_executor(self, function: Callable[[], Any]) -> Any:
        """`function()` run by one Spark task, on an executor, and its small result brought back: work on a
        file the executors read (a compressed file's last byte) that must not pass through the driver."""
        task = self.spark.sparkContext.parallelize([0], 1).map(lambda _: function())
        return _guarded(task.collect, "a task on an executor")[0]

    def map_ranges(
        self,
        name: str,
        ranges: Sequence[tuple[int, int]],
        function: Callable[[pa.Table], pa.Table],
        outputs: Sequence[str],
    ) -> int:
        """Temporary table `name` of the rows (columns `outputs`, all text) that `function` gives for each of
        `ranges`, a table of one (lo, hi) row: one Spark task per range, so work split into ranges by the
        driver (a file's row groups) is done on the executors, each range's rows at a time; no row comes to
        the driver. Returns the rows' count."""
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        bounds = StructType([StructField("lo", LongType()), StructField("hi", LongType())])
        schema = StructType([StructField(c, StringType()) for c in outputs])
        text = pa.schema([(c, pa.string()) for c in outputs])
        listed = [(int(lo), int(hi)) for lo, hi in ranges]
        tasks = self.spark.sparkContext.parallelize(listed, max(1, len(listed)))

        def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                for row in range(batch.num_rows):
                    one = pa.Table.from_batches([batch]).slice(row, 1)
                    yield from function(one).select(list(text.names)).cast(text).to_batches()

        self._keep(name, self.spark.createDataFrame(tasks, bounds).mapInArrow(apply, schema), f"ranges {listed[:3]}")
        return int(self.value(f"select count(*) from {name}"))

    def map_groups(
        self,
        name: str,
        select: str,
        keys: Sequence[str],
        rule: Callable[[list[tuple]], list[tuple]],
        outputs: Sequence[str],
    ) -> int:
        """`Sql.map_groups` where the rows are: the rule runs on Spark's executors for each group
        (`groupBy(...).applyInPandas`), with the group's rows sorted as on DuckDB, and the result is kept
        as temporary table `name`; no row comes to the driver."""
        from pyspark.sql.types import StringType, StructField, StructType

        select = self._mapped(select)
        df = self._df(select, None)
        text = df.selectExpr(*(f"cast(`{c}` as string) as `{c}`" for c in df.columns))
        schema = StructType([StructField(c, StringType()) for c in outputs])
        listed = list(outputs)

        def apply(group: pd.DataFrame) -> pd.DataFrame:
            rows = list(group.astype(object).where(group.notna(), None).itertuples(index=False, name=None))
            return pd.DataFrame(grouped_rows(rows, rule, listed), columns=listed, dtype=object)

        self._keep(name, text.groupBy(*keys).applyInPandas(apply, schema), select)
        return int(self.value(f"select count(*) from {name}"))

    def drop_table(self, name: str) -> None:
        """Drop a table (or a kept temporary table) if it exists."""
        name = self._mapped_name(name)
        if name in self._kept:
            self.spark.catalog.dropTempView(name)
            self._kept.pop(name).unpersist()
            if name in self._held:
                self._held.pop(name).unpersist()
            return
        if self._first_change(name):
            self._stage(name, copy=False)  # gone once the block ends, and to the block's statements now
            return
        self._run(f"drop table if exists {name}", None)

    def table_exists(self, qualified: str) -> bool:
        """Whether table or view `schema.name` exists."""
        schema, name = self._mapped_name(qualified).split(".")
        return bool(self.spark.catalog.tableExists(f"{schema}.{name}"))

    def table_names(self) -> list[tuple[str, str]]:
        """Every table of the catalogue (not views, nor temporary ones) as (schema, name), sorted, as
        `Sql.table_names`; a copy's databases (`<copy>__<schema>`) are not the warehouse's."""
        found = set()
        for database in self.spark.catalog.listDatabases():
            if "__" in database.name:
                continue
            found |= {
                (database.name, t.name)
                for t in self.spark.catalog.listTables(database.name)
                if not t.isTemporary and t.tableType != "VIEW" and not t.name.endswith((BESIDE, STAGED, ADDED))
            }
        # In a block, its tables as its statements see them: a staged one as the table, a dropped one gone.
        for name, staged in (self._block or {}).items():
            schema, _, table = name.partition(".")
            found.discard((schema, table))
            if "__" not in schema and self.spark.catalog.tableExists(staged):
                found.add((schema, table))
        return sorted(found)

    def is_view(self, qualified: str) -> bool:
        """Whether `schema.name` is a view (not a table, nor missing)."""
        schema, name = self._mapped_name(qualified).split(".")
        if not self.spark.catalog.tableExists(f"{schema}.{name}"):
            return False
        return self.spark.catalog.getTable(f"{schema}.{name}").tableType == "VIEW"

    @contextmanager
    def registered(self, name: str, frame: pd.DataFrame | Any) -> Iterator[str]:
        """`frame` (pandas or Arrow) readable from SQL as `name` for the block, then forgotten."""
        self._conn.register(name, frame)
        try:
            yield name
        finally:
            self._conn.unregister(name)

    # The step's temporary tables, dropped when the block ends (see `Sql.scratch`): the same rule, and the
    # same `Scratch`, which registers frames through `_conn` and drops tables through `drop_table`.
    scratch = Sql.scratch

    @contextmanager
    def transaction(self) -> Iterator[SparkSql]:
        """The block's statements as one change: each catalogued table the block changes is changed as its
        staged copy (`<table>__staged`, which the block's statements read in its place), or, while the block
        only adds rows to it, has those rows written apart (`<table>__added`); when the block ends the
        staged tables are swapped in and the added rows moved in (`commit_block`); if it raises, they are
        dropped and no table has changed. A run killed inside the block leaves only staged and added tables,
        which `finish_interrupted_writes` drops; one killed while the changes are made leaves their journal,
        by which it makes the rest. Refused unless the runner was made with `staged_transactions`, as the
        Spark warehouse makes it (whose session start runs that repair); temporary tables are the step's
        own and are not staged."""
        if not self.staged_transactions:
            raise TransactionsUnavailable(
                "this Spark runner makes no transactions: they are the Spark warehouse's runner's "
                "(staged_transactions=True), whose session start completes or undoes a block a killed run left"
            )
        if self._block is not None:
            raise SparkSqlError("a transaction is already open on this runner")
        self._block, self._added = {}, {}
        try:
            yield self
        except BaseException:
            staged, added, self._block, self._added = self._block, self._added, None, {}
            for table in [*staged.values(), *added.values()]:
                with suppress(Exception):  # the error that matters is the block's
                    self.spark.sql(f"drop table if exists {table}")
            raise
        staged, added, self._block, self._added = self._block, self._added, None, {}
        commit_block(self.spark, staged, added)

    def _first_change(self, name: str) -> bool:
        """Whether catalogued table `name`, named as `_mapped` names it, is one a block is changing for the
        first time: once changed, the block's statements name its staged or added table instead."""
        return self._block is not None and "." in name and not _in_block(name)

    def _stage(self, name: str, *, copy: bool) -> str:
        """The staged table standing for catalogued table `name` in the block from now on (see
        `transaction`): a copy of its rows when `copy` and it exists (for a statement that changes some
        of them), else none yet (for one that writes it whole, or drops it)."""
        assert self._block is not None
        key = name.lower()
        if key not in self._block:
            staged = f"{name}{STAGED}"
            self._run(f"drop table if exists {staged}", None)  # a failed block's, in this process
            added = self._added.pop(key, None)  # rows the block added before: in the copy, with the table's
            if copy and self.spark.catalog.tableExists(name):
                rows = self.spark.table(name)
                rows = rows if added is None else rows.unionByName(self.spark.table(added))
                self._save_as_table(staged, rows, f"copy {name} for a block")
            if added is not None:
                self._run(f"drop table {added}", None)
            self._block[key] = staged
        return self._block[key]

    def _stage_written(self, tree: Any) -> None:
        """Stage the catalogued table statement `tree` (DuckDB, its tables named where the warehouse or its
        copy keeps them, not yet the block's) writes, before it runs on the name `_mapped` then gives it.
        Statements that write a table whole (`create or replace`, `drop`) and the ones the runner carries
        out by writing it anew (`update`, `delete`, `insert or replace`: `_write_anew` stages them) need no
        copy, nor does an `insert` (its rows are kept apart, `_insert_into_kept`); those that change a table
        in place (an added column, and every change to a Delta or Iceberg table) do, and so does any change
        but an insert to a table the block added rows to, whose copy takes those rows in."""
        from sqlglot import exp

        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if not isinstance(target, exp.Table) or not target.db:
            return
        name = exp.table_name(target)
        if _in_block(name) or name.lower() in (self._block or {}):
            return
        rewritten = self.table_format not in ROW_LEVEL_FORMATS
        upsert = isinstance(tree, exp.Insert) and (
            tree.args.get("alternative") == "replace" or tree.args.get("conflict") is not None
        )
        if name.lower() in self._added:  # rows added before; another insert adds to them, else copied
            if not (isinstance(tree, exp.Insert) and not upsert):
                whole = isinstance(tree, exp.Drop) or (isinstance(tree, exp.Create) and tree.args.get("replace"))
                self._stage(name, copy=not whole)
        elif isinstance(tree, exp.Drop) and tree.kind == "TABLE":
            self._stage(name, copy=False)
        elif isinstance(tree, exp.Create) and tree.kind == "TABLE" and tree.find(exp.TemporaryProperty) is None:
            self._stage(name, copy=not tree.args.get("replace"))
        elif isinstance(tree, exp.Update | exp.Delete) and not rewritten:
            self._stage(name, copy=True)
        elif isinstance(tree, exp.Insert) and not rewritten:
            self._stage(name, copy=True)
        elif isinstance(tree, exp.Alter):
            self._stage(name, copy=True)


def commit_block(spark: Any, staged: Mapping[str, str], added: Mapping[str, str]) -> None:
    """Make a block's changes (`SparkSql.transaction`): `staged` maps each table it changed to its staged
    table (absent when the block dropped the table), `added` each table it only added rows to, to the
    table of those rows. The list of changes is written first, as a journal in the warehouse folder, and
    removed once every change is made: a run killed in between leaves it for `finish_interrupted_writes`,
    which makes the changes not yet made. Until the journal is written nothing has changed; from then on
    the block has happened."""
    changes = [
        *({"table": t, "staged": s, "present": bool(spark.catalog.tableExists(s))} for t, s in sorted(staged.items())),
        *({"table": t, "added": a} for t, a in sorted(added.items())),
    ]
    if not changes:
        return
    journal = f"{_journal_folder(spark)}/{uuid4().hex}.json"
    written, fs = _hadoop_path(spark, journal + ".part")
    stream = fs.create(written, True)
    stream.write(bytearray(json.dumps(changes).encode()))
    stream.close()
    if not fs.rename(written, spark._jvm.org.apache.hadoop.fs.Path(journal)):  # whole, or not there
        raise SparkSqlError(f"could not write the block's journal {journal}")
    for change in changes:
        _make_change(spark, change)
    _remove_folder(spark, journal)


def _make_change(spark: Any, change: Mapping[str, Any]) -> None:
    """One change of a committed block, made again as often as a killed run leaves it unfinished: the table
    becomes its staged table (`present`: the staged table existed when the block ended; already done once
    it no longer does), or is dropped (not `present`), or takes the files of its added rows (those not
    moved yet), whose table is then dropped."""
    table = change["table"]
    if not spark.catalog.databaseExists(table.rpartition(".")[0]):  # a copy of the warehouse, since dropped
        return
    if "added" in change:
        added = change["added"]
        if spark.catalog.tableExists(added):
            path, fs = _hadoop_path(spark, _table_folder(spark, added))
            into = _table_folder(spark, table)
            for status in fs.listStatus(path) if fs.exists(path) else []:
                name = status.getPath().getName()
                if status.isFile() and not name.startswith((".", "_")):  # a data file, not a marker
                    _rename_folder(spark, str(status.getPath().toString()), f"{into}/{name}")
            spark.sql(f"drop table {added}")
            spark.catalog.refreshTable(table)
    elif not change["present"]:
        spark.sql(f"drop table if exists {table}")
        _remove_folder(spark, _table_folder(spark, table))
    elif spark.catalog.tableExists(change["staged"]):
        _swap_in(spark, change["staged"], table, spark.sql)


def _swap_in(spark: Any, source: str, target: str, run: Callable[[str], Any]) -> None:
    """Catalogued table `source` renamed `target`, in place of `target` if it exists; `run` runs the
    statements. A rename cut short before (the folder moved to the target's place, the catalogue still
    naming the source) has its folder moved back first; any other folder in the target's place is
    removed, as Spark would refuse to rename over it."""
    if spark.catalog.tableExists(target):
        run(f"drop table {target}")
    moved, place = _table_folder(spark, source), _table_folder(spark, target)
    if not _folder_exists(spark, moved) and _folder_exists(spark, place):
        _rename_folder(spark, place, moved)
    else:
        _remove_folder(spark, place)
    run(f"alter table {source} rename to {target}")


def _journal_folder(spark: Any) -> str:
    return f"{spark.conf.get('spark.sql.warehouse.dir').rstrip('/')}/{JOURNALS}"


def _in_block(name: str) -> bool:
    """Whether `name` is a table a block writes in place of another (its staged copy, its added rows)."""
    return name.lower().endswith((STAGED, ADDED))


def finish_interrupted_writes(spark: Any) -> list[str]:
    """Finish or undo what a killed process left half written in the catalogue's tables, before anything
    else runs on them (when the warehouse's session starts: one process holds the warehouse at a time, the
    run lock and the metastore see to it). Returns what was done, one line each.

    - A table `t` replaced beside itself (`SparkSql._write_anew`) and killed before the swap ended: with
      `t` still catalogued, the kill came before its drop, so `t` is the table as the statement found it and
      `t__new` is dropped; with `t` gone, `t__new` is complete (catalogued only once written) and is renamed
      `t`. A rename the kill cut between moving the folder and cataloguing the new name is put back first.
    - A block of statements (`SparkSql.transaction`) killed while its changes were made: its journal lists
      them (staged tables swapped in, added rows' files moved into their tables), and those not yet made
      are made. Staged and added tables no journal lists are a block killed before it ended, and are
      dropped: the block did not happen.
    - A table folder no catalogued table owns (a write killed before its table was catalogued, a drop killed
      after it left the catalogue): removed, as Spark refuses to create a table over it."""
    done = []
    databases = [d for d in spark.catalog.listDatabases() if d.name != "default"]  # default: the metastore's
    for database in databases:
        tables = _catalogued(spark, database.name)
        for beside in sorted(t for t in tables if t.endswith(BESIDE)):
            name, qualified = beside[: -len(BESIDE)], f"{database.name}.{beside}"
            if name in tables:
                spark.sql(f"drop table {qualified}")
                done.append(f"{database.name}.{name}: the unfinished replacement dropped, the table kept as it was")
                continue
            _swap_in(spark, qualified, f"{database.name}.{name}", spark.sql)
            tables = (tables - {beside}) | {name}
            done.append(f"{database.name}.{name}: its replacement, complete, put in place")
    journals, fs = _hadoop_path(spark, _journal_folder(spark))
    listed = sorted(str(s.getPath().toString()) for s in fs.listStatus(journals)) if fs.exists(journals) else []
    for journal in listed:
        if journal.endswith(".json"):
            stream = fs.open(spark._jvm.org.apache.hadoop.fs.Path(journal))
            try:
                changes = json.loads(str(spark._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")))
            finally:
                stream.close()
            for change in changes:
                _make_change(spark, change)
            done.append(f"a block ended by a killed run completed: {', '.join(c['table'] for c in changes)}")
        _remove_folder(spark, journal)  # a finished journal, or one cut short while written (nothing swapped)
    for database in databases:
        tables = _catalogued(spark, database.name)
        for unfinished in sorted(t for t in tables if _in_block(t)):
            spark.sql(f"drop table {database.name}.{unfinished}")
            table = unfinished.removesuffix(STAGED).removesuffix(ADDED)
            done.append(f"{database.name}.{table}: a block's unfinished change dropped")
        tables = _catalogued(spark, database.name)
        for folder in _subfolders(spark, database.locationUri):
            if folder.rsplit("/", 1)[-1].lower() not in tables:
                _remove_folder(spark, folder)
                done.append(f"{database.name}: the folder of an unfinished write removed ({folder})")
    return done


def _catalogued(spark: Any, database: str) -> set[str]:
    return {t.name.lower() for t in spark.catalog.listTables(database) if not t.isTemporary}


def _table_folder(spark: Any, name: str) -> str:
    """Where the catalogue keeps managed table `schema.table`'s files (Spark's default table path)."""
    schema, _, table = name.rpartition(".")
    location = spark.catalog.getDatabase(schema or "default").locationUri
    return f"{location.rstrip('/')}/{table.lower()}"


def _hadoop_path(spark: Any, folder: str) -> tuple[Any, Any]:
    """`folder` as a Hadoop path and its file system: the warehouse may be on any Spark reads (HDFS, S3)."""
    path = spark._jvm.org.apache.hadoop.fs.Path(folder)
    return path, path.getFileSystem(spark._jsc.hadoopConfiguration())


def _folder_exists(spark: Any, folder: str) -> bool:
    path, fs = _hadoop_path(spark, folder)
    return bool(fs.exists(path))


def _remove_folder(spark: Any, folder: str) -> None:
    path, fs = _hadoop_path(spark, folder)
    if fs.exists(path):
        fs.delete(path, True)


def _rename_folder(spark: Any, source: str, target: str) -> None:
    path, fs = _hadoop_path(spark, source)
    if not fs.rename(path, spark._jvm.org.apache.hadoop.fs.Path(target)):
        raise SparkSqlError(f"could not move {source} to {target}")


def _subfolders(spark: Any, folder: str) -> list[str]:
    """The folders in `folder` (none when it does not exist), hidden ones (`.x`, `_x`) left out."""
    path, fs = _hadoop_path(spark, folder)
    if not fs.exists(path):
        return []
    return sorted(
        str(status.getPath().toString())
        for status in fs.listStatus(path)
        if status.isDirectory() and not status.getPath().getName().startswith((".", "_"))
    )


def copy_database_name(copy: str, schema: str) -> str:
    """The database holding schema `schema` of the warehouse copy `copy`."""
    return f"{copy}__{schema}"


def _fitted(added: Any, listed: list[str], schema: Any) -> Any:
    """The rows an insert adds (`added`, whose columns are `listed` in order) as a table of `schema`: each
    column by position under its listed name (the select's own names may repeat: `l.node_id, r.node_id`),
    cast to the table's type, and a column not listed NULL."""
    from pyspark.sql import functions as F

    position = {column.lower(): f"_{i}" for i, column in enumerate(listed)}
    return added.toDF(*position.values()).select(
        *[
            (F.col(position[f.name.lower()]) if f.name.lower() in position else F.lit(None))
            .cast(f.dataType)
            .alias(f.name)
            for f in schema.fields
        ]
    )


def _duckdb_statements(sql: str) -> list[Any]:
    """`sql` parsed in DuckDB's dialect, one tree per statement; empty when sqlglot cannot read it (the
    translation then names what it cannot read)."""
    import sqlglot

    try:
        return [tree for tree in sqlglot.parse(sql, read="duckdb") if tree is not None]
    except sqlglot.errors.ParseError:
        return []


def _guarded(action: Callable[[], Any], statement: str = "") -> Any:
    """Run a Spark action (collect, write, checkpoint), its failure raised as the runner's error: a task's
    failure comes as py4j's error, not a PySparkException."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        return action()
    except (PySparkException, Py4JJavaError) as exc:
        raise _error(exc, statement) from exc


def _error(exc: Exception, statement: str) -> SparkSqlError:
    """Spark's error as the runner's: its first line, or for a task that failed (a UDF that refused its
    input) the innermost cause, which says what went wrong."""
    condition = getattr(exc, "getCondition", lambda: None)() or ""
    text = str(exc).strip()
    causes = [line.split("Caused by: ", 1)[1] for line in text.split("\n") if "Caused by: " in line]
    message = causes[-1] if causes else text.split("\n")[0]
    kind = SparkDataError if condition.startswith(_DATA_ERRORS) else SparkSqlError
    return kind(f"{message}\n{statement}" if statement else message)


def _python(value: Any) -> Any:
    """A collected value as DuckDB's Python client gives it: a struct as a dict, lists of the same."""
    from pyspark.sql import Row

    if isinstance(value, Row):
        return {k: _python(v) for k, v in value.asDict().items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    return value
