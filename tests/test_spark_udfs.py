"""The project's Java UDFs (similarity, strip_accents) equal DuckDB's functions on a large seeded sample
of real-looking pairs: the demo's names and streets with the demo's typos, other names, case changes, accents, emoji,
combining marks, strings past 64 characters (where DuckDB's Jaro switches to its multi-word path),
empty strings and NULLs."""

import random

import duckdb
import pyarrow as pa
import pytest

from demo.generate import FEMALE_FIRST_NAMES, LAST_NAMES, MALE_FIRST_NAMES, STREET_NAMES, _typo
from resources.spark.runner import SparkSql

pytestmark = pytest.mark.spark

PAIRS = 50_000
EXTRA = ["José", "Zoë", "Ñúñez", "Müller", "O'Brien", "Ana-María", "Łukasz", "e\u0301mile", "😀 Smith", "a", "ab", ""]
# Names whose accents strip_accents removes, in Latin, Greek and Cyrillic scripts and with a mark that
# is not spacing (Devanagari's vowel sign), beside letters it keeps (ß, ø, which fold_accents spells out).
EXTRA += ["Sören", "Françoise", "Dvořák", "Ångström", "Ίρις", "Йозеф", "Straße", "Ørsted", "हिंदी", "ﬁne"]


def sample_pairs(count: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    names = [*MALE_FIRST_NAMES, *FEMALE_FIRST_NAMES, *LAST_NAMES, *EXTRA]
    streets = [f"{rng.randrange(1, 9999)} {s}" for s in STREET_NAMES]
    left, right = [], []
    for _ in range(count):
        roll = rng.random()
        pool = streets if roll < 0.15 else names
        a = rng.choice(pool)
        if roll > 0.97:  # long values: several names run together
            a = " ".join(rng.choice(names) for _ in range(rng.randrange(6, 12)))
        b = rng.choice(pool) if rng.random() < 0.3 else _typo(rng, a)
        if rng.random() < 0.3:
            b = _typo(rng, b)
        if rng.random() < 0.2:
            a = a.lower()
        if rng.random() < 0.01:
            a, b = None, b
        left.append(a)
        right.append(b)
    same_length = [a is not None and b is not None and len(a) == len(b) > 0 for a, b in zip(left, right, strict=True)]
    return pa.table({"id": list(range(count)), "a": left, "b": right, "same_length": same_length})


QUERY = """select id, jaro_winkler_similarity(a, b), levenshtein(a, b), damerau_levenshtein(a, b),
                  case when same_length then hamming(a, b) end, strip_accents(a), strip_accents(b)
           from pairs order by id"""


def test_similarity_udfs_equal_duckdb_on_50000_pairs(spark) -> None:  # noqa: ANN001
    pairs = sample_pairs(PAIRS, seed=20240601)
    conn = duckdb.connect()
    conn.register("pairs", pairs)
    expected = conn.execute(QUERY).fetchall()
    conn.close()
    runner = SparkSql(spark)
    with runner.registered("pairs", pairs):
        actual = runner.rows(QUERY)
    assert len(actual) == len(expected) == PAIRS
    jaro_exact = jaro_close = 0
    for duck, ours in zip(expected, actual, strict=True):
        assert duck[2:] == ours[2:], (duck, ours)  # the distances, exactly
        if duck[1] == ours[1]:
            jaro_exact += 1
        elif duck[1] is not None and ours[1] is not None and abs(duck[1] - ours[1]) <= 1e-12:
            jaro_close += 1
    # Every Jaro-Winkler score within 1e-12; on this machine's DuckDB build all of them are bit-equal.
    assert jaro_exact + jaro_close == PAIRS, f"{jaro_exact} equal, {jaro_close} within 1e-12"
    assert sum(1 for row in expected if row[4] is not None) > 1_000  # hamming was really compared


def test_edge_cases_behave_as_in_duckdb(spark) -> None:  # noqa: ANN001
    edge = [("", ""), ("a", ""), ("", "abc"), ("a", "a"), ("a", "b"), ("ab", "ba"), ("ca", "abc"), ("martha", "marhta")]
    sql = "select jaro_winkler_similarity(a, b), levenshtein(a, b), damerau_levenshtein(a, b) from pairs order by id"
    table = pa.table({"id": list(range(len(edge))), "a": [a for a, _ in edge], "b": [b for _, b in edge]})
    conn = duckdb.connect()
    conn.register("pairs", table)
    runner = SparkSql(spark)
    with runner.registered("pairs", table):
        assert runner.rows(sql) == conn.execute(sql).fetchall()
        assert runner.value("select jaro_winkler_similarity(null, 'a')") is None
        # DuckDB refuses hamming of different lengths; so does the UDF, as a failed statement.
        with pytest.raises(duckdb.InvalidInputException):
            conn.execute("select hamming('ab', 'abc')")
        with pytest.raises(duckdb.Error, match="hamming: strings must be of equal length"):
            runner.value("select hamming('ab', 'abc')")
