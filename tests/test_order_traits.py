"""Orders as a shop exports them, through the pipeline: a refunded order adds no revenue, and revenue in
several currencies is added as it is but never silently: the profiles' warning check names them."""

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from resources.sql import Sql
from tests.fixtures import check_evaluation, materialize_stages

pytestmark = pytest.mark.dagster


def _profiles(
    tmp_path: Path, orders: list[dict], instance: dg.DagsterInstance, as_of: str = "'2025-07-01T00:00:00'"
) -> tuple[dg.AssetCheckEvaluation, list]:
    landing = tmp_path / "landing"
    landing.mkdir(exist_ok=True)
    (landing / "crm.csv").write_text("id,first,email\nC1,Ann,ann@example.org\n")
    (landing / "orders.jsonl").write_text("".join(json.dumps(o) + "\n" for o in orders))
    (tmp_path / "cdp.yaml").write_text(
        "warehouse: {path: wh.duckdb}\nlanding: {path: landing, settle_seconds: 0}\n"
        f"profiles: {{as_of: {as_of}}}\nsources:\n"
        "  - {name: crm, format: csv, glob: 'crm.csv', role: person, record_id: id,\n"
        "     fields: {first_name: first, email: email}, identifiers: [{path: email, type: email}]}\n"
        "  - {name: shop, format: jsonl, glob: 'orders.jsonl', role: transactions, record_id: email, event_id: id,\n"
        "     fields: {occurred_at: at, amount: amount, currency: currency, status: state},\n"
        "     identifiers: [{path: email, type: email}]}\n"
    )
    result, defs = materialize_stages(tmp_path / "cdp.yaml", instance, ("raw", "clean", "identity", "profiles"))
    check = check_evaluation(result, "revenue_in_one_currency")
    with defs.resources["warehouse"].sql() as sql:
        assert isinstance(sql, Sql)
        rows = sql.rows("select order_count, lifetime_revenue, last_order_at::varchar from cdp.golden_profiles")
    return check, rows


def _order(number: int, amount: str, currency: str, state: str, day: int) -> dict:
    return {
        "id": f"O{number}",
        "email": "ann@example.org",
        "at": f"2025-06-{day:02d}T10:00:00Z",
        "amount": amount,
        "currency": currency,
        "state": state,
    }


def test_a_refunded_order_adds_no_revenue_and_one_currency_passes(tmp_path, instance):
    orders = [_order(1, "100.00", "USD", "paid", 1), _order(2, "40.00", "usd", "Refunded", 20)]
    check, rows = _profiles(tmp_path, orders, instance)
    assert rows == [(1, 100, "2025-06-01 10:00:00")]
    assert check.passed and check.metadata["currencies"].value == 1


def test_orders_in_several_currencies_warn_naming_them(tmp_path, instance):
    orders = [
        _order(1, "100.00", "USD", "paid", 1),
        _order(2, "10.00", "GBP", "paid", 2),
        _order(3, "99.00", "EUR", "refunded", 3),  # no order: its currency is not added either
    ]
    check, rows = _profiles(tmp_path, orders, instance)
    assert rows == [(2, 110, "2025-06-02 10:00:00")]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["currencies"].value == 2
    assert check.description.startswith("lifetime_revenue adds amounts of 2 currencies as they are (GBP, USD)")


def test_an_order_dated_after_its_file_was_loaded_is_quarantined_and_moves_no_as_of_time(tmp_path, instance):
    """A placeholder date far ahead (a device's clock, 2099-01-01) would make itself the latest activity and
    every profile's as-of time with it; it is quarantined whole, naming the field and the value."""
    future = {**_order(3, "5.00", "USD", "paid", 1), "at": "2099-01-01T00:00:00Z"}
    orders = [_order(1, "100.00", "USD", "paid", 1), _order(2, "40.00", "USD", "paid", 20), future]
    _, rows = _profiles(tmp_path, orders, instance, as_of="latest_activity")
    assert rows == [(2, 140, "2025-06-20 10:00:00")]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as conn:
        assert conn.execute("select distinct traits_as_of::varchar from cdp.golden_profiles").fetchall() == [
            ("2025-06-20 10:00:00",)
        ]
        field, value, reason = conn.execute(
            "select field, value, reason from cdp.quarantine where stage = 'clean' and source = 'shop'"
        ).fetchone()
    assert (field, value) == ("at", "2099-01-01T00:00:00Z")
    assert reason.startswith("later than the file was loaded (") and reason.endswith("UTC): a time in the future")
