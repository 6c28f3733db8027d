"""The identity stage's vocabulary is declared once: the configuration validator (resources) and the
engine (cdp_assets/identity) must accept and implement exactly the same names. Also: comparisons built
from the level library get the levels, labels and groups the library promises, and every identity step
drops the temp tables it made."""

import typing

import duckdb
import pandas as pd
import pydantic
import pytest

from cdp_assets.clean.assets import _IDENTIFIER_MAPS
from cdp_assets.clean.rules import MATCH_KEYS, clean_phone
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
from resources.config.identity import (
    BLOCKING_FEATURES,
    PERSON_EVIDENCE,
    STRONG_CONFLICTS,
    IdentifierTypeConfig,
    MatchingConfig,
)
from resources.config.identity import COMPARISONS as DECLARED_COMPARISONS
from resources.hashing import IdentifierKind, normalize_phone
from resources.identifiers import DEFAULT_NORMALISER, HASHED_KINDS, NORMALISERS
from resources.sql import Sql
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


def test_every_identifier_normaliser_the_validator_accepts_has_a_cleaning_rule_and_vice_versa():
    accepted = set(typing.get_args(IdentifierTypeConfig.model_fields["normalize"].annotation))
    assert accepted == set(NORMALISERS) == set(MATCH_KEYS)
    assert set(typing.get_args(IdentifierKind)) == set(HASHED_KINDS) <= set(NORMALISERS)
    # Cleaning reads each normaliser's values from its cleaned-value map; only ids are kept as written.
    assert set(_IDENTIFIER_MAPS) == set(NORMALISERS) - {DEFAULT_NORMALISER}
    # Each built-in junk value is refused in the form its type's values are compared in.
    for normaliser in NORMALISERS.values():
        for value in normaliser.blocked_values:
            assert MATCH_KEYS[normaliser.name](value, "US") in (value, None)


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
