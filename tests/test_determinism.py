"""The same landing files give the same public tables, whatever the run: numbers, customer ids and
segment history alike.

Only the columns in RUN_STAMP_COLUMNS say when a run happened; every other value of every table and view
in schema `cdp` must be identical, compared as text (so 883.8000000000001 against 883.8 fails), between
fresh warehouses with other DuckDB thread counts and landing files copied in another order with other
modification times, and after a re-run on the same warehouse.
"""

import itertools
import os
import random
import shutil
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.clean.assets import clean_activity, clean_person_records
from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.identity.clustering import FirstNames, birth_date_people
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import load_config
from resources.schema import RUN_STAMP_COLUMNS
from resources.sql import Sql
from resources.warehouse import bootstrap
from tests.fixtures import write_config

PEOPLE = 2000


def public_tables(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table and view of schema `cdp`, all columns but the run stamps as text, sorted over all."""
    tables: dict[str, list[tuple]] = {}
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        names = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'cdp' order by 1"
        ).fetchall()
        for (name,) in names:
            table = f"cdp.{name}"
            columns = [
                c
                for (c,) in conn.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = 'cdp' and table_name = ? order by ordinal_position",
                    [name],
                ).fetchall()
            ]
            stamps = RUN_STAMP_COLUMNS.get(table, ())
            assert set(stamps) <= set(columns), f"{table} lacks run-stamp column(s) {stamps}"
            kept = ", ".join(f'"{c}"::varchar as "{c}"' for c in columns if c not in stamps)
            tables[table] = [tuple(columns), *conn.execute(f"select {kept} from {table} order by all").fetchall()]
    return tables


def copy_landing(source: Path, target: Path, seed: int | None) -> None:
    """The landing files under `target`, in name order, or shuffled with scrambled modification times."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(files)
    for i, path in enumerate(files):
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        stamp = 1_700_000_000 + (rng.randrange(10**6) if seed is not None else i)
        os.utime(copy, (stamp, stamp))


def first_difference(left: dict[str, list[tuple]], right: dict[str, list[tuple]]) -> str | None:
    """The first table and row that differ, for a readable failure; None if none does."""
    if left.keys() != right.keys():
        return f"tables differ: {sorted(left.keys() ^ right.keys())}"
    for table in left:
        a, b = left[table], right[table]
        if a == b:
            continue
        for row_a, row_b in zip(a, b, strict=False):
            if row_a != row_b:
                return f"{table} ({len(a) - 1} vs {len(b) - 1} rows): {row_a} != {row_b}"
        return f"{table}: {len(a) - 1} vs {len(b) - 1} rows"
    return None


@pytest.mark.slow
@pytest.mark.e2e
def test_identical_landing_files_give_identical_public_tables(
    tmp_path: Path, instance: dg.DagsterInstance, destination_server: DestinationServer
):
    generate(people=PEOPLE, seed=11, out_dir=tmp_path / "landing", truth_path=tmp_path / "truth.csv")
    variants = [("one", 2, None), ("two", 1, 3), ("three", 3, 4)]  # (folder, DuckDB threads, shuffle seed)
    snapshots = {}
    for name, threads, seed in variants:
        folder = tmp_path / name
        copy_landing(tmp_path / "landing", folder / "landing", seed)
        path = write_config(folder, destination_server.url)
        raw = yaml.safe_load(path.read_text())
        raw["warehouse"]["threads"] = threads
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        config = load_config(path)
        job = build_definitions(config).resolve_job_def(FULL_REFRESH)
        assert job.execute_in_process(instance=instance).success
        snapshots[name] = public_tables(config.warehouse_path)
        if name == "one":
            # The same warehouse again, nothing new: no value moves and no destination is sent anything.
            rerun = job.execute_in_process(instance=instance)
            assert rerun.success
            assert first_difference(snapshots["one"], public_tables(config.warehouse_path)) is None
            with duckdb.connect(str(config.warehouse_path), read_only=True) as conn:
                sent = conn.execute("select count(*) from syncs.changelog where run_id = ?", [rerun.run_id])
                assert sent.fetchone()[0] == 0
    assert snapshots["one"]["cdp.segment_membership_history"][1:], "the demo data should fill some segment"
    for name in ("two", "three"):
        assert first_difference(snapshots["one"], snapshots[name]) is None, name


@pytest.mark.stage
def test_amounts_are_exact_decimals_rounded_to_the_cent(tmp_path: Path):
    raw = {
        "sources": [
            {"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person", "record_id": "id"},
            {
                "name": "orders",
                "format": "jsonl",
                "glob": "orders/*.jsonl",
                "role": "transactions",
                "record_id": "customer",
                "event_id": "id",
                # Declared: left unset, 12.345 would be refused as a possible thousands grouping.
                "decimal_separator": ".",
                "fields": {"occurred_at": "at", "amount": "total"},
            },
        ]
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    conn = duckdb.connect(":memory:")
    bootstrap(conn)
    totals = ["0.10", "0.20", "12.345", "12.344", "$7", "-0.004", "abc", "1e2", "+8", "1_000", "1_0.5"]
    conn.execute("create table raw.orders (_file varchar, _row_number bigint, _loaded_at timestamp, record json)")
    conn.executemany(
        "insert into raw.orders values ('orders/a.jsonl', ?, now()::timestamp, ?)",
        [
            [i + 1, f'{{"id": "o{i}", "customer": "c", "at": "2025-01-01T00:00:00Z", "total": "{t}"}}']
            for i, t in enumerate(totals)
        ],
    )
    clean_activity(Sql(conn), config, "transactions")
    amounts = dict(conn.execute("select event_id, amount from clean.transactions").fetchall())
    # More decimals than the scale: rounded half away from zero; the column is DECIMAL, so sums are exact.
    assert amounts == {
        "o0": Decimal("0.10"),
        "o1": Decimal("0.20"),
        "o2": Decimal("12.35"),
        "o3": Decimal("12.34"),
        "o4": Decimal("7.00"),
        "o8": Decimal("8.00"),
    }
    assert conn.execute("select sum(amount)::varchar from clean.transactions where amount < 1").fetchone()[0] == "0.30"
    rejected = dict(conn.execute("select value, reason from cdp.quarantine where source = 'orders'").fetchall())
    # A negative amount that rounds to 0.00 is still negative. DuckDB would read 1_000 as 1000 and 1_0.5 as
    # 10.5 (digits grouped as in its SQL), which no system writes money as.
    assert rejected == {
        "-0.004": "negative amount",
        "abc": "amount is not a number",
        "1_000": "amount is not a number",
        "1_0.5": "amount is not a number",
        "1e2": "amount is in exponent notation (total is 1e2): a spreadsheet writes a long number so and may have "
        "dropped its digits; write the amount in plain digits",
    }


@pytest.mark.stage
def test_latest_version_does_not_depend_on_load_order(tmp_path: Path):
    raw = {
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"email": "email", "updated_at": "modified"},
            }
        ]
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    latest = []
    for loaded in ([datetime(2025, 7, 2), datetime(2025, 7, 1)], [datetime(2025, 7, 1), datetime(2025, 7, 2)]):
        conn = duckdb.connect(":memory:")
        bootstrap(conn)
        conn.execute("create table raw.crm (_file varchar, _row_number bigint, _loaded_at timestamp, record json)")
        # One contact in two exports with the same modification time and different content: the order the
        # files were loaded in must not decide which is the contact's latest version.
        conn.executemany(
            "insert into raw.crm values (?, 2, ?, ?)",
            [
                ["crm/a.csv", loaded[0], '{"id": "1", "email": "old@x.com", "modified": "2025-01-01"}'],
                ["crm/b.csv", loaded[1], '{"id": "1", "email": "new@x.com", "modified": "2025-01-01"}'],
            ],
        )
        clean_person_records(Sql(conn), config)
        latest.append(conn.execute("select file, email from clean.person_records where is_latest").fetchall())
    # The later file name wins, whichever was loaded last.
    assert latest == [[("crm/b.csv", "new@x.com")], [("crm/b.csv", "new@x.com")]]


@pytest.mark.unit
def test_people_sharing_a_value_are_counted_the_same_in_any_order():
    # 19800101 and 19800112 are too far apart to be one date mistyped, 19800102 is one slip from each:
    # grouping them greedily gives one or two people depending on which comes first.
    dates = ["19800101", "19800112", "19800102"]
    assert len({birth_date_people(list(order)) for order in itertools.permutations(dates)}) == 1
    names = FirstNames({"jon": 50, "john": 60, "joan": 40})
    triples = [("jon", "lee"), ("joan", "lee"), ("j", "lee")]
    assert len({names.people(list(order)) for order in itertools.permutations(triples)}) == 1
