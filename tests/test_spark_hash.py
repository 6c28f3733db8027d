"""The engine-independent hash (`portable_hash` of resources/sql.py): the same values hashed by DuckDB and by
a local Spark session through the dialect give the same integers, for seeded random strings (with accents,
emoji, quotes and the separators' neighbours), NULLs, integers, dates, timestamps, lists of integers and
several arguments; and the values are md5's digits, so they cannot drift with either engine's version."""

import hashlib
import random
from datetime import date, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from resources.spark.runner import SparkSql
from resources.sql import Sql, portable_hash

pytestmark = pytest.mark.spark

ALPHABET = "abcxyzAZ09 .@+-_'\",;:|/\\\t\néèßøçñ中文字ひらがなЖжΩ🦆👍🏽e\u0301\u200b"


def _rows(count: int, seed: int) -> pa.Table:
    rng = random.Random(seed)

    def text() -> str | None:
        return None if rng.random() < 0.15 else "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24)))

    def maybe(value: object) -> object:
        return None if rng.random() < 0.15 else value

    return pa.table(
        {
            "k": pa.array(range(count), pa.int64()),
            "s": pa.array([text() for _ in range(count)], pa.string()),
            "t": pa.array([text() for _ in range(count)], pa.string()),
            "i": pa.array([maybe(rng.randint(-(2**63), 2**63 - 1)) for _ in range(count)], pa.int64()),
            "small": pa.array([maybe(rng.randint(-1000, 1000)) for _ in range(count)], pa.int32()),
            "flag": pa.array([maybe(rng.random() < 0.5) for _ in range(count)], pa.bool_()),
            "day": pa.array([maybe(date(1900, 1, 1) + timedelta(days=rng.randint(0, 60_000))) for _ in range(count)]),
            "stamp": pa.array(
                [
                    maybe(datetime(1990, 1, 1) + timedelta(seconds=rng.randint(0, 10**9), microseconds=micros))
                    for micros in rng.choices([0, 120_000, 5, 999_999], k=count)
                ],
                pa.timestamp("us"),
            ),
            "ints": pa.array(
                [maybe([rng.randint(-(2**62), 2**62) for _ in range(rng.randint(0, 4))]) for _ in range(count)],
                pa.list_(pa.int64()),
            ),
        }
    )


HASHED = [
    ["s"],
    ["i"],
    ["s", "t"],
    ["t", "s"],
    ["s", "i", "small", "flag"],
    ["day", "stamp"],
    ["ints"],
    ["k", "k", "42"],
    ["null"],
    ["s", "null"],
]


@pytest.fixture(scope="module")
def hashed_rows(spark):  # noqa: ANN001, ANN201 - the session fixture of tests/conftest.py
    rows = _rows(2_000, seed=20261202)
    select = "select k, " + ", ".join(f"{portable_hash(*args)} as h{n}" for n, args in enumerate(HASHED))
    conn = duckdb.connect()
    conn.register("hash_input", rows)
    duck = Sql(conn).rows(f"{select} from hash_input order by k")
    spark.createDataFrame(rows).createOrReplaceTempView("hash_input")
    try:
        on_spark = SparkSql(spark).rows(f"{select} from hash_input order by k")
    finally:
        spark.catalog.dropTempView("hash_input")
        conn.close()
    return rows, duck, on_spark


def test_both_engines_give_the_same_hashes(hashed_rows) -> None:  # noqa: ANN001
    _, duck, on_spark = hashed_rows
    assert len(duck) == 2_000
    assert duck == on_spark


def test_the_hash_is_md5_of_the_joined_text_and_separates_nulls_and_argument_order(hashed_rows) -> None:  # noqa: ANN001
    rows, duck, _ = hashed_rows
    strings = rows.column("s").to_pylist()
    for (k, h_s, *_), value in zip(duck, strings, strict=True):
        text = "\x1e" if value is None else value
        assert h_s == int(hashlib.md5(text.encode()).hexdigest()[:15], 16), k
    values = [h for row in duck for h in row[1:]]
    assert all(0 <= h < 2**60 for h in values)
    swapped = [(row[3], row[4]) for row in duck]
    assert sum(a != b for a, b in swapped) > 1_900  # (s, t) and (t, s) differ unless s = t
    assert len({row[9] for row in duck}) == 1  # a constant for NULL
    assert all(row[10] != row[1] for row in duck)  # (s, NULL) is not s
