"""Every distinct statement the demo pipeline runs, translated to Spark SQL: which translate and which do not.

    python -m benchmarks.spark_statements --people 2000 [--spark] [--show 3]

The demo configuration is generated at `--people`, `full_refresh` materialized twice (the second run
finds no new files, so the incremental paths run too) with the `Sql` runner's methods wrapped to record
the text of each statement they receive (for `create_table_as`, the select, which is what the Spark
runner translates). Each distinct statement is then translated with `to_spark` and the failures grouped
by the construct named in the error.

`--spark` also hands every translation to Spark's own parser (no tables are needed to parse) and asks
Spark for each function it calls: a statement sqlglot emits but Spark cannot read would be a translation
in name only. `--run` runs each query that reads only the warehouse's own tables (not a step's temporary
ones) on DuckDB over the warehouse the demo left and, translated, on Spark over a copy of those tables,
and compares the rows.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resources.sql import Sql

# The runner's methods that receive SQL text as their first argument (after the table name for
# `create_table_as`). `value` and `table_exists` go through `row`/`value` and are recorded once, as called.
_RECORDED = ("execute", "rows", "row", "value", "frame", "arrays", "arrow", "stream", "columns", "create_table_as")


_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# The methods that read a query's rows: their statements are the ones `--run` runs on both engines.
_QUERIES = ("rows", "row", "value", "frame", "arrays", "arrow", "stream", "columns")


@contextmanager
def recorded_statements(parameters: dict[str, Any] | None = None) -> Iterator[list[str]]:
    """The text of every statement given to any `Sql` runner in the block, in order (the outermost call
    only: `value` calling `row` is one statement); a query's first parameters go in `parameters`."""
    statements: list[str] = []
    depth = [0]
    originals = {name: getattr(Sql, name) for name in (*_RECORDED, "table_exists")}

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def recording(self: Sql, *args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0 and name != "table_exists":
                statements.append(args[1] if name == "create_table_as" else args[0])
                if parameters is not None and name in _QUERIES and args[0] not in parameters:
                    parameters[args[0]] = args[1] if len(args) > 1 else kwargs.get("params")
            depth[0] += 1
            try:
                result = method(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            return result

        return recording

    for name, method in originals.items():
        setattr(Sql, name, wrap(name, method))
    try:
        yield statements
    finally:
        for name, method in originals.items():
            setattr(Sql, name, method)


def demo_statements(people: int, folder: Path, runs: int = 2, parameters: dict[str, Any] | None = None) -> list[str]:
    """The distinct statements (first-seen order) of `runs` full refreshes of the demo on `people` people;
    the warehouse is left in `folder`."""
    import dagster as dg

    from cdp_assets.definitions import FULL_REFRESH, build_definitions
    from demo.configs import relocated_config
    from demo.destination_server import DestinationServer
    from demo.generate import generate
    from resources.config import load_config

    generate(people=people, seed=42, out_dir=folder / "landing", truth_path=folder / "truth.csv")
    with DestinationServer(host="127.0.0.1", port=0) as server, dg.instance_for_test() as instance:
        job = build_definitions(load_config(relocated_config(folder, server.url))).resolve_job_def(FULL_REFRESH)
        with recorded_statements(parameters) as statements:
            for _ in range(runs):
                if not job.execute_in_process(instance=instance, run_config=_QUIET).success:
                    raise RuntimeError("the demo refresh failed")
    return list(dict.fromkeys(statements))


def _construct(error: Exception) -> str:
    """The construct an error names (UnsupportedConstruct's own), or its first line."""
    construct = getattr(error, "construct", None)
    return construct or str(error).split("\n")[0][:120]


def translate_all(statements: list[str]) -> dict[str, list[str]]:
    """Construct -> the statements that fail to translate for it."""
    from resources.spark.dialect import to_spark

    failing: dict[str, list[str]] = {}
    for statement in statements:
        try:
            # Columns of an unlisted `union by name` side are Spark's to tell; any answer shows it translates.
            to_spark(statement, columns_of=lambda select: ["column"])
        except Exception as exc:  # noqa: BLE001 - every failure is reported, grouped by what it names
            failing.setdefault(_construct(exc), []).append(statement)
    return failing


def spark_parse_failures(statements: list[str]) -> dict[str, list[str]]:
    """Reason -> translations Spark refuses before any table is read: its parser's error, or a function it
    does not know (only the statements that translate)."""
    import sqlglot
    from sqlglot import exp

    from resources.spark.dialect import to_spark
    from resources.spark.runner import spark_session

    spark = spark_session()
    logging.getLogger("pyspark").setLevel(logging.CRITICAL)  # each refusal is reported below, once
    parser = spark._jsparkSession.sessionState().sqlParser()
    known: dict[str, bool] = {}
    failures: dict[str, list[str]] = {}
    try:
        for statement in statements:
            try:
                translated = to_spark(statement, columns_of=lambda select: ["column"])
            except Exception:  # noqa: BLE001, S112 - reported by translate_all
                continue
            for text in translated:
                try:
                    # A named parameter (`:name`) is bound by spark.sql's args; alone, the parser refuses it.
                    parser.parsePlan(re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", "NULL", text))
                except Exception as exc:  # noqa: BLE001 - py4j's error, reported by its first line
                    message = exc.java_exception.getMessage() if hasattr(exc, "java_exception") else str(exc)
                    first = re.sub(r"\s+", " ", message.strip().split("\n")[0])[:140]
                    failures.setdefault(first, []).append(text)
                    continue
                names = {str(f.this).lower() for f in sqlglot.parse_one(text, read="spark").find_all(exp.Anonymous)}
                for name in sorted(names):
                    if name not in known:
                        known[name] = spark.catalog.functionExists(name)
                    if not known[name]:
                        failures.setdefault(f"Spark has no function {name}()", []).append(text)
    finally:
        spark.stop()
    return failures


def run_on_both(statements: list[str], parameters: dict[str, Any], warehouse: Path) -> dict[str, list[str]]:
    """Outcome -> queries: each query that reads only the warehouse's tables (not a step's temporary ones)
    run on DuckDB over the warehouse left by the demo and, translated, on Spark over a copy of its tables;
    the rows compared as multisets (floats to 9 significant digits, where a sum's order may differ)."""
    import duckdb
    import sqlglot
    from sqlglot import exp

    from resources.spark.runner import SparkSql, spark_session

    spark = spark_session()
    logging.getLogger("pyspark").setLevel(logging.CRITICAL)
    runner = SparkSql(spark)
    outcomes: dict[str, list[str]] = {}
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        copied = set()
        for schema, name in conn.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = current_database() and table_schema <> 'main' and table_type = 'BASE TABLE'"
        ).fetchall():
            try:
                frame = spark.createDataFrame(conn.sql(f'select * from "{schema}"."{name}"').to_arrow_table())
                spark.sql(f"create database if not exists {schema}")
                frame.write.mode("overwrite").saveAsTable(f"{schema}.{name}")
                copied.add(f"{schema}.{name}".lower())
            except Exception as exc:  # noqa: BLE001 - a table Spark cannot take is reported, not fatal
                outcomes.setdefault(f"table not copied: {str(exc).strip().splitlines()[0][:100]}", []).append(name)
        for statement in statements:
            if statement not in parameters or _kind(statement) not in ("select", "with"):
                continue
            try:
                tree = sqlglot.parse_one(statement, read="duckdb")
            except sqlglot.errors.ParseError:
                continue
            ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
            tables = {f"{t.db}.{t.name}".lower() if t.db else t.name.lower() for t in tree.find_all(exp.Table)}
            if not tables or not tables - ctes <= copied:
                continue
            params = parameters[statement]
            try:
                expected = conn.execute(statement, params).fetchall()
            except duckdb.Error:
                continue  # reads what the run changed afterwards
            try:
                actual = runner.rows(statement, params)
            except Exception as exc:  # noqa: BLE001 - every failure is reported by its first line
                first = re.sub(r"\s+", " ", str(exc).strip().split("\n")[0])[:120]
                outcomes.setdefault(f"fails on Spark: {first}", []).append(statement)
                continue
            same = sorted(map(repr, map(_normal, expected))) == sorted(map(repr, map(_normal, actual)))
            outcomes.setdefault("same rows" if same else "different rows", []).append(statement)
    finally:
        conn.close()
        spark.stop()
    return outcomes


def _normal(value: Any) -> Any:
    """A value as compared across the engines: floats and decimals to 9 significant digits, a time zone's
    instant in UTC without the zone, lists and structs of the same."""
    from datetime import UTC, datetime
    from decimal import Decimal

    if isinstance(value, tuple | list):
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _normal(v)) for k, v in value.items()))
    if isinstance(value, float | Decimal):
        return float(f"{float(value):.9g}")
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _short(statement: str, width: int = 160) -> str:
    text = re.sub(r"\s+", " ", statement).strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--spark", action="store_true", help="also parse every translation with Spark's parser")
    parser.add_argument("--show", type=int, default=2, help="statements shown per failing construct")
    parser.add_argument("--workdir", type=Path, default=None, help="kept after the run if given")
    parser.add_argument("--out", type=Path, default=None, help="write every distinct statement here, one per line")
    parser.add_argument(
        "--run", action="store_true", help="also run the queries over the warehouse's own tables on both engines"
    )
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-statements-"))
    parameters: dict[str, Any] = {}
    try:
        statements = demo_statements(args.people, folder, parameters=parameters)
        ran = run_on_both(statements, parameters, folder / "warehouse.duckdb") if args.run else {}
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.out:
        args.out.write_text("".join(json.dumps(s) + "\n" for s in statements))
    failing = translate_all(statements)
    failed = sum(len(v) for v in failing.values())
    print(f"{len(statements)} distinct statements on {args.people:,} people (two full refreshes)")
    print(f"  translate: {len(statements) - failed} of {len(statements)}")
    print(f"  fail to translate: {failed}")
    for construct, found in sorted(failing.items(), key=lambda kv: -len(kv[1])):
        print(f"\n  {len(found):4d}  {construct}")
        for statement in found[: args.show]:
            print(f"          {_short(statement)}")
    if args.spark:
        failures = spark_parse_failures(statements)
        count = sum(len(v) for v in failures.values())
        print(f"\n  translations Spark refuses to parse, or calling a function it lacks: {count}")
        for first, found in sorted(failures.items(), key=lambda kv: -len(kv[1])):
            print(f"\n  {len(found):4d}  {first}")
            for statement in found[: args.show]:
                print(f"          {_short(statement)}")
    if args.run:
        count = sum(len(v) for k, v in ran.items() if not k.startswith("table"))
        print(f"\n  queries over the warehouse's tables run on both engines: {count}")
        for outcome, found in sorted(ran.items(), key=lambda kv: -len(kv[1])):
            print(f"\n  {len(found):4d}  {outcome}")
            if outcome != "same rows":
                for statement in found[: args.show]:
                    print(f"          {_short(statement)}")
    print(f"\nkinds: {dict(Counter(_kind(s) for s in statements))}")


def _kind(statement: str) -> str:
    words = statement.strip().split()
    return words[0].lower() if words else ""


if __name__ == "__main__":
    main()
