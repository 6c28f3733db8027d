"""The identity stage's vocabulary is declared once: the configuration validator (resources) and the
engine (cdp_assets/identity) must accept and implement exactly the same names. Also: comparisons built
from the level library get the levels, labels and groups the library promises, and every identity step
drops the temp tables it made. And an identifier normaliser is one declaration: its cleaning rule, match
key and defaults are read from it by the validator, the cleaning stage and the identity stage alike."""

import json
import re
import typing

import duckdb
import pandas as pd
import pydantic
import pytest
import yaml

from cdp_assets.clean.assets import _identifier_maps, clean_activity, clean_person_records
from cdp_assets.clean.rules import clean_phone
from cdp_assets.identity.matching.comparisons import (
    COMPARED_COLUMNS,
    COMPARISONS,
    Comparison,
    Given,
    different_if,
    else_level,
    exact_match_level,
    jaro_winkler_level,
    no_evidence_level,
    null_level,
    one_edit_level,
    vector_sql,
)
from cdp_assets.identity.matching.features import FEATURES
from resources.config import load_config
from resources.config.identity import (
    BLOCKING_FEATURES,
    PERSON_EVIDENCE,
    STRONG_CONFLICTS,
    IdentifierTypeConfig,
    MatchingConfig,
)
from resources.config.identity import COMPARISONS as DECLARED_COMPARISONS
from resources.hashing import IdentifierKind, normalize_phone
from resources.identifiers import DEFAULT_NORMALISER, HASHED_KINDS, NORMALISERS, IdentifierNormaliser, is_missing
from resources.sql import Sql
from resources.warehouse import bootstrap
from tests.fixtures import identity_warehouse as warehouse

pytestmark = pytest.mark.stage


def test_every_comparison_the_validator_accepts_is_implemented_and_vice_versa():
    assert list(COMPARISONS) == list(DECLARED_COMPARISONS)
    MatchingConfig(comparisons=list(COMPARISONS), person_evidence=list(COMPARISONS))
    with pytest.raises(pydantic.ValidationError, match="unknown comparison"):
        MatchingConfig(comparisons=["shoe_size"])


def test_strong_conflicts_are_the_comparisons_that_declare_one():
    declaring = {name for name, c in COMPARISONS.items() if c.conflict is not None}
    assert declaring == set(STRONG_CONFLICTS)
    MatchingConfig(strong_conflicts=sorted(declaring))
    undeclared = next(name for name in COMPARISONS if name not in declaring)
    with pytest.raises(pydantic.ValidationError, match="unknown strong conflict"):
        MatchingConfig(strong_conflicts=[undeclared])


def test_default_person_evidence_names_comparisons_that_can_agree():
    for name in PERSON_EVIDENCE:
        assert COMPARISONS[name].agreeing, f"{name} has no agreeing level, so it could never be person evidence"


def test_every_blocking_feature_the_validator_accepts_is_a_match_records_column_and_vice_versa():
    assert set(FEATURES) == set(BLOCKING_FEATURES)
    for feature, compared in BLOCKING_FEATURES.items():
        assert set(compared) <= set(COMPARISONS), feature
    MatchingConfig(blocking_rules=[[feature] for feature in FEATURES])
    with pytest.raises(pydantic.ValidationError, match="unknown feature"):
        MatchingConfig(blocking_rules=[["shoe_size"]])


def test_every_identifier_normaliser_the_validator_accepts_is_declared_with_its_cleaning_rule():
    accepted = set(typing.get_args(IdentifierTypeConfig.model_fields["normalize"].annotation))
    assert accepted == set(NORMALISERS)
    assert set(typing.get_args(IdentifierKind)) == set(HASHED_KINDS) <= set(NORMALISERS)
    # Cleaning reads each normaliser's values from its cleaned-value map, the column its match key is in;
    # only ids are kept as written.
    assert set(_identifier_maps()) == set(NORMALISERS) - {DEFAULT_NORMALISER}
    assert {kind: column for kind, (column, _) in _identifier_maps().items()} == {
        "email": "match_key",
        "phone": "phone",
    }
    for normaliser in NORMALISERS.values():
        assert normaliser.key in normaliser.outputs and "reason" in normaliser.outputs
        # Each built-in junk value is refused in the form its type's values are compared in.
        for value in normaliser.blocked_values:
            assert normaliser.match_key(value, "US") in (value, None)
    assert NORMALISERS["email"].match_key("Jane.Doe+shop@GoogleMail.com") == "janedoe@gmail.com"
    assert NORMALISERS["phone"].match_key("020 7946 0958", "GB") == "+442079460958"
    assert NORMALISERS["id"].match_key(" 12.0 ") == "12"


def test_a_normaliser_declared_without_its_match_key_or_reason_is_refused():
    with pytest.raises(ValueError, match="need `reason`"):
        IdentifierNormaliser("vat", rule=lambda raw: (raw,), outputs=("vat",), key="vat")
    with pytest.raises(ValueError, match="the key 'key'"):
        IdentifierNormaliser("vat", rule=lambda raw: (raw, None), outputs=("vat", "reason"), key="key")


def _clean_vat(raw: object, region: str | None) -> tuple[str | None, str | None, str | None]:
    """(as written, match key, reason): an EU VAT number without spaces or dots, prefixed with the country
    of its record when it has no prefix of its own."""
    if is_missing(raw):
        return None, None, None
    text = re.sub(r"[\s.]", "", str(raw)).upper()
    if not re.fullmatch(r"([A-Z]{2})?[0-9A-Z]{8,12}", text) or not any(c.isdigit() for c in text):
        return None, None, "not a VAT number"
    return str(raw).strip(), text if text[:2].isalpha() else f"{region}{text}", None


VAT = IdentifierNormaliser(
    "vat", rule=_clean_vat, outputs=("vat", "match_key", "reason"), key="match_key", reads_region=True
)


def test_a_normaliser_added_to_the_declarations_is_cleaned_into_identifiers_with_its_match_key(tmp_path, monkeypatch):
    """One entry in NORMALISERS is all a new normaliser needs: cleaning builds its map, keeps its match
    keys in `clean.*_identifiers`, quarantines the values its rule refuses, and identity reads its key."""
    monkeypatch.setitem(NORMALISERS, "vat", VAT)
    raw = {
        "sources": [
            {
                "name": "crm",
                "format": "jsonl",
                "glob": "crm/*.jsonl",
                "role": "person",
                "record_id": "id",
                "default_country": "DE",
                "fields": {"email": "email"},
                "identifiers": [{"path": "vat", "type": "vat_number"}, {"path": "email", "type": "email"}],
            },
            {
                "name": "orders",
                "format": "jsonl",
                "glob": "orders/*.jsonl",
                "role": "transactions",
                "record_id": "customer",
                "event_id": "id",
                "default_country": "FR",
                "fields": {"occurred_at": "at", "amount": "total"},
                "identifiers": [{"path": "vat", "type": "vat_number"}],
            },
        ]
    }
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    # The validator's list of names is fixed when it is imported: the type is switched to the new kind here.
    types = config.identity.identifier_types
    types["vat_number"] = IdentifierTypeConfig().model_copy(update={"normalize": "vat"})
    conn = duckdb.connect(":memory:")
    bootstrap(conn)
    for table, rows in {
        "crm": [
            {"id": "p1", "vat": "123 456.789", "email": "Ann@X.org"},
            {"id": "p2", "vat": "de123456789"},
            {"id": "p3", "vat": "n/a"},
            {"id": "p4", "vat": "?!"},
        ],
        "orders": [
            {"id": "o1", "customer": "c1", "at": "2025-01-01T00:00:00Z", "total": "1", "vat": "12345678901"},
            {"id": "o2", "customer": "c2", "at": "2025-01-01T00:00:00Z", "total": "1", "vat": "VAT?"},
        ],
    }.items():
        conn.execute(f"create table raw.{table} (_file varchar, _row_number bigint, _loaded_at timestamp, record json)")
        conn.executemany(
            f"insert into raw.{table} values ('{table}/a.jsonl', ?, now()::timestamp, ?)",
            [[i + 1, json.dumps(r)] for i, r in enumerate(rows)],
        )
    clean_person_records(Sql(conn), config)
    clean_activity(Sql(conn), config, "transactions")

    def rows(query: str) -> list[tuple]:
        return conn.execute(query + " order by all").fetchall()

    assert rows("select source_record_id, id_type, id_value from clean.person_identifiers") == [
        ("p1", "email", "ann@x.org"),
        ("p1", "vat_number", "DE123456789"),
        ("p2", "vat_number", "DE123456789"),
    ]
    assert rows("select source_record_id, id_type, id_value from clean.transactions_identifiers") == [
        ("c1", "vat_number", "FR12345678901")
    ]
    assert rows("select source, row_number, field, value, reason from cdp.quarantine where stage = 'clean'") == [
        ("crm", 4, "vat", "?!", "not a VAT number"),
        ("orders", 2, "vat", "VAT?", "not a VAT number"),
    ]
    # The identity stage compares configured blocked values in the same form.
    assert NORMALISERS["vat"].match_key("de 123 456 789", "US") == "DE123456789"


def test_cleaning_and_ad_hashing_read_a_phone_number_alike():
    for raw in ["(212) 736-5000", "+44 20 7946 0958", "0000000000", "12"]:
        assert clean_phone(raw, "US")[0] == normalize_phone(raw, "US")


def _levels(comparison: Comparison, pairs: list[tuple[object, ...]], columns: tuple[str, ...]) -> list[int]:
    """The comparison's level for each (left..., right...) pair, evaluated by DuckDB on flat columns."""
    conn = duckdb.connect(":memory:")
    names = [f"l_{c}" for c in columns] + [f"r_{c}" for c in columns]
    conn.execute(f"create table p ({', '.join(f'{n} varchar' for n in names)})")
    conn.executemany(f"insert into p values ({', '.join('?' for _ in names)})", pairs)
    sql = comparison.sql
    for c in columns:
        sql = sql.replace(f"l.{c}", f"l_{c}").replace(f"r.{c}", f"r_{c}")
    return [level for (level,) in conn.execute(f"select ({sql})::int from p order by rowid").fetchall()]


def test_levels_are_numbered_from_the_bottom_with_their_labels_and_agreement():
    nickname = Comparison(
        "nickname",
        (
            null_level("nickname"),
            exact_match_level("nickname", term_frequency=True),
            different_if("length(l.nickname) < 3"),
            jaro_winkler_level("nickname", 0.9),
            one_edit_level("nickname", "one slip", agrees=False),
            else_level(),
        ),
    )
    assert nickname.labels == {3: "exact", 2: "jaro-winkler >= 0.9", 1: "one slip", 0: "different"}
    assert nickname.agreeing == (3, 2)
    assert (nickname.tf_column, nickname.exact_level, nickname.level_groups) == ("nickname", 3, ((0, 1, 2, 3),))
    pairs = [
        ("martha", None),
        ("martha", "martha"),
        ("al", "ab"),  # too short for anything but exact
        ("martha", "marhta"),
        ("zq", "zqx"),  # one slip, but too short: different_if comes first
        ("ab3", "xb3"),  # one slip, not similar enough for Jaro-Winkler 0.9
        ("abcdefgh", "xbcdefgh"),  # one slip that Jaro-Winkler, higher up, already finds similar
        ("kxqzvwab", "kxqzvwabyy"),
        ("smith", "jones"),
    ]
    assert _levels(nickname, pairs, ("nickname",)) == [-1, 3, 0, 2, 0, 1, 2, 2, 0]


def test_a_level_group_under_a_condition_is_numbered_above_and_weighed_apart():
    city = Comparison(
        "city",
        (
            null_level("city"),
            no_evidence_level("l.street = r.street"),
            Given("l.zip = r.zip", (exact_match_level("city"), else_level()), ", zip agrees"),
            exact_match_level("city", term_frequency=True),
            else_level(),
        ),
    )
    assert city.labels == {3: "exact, zip agrees", 2: "different, zip agrees", 1: "exact", 0: "different"}
    assert city.level_groups == ((0, 1), (2, 3))
    assert (city.exact_level, city.agreeing) == (1, (3, 1))
    pairs = [
        ("a", "1", "x", "a", "1", "x"),
        ("a", "1", "x", "a", "1", "y"),
        ("a", "1", "x", "b", "1", "y"),
        ("a", "1", "x", "a", "2", "y"),
        ("a", "1", "x", "b", "2", "y"),
        (None, "1", "x", "a", "1", "y"),
    ]
    assert _levels(city, pairs, ("city", "zip", "street")) == [-1, 3, 2, 1, 0, -1]


def test_every_declared_comparison_reads_only_compared_columns():
    conn = duckdb.connect(":memory:")
    types = {"date_of_birth": "date"}
    columns = ", ".join(f"{c} {types.get(c, 'varchar')}" for c in COMPARED_COLUMNS)
    conn.execute(f"create temp table match_records (node_id bigint, {columns})")
    conn.execute("create temp table pairs (l bigint, r bigint)")
    assert conn.execute(f"select * from ({vector_sql('match_records', 'pairs', list(COMPARISONS))})").fetchall() == []


def test_step_tables_are_prefixed_and_dropped_even_when_the_step_fails():
    conn = duckdb.connect(":memory:")
    with pytest.raises(RuntimeError), Sql(conn).scratch("blocking") as tables:
        name = tables("pairs")
        assert name == "blocking__pairs"
        conn.execute(f"create temp table {name} as select 1 as x")
        raise RuntimeError("the step failed")
    assert conn.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]


def test_a_step_frees_a_table_it_owns_when_asked_not_only_at_its_end():
    conn = duckdb.connect(":memory:")
    with Sql(conn).scratch("matching") as tables:
        conn.execute(f"create temp table {tables('pairs')} as select 1 as l")
        conn.execute(f"create temp table {tables('labelled_pairs')} as select 1 as l")
        tables.drop("pairs")
        tables.drop("labelled_pairs")
        tables.frame("labels", pd.DataFrame({"l": [1]}))
        tables.drop("labels")
        assert conn.execute("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]
        assert conn.execute("select count(*) from duckdb_views() where temporary and not internal").fetchall() == [(0,)]


def test_the_identity_stage_leaves_no_temp_table_behind(tmp_path):
    """Every intermediate table belongs to a step, which drops it: only the published tables remain."""
    records = [
        {"id": "a", "first": "Ann", "last": "Lee", "dob": "1980-01-02", "email": "ann@x.org", "zip": "10001"},
        {"id": "b", "first": "Ann", "last": "Lee", "dob": "1980-01-02", "email": "ann@x.org", "zip": "10001"},
        {"id": "c", "first": "Anne", "last": "Lee", "dob": "1980-01-02", "zip": "10001"},
        {"id": "d", "first": "Bo", "last": "Chan", "dob": "1975-05-06", "zip": "94103"},
    ]
    conn = warehouse(tmp_path, records, {"identifier_types": {"email": {"max_per_profile": 1}}})
    assert conn.execute("select table_name from duckdb_tables() where temporary").fetchall() == []
    assert conn.execute("select view_name from duckdb_views() where temporary and not internal").fetchall() == []
    assert conn.execute("select count(*) from identity.evidence").fetchone()[0] > 0
