"""Each segment is its own asset: it evaluates only its own condition and writes only its own rows of the
membership tables; a segment removed from the configuration is closed by `segments/removed_segments`.

Real Dagster materializations on a DuckDB file holding hand-made golden profiles (only the columns the
conditions read), so each test controls exactly who qualifies for which segment and when.
"""

from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdp_assets.segments.assets import REMOVED_SEGMENTS, build_segment_assets, segment_key
from resources.config import CDPConfig, ConfigError, load_config
from resources.warehouse import Warehouse, bootstrap

DAY_1, DAY_2 = datetime(2025, 6, 1), datetime(2025, 6, 2)
BIG = {"name": "big", "description": "Spent 500 or more.", "where": "lifetime_revenue >= 500"}
BUYERS = {"name": "buyers", "where": "order_count > 0"}


def _config(tmp_path: Path, segments: list[dict]) -> CDPConfig:
    raw = {
        "warehouse": {"path": "w.duckdb"},
        "sources": [{"name": "a", "format": "csv", "glob": "*.csv", "role": "person", "record_id": "id"}],
        "segments": segments,
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def _profiles(path: Path, as_of: datetime, customers: dict[str, tuple[int, int]]) -> None:
    """Golden profiles as of `as_of`: customer id -> (lifetime revenue, order count); no names or e-mails."""
    with duckdb.connect(str(path)) as conn:
        bootstrap(conn)
        conn.execute(
            "create or replace table cdp.golden_profiles "
            "(customer_id varchar, lifetime_revenue decimal(38, 2), order_count bigint, traits_as_of timestamp, "
            "first_name varchar, email varchar)"
        )
        conn.executemany(
            "insert into cdp.golden_profiles values (?, ?, ?, ?, null, null)",
            [(c, revenue, orders, as_of) for c, (revenue, orders) in customers.items()],
        )


def _rows(path: Path, segment: str) -> tuple[list[tuple], list[tuple]]:
    """The segment's current members and its history, sorted."""
    with duckdb.connect(str(path), read_only=True) as conn:
        members = conn.execute(
            "select customer_id, entered_at, computed_at from cdp.segment_membership where segment = ? order by all",
            [segment],
        ).fetchall()
        history = conn.execute(
            "select customer_id, entered_at, exited_at from cdp.segment_membership_history "
            "where segment = ? order by all",
            [segment],
        ).fetchall()
    return members, history


def _materialize(config: CDPConfig, instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> dg.ExecuteInProcessResult:
    assets = [a for a in build_segment_assets(config) if a.key in keys]
    assert {a.key for a in assets} == set(keys)
    resources = {"warehouse": Warehouse(database=str(config.warehouse_path))}
    return dg.materialize(assets, instance=instance, resources=resources)


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, object]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.mark.dagster
def test_one_segment_materializes_alone_and_leaves_the_others_untouched(tmp_path):
    config = _config(tmp_path, [BIG, BUYERS])
    assert [a.key for a in build_segment_assets(config)] == [
        segment_key("big"),
        segment_key("buyers"),
        REMOVED_SEGMENTS,
    ]
    _profiles(config.warehouse_path, DAY_1, {"C1": (600, 2), "C2": (10, 1), "C3": (0, 0)})
    with dg.instance_for_test() as instance:
        first = _materialize(config, instance, [segment_key("big"), segment_key("buyers"), REMOVED_SEGMENTS])
        assert first.success
        assert _rows(config.warehouse_path, "big") == ([("C1", DAY_1, DAY_1)], [("C1", DAY_1, None)])
        buyers = _rows(config.warehouse_path, "buyers")
        assert buyers == ([("C1", DAY_1, DAY_1), ("C2", DAY_1, DAY_1)], [("C1", DAY_1, None), ("C2", DAY_1, None)])
        assert _metadata(first, segment_key("buyers"))["size"] == 2

        # The next day both segments would change; only `big` is refreshed.
        _profiles(config.warehouse_path, DAY_2, {"C1": (100, 2), "C2": (900, 3), "C3": (50, 1)})
        alone = _materialize(config, instance, [segment_key("big")])
        assert alone.success
        assert _rows(config.warehouse_path, "big") == (
            [("C2", DAY_2, DAY_2)],
            [("C1", DAY_1, DAY_2), ("C2", DAY_2, None)],
        )
        figures = _metadata(alone, segment_key("big"))
        assert {k: figures[k] for k in ("size", "entered", "exited", "dagster/row_count")} == {
            "size": 1,
            "entered": 1,
            "exited": 1,
            "dagster/row_count": 1,
        }
        checks = alone.get_asset_check_evaluations()
        assert [(c.asset_key, c.check_name, c.passed) for c in checks] == [
            (segment_key("big"), "members_have_profiles", True)
        ]
        # C3 now buys, but `buyers` was not run: its rows and its last materialization are as they were.
        assert _rows(config.warehouse_path, "buyers") == buyers
        latest = instance.get_latest_materialization_event(segment_key("buyers"))
        assert latest is not None and latest.run_id == first.run_id


@pytest.mark.dagster
def test_a_removed_segment_is_closed_and_the_others_are_untouched(tmp_path):
    config = _config(tmp_path, [BIG, BUYERS])
    _profiles(config.warehouse_path, DAY_1, {"C1": (600, 2), "C2": (10, 1)})
    with dg.instance_for_test() as instance:
        assert _materialize(config, instance, [segment_key("big"), segment_key("buyers")]).success
        big = _rows(config.warehouse_path, "big")

        _profiles(config.warehouse_path, DAY_2, {"C1": (600, 2), "C2": (10, 1)})
        without_buyers = _config(tmp_path, [BIG])
        assert segment_key("buyers") not in {a.key for a in build_segment_assets(without_buyers)}
        closed = _materialize(without_buyers, instance, [REMOVED_SEGMENTS])
        assert closed.success
        assert _metadata(closed, REMOVED_SEGMENTS)["exited"] == 2
        # Nobody is a current member of a segment that no longer exists; its history stays, closed.
        assert _rows(config.warehouse_path, "buyers") == ([], [("C1", DAY_1, DAY_2), ("C2", DAY_1, DAY_2)])
        assert _rows(config.warehouse_path, "big") == big

        again = _materialize(without_buyers, instance, [REMOVED_SEGMENTS])
        assert _metadata(again, REMOVED_SEGMENTS)["exited"] == 0
        assert _rows(config.warehouse_path, "buyers") == ([], [("C1", DAY_1, DAY_2), ("C2", DAY_1, DAY_2)])


@pytest.mark.unit
def test_the_name_of_the_removed_segments_asset_is_not_a_segment_name(tmp_path):
    with pytest.raises(ConfigError, match=r"segments\.0\.name|segments\[0\]"):
        _config(tmp_path, [{"name": "removed_segments", "where": "order_count > 0"}])
