"""Rewriting a landing file without an erased person's records, and the key of the tombstones."""

import csv

import pytest

from cdp_assets.extract.readers import kept_lines, removed_lines
from cdp_assets.privacy.access import write_csv_bundle
from cdp_assets.syncs.assets import spreadsheet_safe, spreadsheet_safe_text
from resources.privacy import keyed_hash, keyed_hash_sql
from resources.sql import Sql

pytestmark = pytest.mark.unit


def test_a_rewritten_file_loses_each_erased_record_with_its_continuation_lines_and_keeps_its_numbering():
    lines = [b"h\n", b"a\n", b'b "x\r\n', b'y"\n', b"c"]
    assert kept_lines(lines, erased=[3], known=[2, 3, 5]) == [b"h\n", b"a\n", b"\r\n", b"\n", b"c"]
    assert kept_lines(lines, erased=[5], known=[2, 3, 5]) == [*lines[:4], b""]


def test_erasure_without_the_key_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path):
    from resources.config import load_config
    from resources.privacy import PrivacyKeyMissing, keyed_hash, privacy_key
    from tests.fixtures import write_config

    config = load_config(write_config(tmp_path))
    monkeypatch.delenv("CDP_PRIVACY_KEY", raising=False)
    with pytest.raises(PrivacyKeyMissing, match="CDP_PRIVACY_KEY"):
        privacy_key(config)
    monkeypatch.setenv("CDP_PRIVACY_KEY", "x" * 32)
    key = privacy_key(config)
    # Keyed: the same value under another key, or another kind, is another hash; the value is not in it.
    assert keyed_hash(key, "email", "ann@example.org") != keyed_hash(b"y" * 32, "email", "ann@example.org")
    assert keyed_hash(key, "email", "ann@example.org") != keyed_hash(key, "phone", "ann@example.org")


def test_removed_lines_span_each_erased_record_and_the_last_one_to_the_end():
    assert removed_lines(erased=[3], known=[2, 3, 5], total=5) == [3, 4]
    assert removed_lines(erased=[5], known=[2, 3, 5], total=7) == [5, 6, 7]
    assert removed_lines(erased=[2, 5], known=[2, 3, 5], total=5) == [2, 5]


@pytest.mark.parametrize("key", [b"k" * 32, b"a-key-longer-than-one-block-" * 4])
def test_the_database_computes_the_same_tombstones_as_python(key: bytes):
    values = ["c-1042", "ann.lee@example.org", "Zoë Çelik", "x" * 300]
    sql = Sql.in_memory()
    digest, params = keyed_hash_sql(key, "record:crm", "v")
    got = sql.rows(f"select v, {digest} from (select unnest(?::varchar[]) as v)", [*params, values])
    sql.close()
    assert dict(got) == {v: keyed_hash(key, "record:crm", v) for v in values}


HOSTILE_CELLS = ["=cmd|' /C calc'!A0", "+SUM(1+1)", "-2+3", '@HYPERLINK("http://x")', "\t=1", "\r=1"]
PLAIN_CELLS = ["+14155550123", "-12.50", "Ann", "'=already", "", "a=b"]


def test_an_access_bundle_opens_in_a_spreadsheet_without_running_formulas(tmp_path):
    profile = [{"customer_id": "cus_1", "first_name": v, "order_count": -2, "emails": [v]} for v in HOSTILE_CELLS]
    profile += [{"customer_id": "cus_1", "first_name": v, "order_count": 1, "emails": []} for v in PLAIN_CELLS]
    write_csv_bundle(tmp_path / "bundle", {"profile": profile})
    with (tmp_path / "bundle" / "profile.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [row["first_name"] for row in rows]
    assert names == ["'" + v for v in HOSTILE_CELLS] + PLAIN_CELLS
    # Numbers and nested values are written as they are: a negative count stays a number, a list starts '['.
    assert {row["order_count"] for row in rows[: len(HOSTILE_CELLS)]} == {"-2"}
    assert all(row["emails"].startswith("[") for row in rows)


def test_the_python_and_sql_spreadsheet_rules_agree():
    values = HOSTILE_CELLS + PLAIN_CELLS
    sql = Sql.in_memory()
    try:
        sql.execute(
            "create table cells as select unnest(?::varchar[]) as value, generate_subscripts(?::varchar[], 1) as n",
            [values, values],
        )
        made_safe = [v for (v,) in sql.rows(spreadsheet_safe(sql, "select value from cells order by n"))]
    finally:
        sql.close()
    assert made_safe == [spreadsheet_safe_text(v) for v in values]
