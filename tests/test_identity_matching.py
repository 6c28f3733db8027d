"""The probabilistic layer: each comparison level, each protection rule, explanations and the blocking pre-flight.

Cases run inside a seeded background population (people with two records joined by a shared e-mail,
written with the variations real duplicates have), so u and m are measured as they would be on real
data rather than on three records.
"""

import math
import random
from datetime import date, timedelta

import duckdb
import numpy as np
import pytest

from cdp_assets.identity.assets import resolve
from cdp_assets.identity.matching.blocking import BlockingRuleTooBroad, build_candidate_pairs, preflight
from cdp_assets.identity.matching.comparisons import COMPARED_COLUMNS, COMPARISONS, vector_sql
from cdp_assets.identity.matching.model import (
    FellegiSunterModel,
    build_term_frequencies,
    estimate_u,
    fill_kept_term_frequencies,
    has_kept_term_frequencies,
    save_term_frequencies,
    scoring_sql,
    term_frequency_columns,
)
from cdp_assets.identity.nicknames import canonical_first_name
from resources.config import load_config
from resources.sql import Sql, sql_literal
from tests.fixtures import customers, write_config
from tests.fixtures import identity_warehouse as warehouse

pytestmark = pytest.mark.stage

FIRST = ["olivia", "liam", "emma", "noah", "ava", "elijah", "sophia", "lucas", "mia", "mason", "harper", "ethan",
         "amelia", "logan", "evelyn", "aiden", "abigail", "caleb", "ella", "owen", "scarlett", "wyatt", "grace",
         "henry", "chloe", "julian", "nora", "levi", "lily", "isaac"]  # fmt: skip
LAST = ["okafor", "lindqvist", "marchetti", "yamada", "novak", "brennan", "castellano", "oduya", "halvorsen",
        "petrov", "dumont", "kowalski", "sandoval", "whitlock", "nakamura", "farrow", "ibarra", "lachance",
        "moreau", "quigley", "rasmussen", "szabo", "tremblay", "vasquez", "albright", "beaumont", "carrick",
        "delacroix", "eriksen", "fairbanks"]  # fmt: skip
STREETS = ["oak", "maple", "cedar", "pine", "elm", "birch", "walnut", "willow", "spruce", "aspen"]


def _typo(rng: random.Random, text: str) -> str:
    i = rng.randrange(1, len(text) - 1)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def background(seed: int = 7, people: int = 150) -> list[dict]:
    """People written twice, the two records sharing an e-mail; the second with a typo, a nickname-free
    variation or a missing field now and then, like duplicates across two systems."""
    rng = random.Random(seed)
    records = []
    for n in range(people):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        person = {
            "first": first,
            "last": last,
            "dob": date(1950, 1, 1) + timedelta(days=rng.randrange(20000)),
            "address": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)} st",
            "zip": f"{rng.randrange(10000, 10400)}",
            "city": "springfield",
            "email": f"p{n}@example.org",
            "phone": f"+1212{rng.randrange(1000000, 9999999)}",
        }
        records.append({"id": f"bg{n}a", **person})
        second = dict(person)
        if rng.random() < 0.2:
            second["last"] = _typo(rng, last)
        if rng.random() < 0.3:
            second["address"] = None
        if rng.random() < 0.3:
            second["phone"] = None
        records.append({"id": f"bg{n}b", **second})
    return records


def person(rid: str, first: str | None, last: str | None, **fields: object) -> dict:
    return {"id": rid, "first": first, "last": last, "city": "springfield", **fields}


DOB = date(1984, 3, 17)


@pytest.mark.parametrize(
    ("case", "records", "together"),
    [
        (
            "same person, no shared identifier: same name and birth date, address with a typo",
            [
                person("x", "theodora", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
                person("y", "theodora", "winterbourne", dob=DOB, address="12 harbor view rd", zip="10001"),
            ],
            True,
        ),
        (
            "first and last name swapped",
            [
                person("x", "theodora", "winterbourne", dob=DOB, zip="10001", address="12 harbour view rd"),
                person("y", "winterbourne", "theodora", dob=DOB, zip="10001"),
            ],
            True,
        ),
        (
            "a nickname with a typo and a moved address still links when the phone agrees",
            [
                person("x", "robert", "winterbourne", dob=DOB, address="12 harbour view rd", phone="+12125550100"),
                person("y", "bobb", "winterbourne", address="98 quay st", zip="10300", phone="+12125550100"),
            ],
            True,
        ),
        (
            "household sharing a landline and an address stays apart",
            [
                person(
                    "x",
                    "mark",
                    "winterbourne",
                    dob=DOB,
                    address="12 harbour view rd",
                    zip="10001",
                    phone="+12125550100",
                ),
                person(
                    "y",
                    "mary",
                    "winterbourne",
                    dob=date(1986, 7, 2),
                    address="12 harbour view rd",
                    zip="10001",
                    phone="+12125550100",
                ),
            ],  # fmt: skip
            False,
        ),
        (
            "twins: same birthday and address, different first names",
            [
                person("x", "theodora", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
                person("y", "cassandra", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
            ],
            False,
        ),
        (
            "junk e-mail and phone link nobody",
            [
                person("x", "olivia", "okafor", email="test@test.com", phone="+11234567890"),
                person("y", "liam", "novak", email="test@test.com", phone="+11234567890"),
            ],
            False,
        ),
        (
            "a household member without a first name: surname and address are all a household shares",
            [
                person("x", "theodora", "winterbourne", address="12 harbour view rd", zip="10001"),
                person("y", None, "winterbourne", address="12 harbour view rd", zip="10001"),
            ],
            False,
        ),
        (
            "same common name and nothing else",
            [person("x", "olivia", "okafor", zip="10001"), person("y", "olivia", "okafor", zip="10002")],
            False,
        ),
    ],
)
def test_probabilistic_cases(tmp_path, case, records, together):
    found = customers(warehouse(tmp_path, background() + records))
    assert (found["x"] == found["y"]) is together, case


def test_background_duplicates_are_found(tmp_path):
    found = customers(warehouse(tmp_path, background()))
    joined = sum(found[f"bg{n}a"] == found[f"bg{n}b"] for n in range(150))
    assert joined == 150
    assert len(set(found.values())) == 150


def test_a_link_is_explained_and_a_review_pair_is_not_linked(tmp_path):
    records = background() + [
        person("x", "theodora", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
        person("y", "theodora", "winterbourne", dob=DOB, address="12 harbor view rd", zip="10001"),
    ]
    conn = warehouse(tmp_path, records)
    row = conn.execute(
        """select rule, first_name, last_name, date_of_birth, address, w_first_name, match_probability, decision
           from identity.evidence where left_record_id = 'x' and right_record_id = 'y'"""
    ).fetchone()
    rule, first, last, dob, address, weight, probability, decision = row
    assert decision == "linked" and probability >= 0.95
    assert (first, last, dob, address) == (4, 3, 3, 1)  # exact, exact, exact, jaro-winkler >= 0.88
    assert rule and weight > 0
    levels = conn.execute("select count(*) from identity.model where comparison = 'first_name'").fetchone()[0]
    assert levels == len(COMPARISONS["first_name"].labels)

    strict = warehouse(tmp_path, records, {"matching": {"link_threshold": 0.999999999, "review_threshold": 0.01}})
    found = customers(strict)
    assert found["x"] != found["y"]
    assert strict.execute(
        "select decision from identity.review where left_record_id = 'x' and right_record_id = 'y'"
    ).fetchone() == ("review",)


def test_a_surname_with_its_umlaut_spelt_out_meets_the_one_written_with_it_in_a_block(tmp_path):
    """A loyalty system without umlauts writes Horst Schröder as Horst Schroeder, with no birth date and no
    contact in common: the name pair in the same postal code still brings the two records together, as
    Schröder and Schroder (the accent dropped) always were, so the pair is scored rather than never met."""
    records = background() + [
        person("x", "Horst", "Schröder", dob=DOB, address="12 harbour view rd", zip="10001", phone="+12125550100"),
        person("y", "HORST", "SCHROEDER", zip="10001", phone="+12125550199"),
    ]
    conn = warehouse(tmp_path, records, {"matching": {"review_threshold": 0.01}})
    found = conn.execute(
        """select rule from identity.evidence where 'x' in (left_record_id, right_record_id)
           and 'y' in (left_record_id, right_record_id)"""
    ).fetchall()
    assert found == [("name_pair + postal_code",)]


def test_a_father_and_son_named_sr_and_jr_are_not_merged_through_a_record_without_the_suffix(tmp_path):
    """Eric Morris Sr. and Eric Morris Jr. live at one address, neither CRM record with a birth date the
    other could object to; the father's shop record, under his e-mail, carries no suffix and looks like
    either. The son's record is not merged into the customer holding "Morris Sr."."""
    home = {"address": "12 harbour view rd", "zip": "10001"}
    records = background() + [
        person("sr1", "eric", "morris sr", **home, email="eric.morris@x.org"),
        person("sr2", "eric", "morris", **home, email="eric.morris@x.org"),
        person("jr1", "eric", "morris jr", dob=DOB, **home),
    ]
    found = customers(warehouse(tmp_path, records))
    assert found["sr1"] == found["sr2"] != found["jr1"]


@pytest.mark.parametrize(
    ("left", "right", "one_person"),
    [
        (("eric", "morris sr"), ("eric", "morris jr"), False),
        (("bill", "morris jr"), ("william", "morris sr"), False),
        (("eric", "morris jr"), ("eric", "morris ii"), True),  # II is written for a son, as Jr. is
        (("eric", "morris jr"), ("eric", "morris"), True),  # a suffix left out is no other person
        (("eric", "morris iii"), ("eric", "morris jr"), False),
    ],
)
def test_different_generational_suffixes_are_two_people(left, right, one_person):
    from cdp_assets.identity.clustering import FirstNames

    assert FirstNames({}).compatible(left, right) is one_person


def test_a_middle_initial_in_the_first_name_field_leaves_the_nickname_recognised(tmp_path):
    """A shop's first-name box holding "Bob M." beside the CRM's Robert: the pair's first names compare as
    nicknames of each other, as Bob and Robert do, rather than as two names that differ."""
    records = background() + [
        person("x", "robert", "winterbourne", dob=DOB, zip="10001"),
        person("y", "bob m.", "winterbourne", dob=DOB, zip="10001"),
    ]
    conn = warehouse(tmp_path, records, {"matching": {"review_threshold": 0.01}})
    found = conn.execute(
        """select first_name from identity.evidence where 'x' in (left_record_id, right_record_id)
           and 'y' in (left_record_id, right_record_id)"""
    ).fetchall()
    nickname = next(level for level, label in COMPARISONS["first_name"].labels.items() if label.startswith("nickname"))
    assert found == [(nickname,)]


def test_a_blocking_rule_that_would_make_too_many_pairs_fails_naming_itself(tmp_path):
    identity = {"matching": {"blocking_rules": [["city"]], "max_pairs_per_rule": 1000, "max_block_size": 100000}}
    with pytest.raises(BlockingRuleTooBroad, match=r"rule 'city' would make 44,850 pairs"):
        warehouse(tmp_path, background(), identity)


def test_scoring_by_level_pattern_keeps_exactly_the_pairs_at_or_over_the_threshold():
    """Pairs are kept on a per-pattern sum plus term-frequency parts, then weighed field by field: the
    kept set and every weight must equal a plain per-pair computation, common and rare names alike."""
    rng = np.random.default_rng(3)
    names = ["first_name", "last_name", "date_of_birth"]
    levels = {n: rng.dirichlet(np.ones(COMPARISONS[n].top + 1)) for n in names}
    model = FellegiSunterModel(names, levels, {n: rng.dirichlet(np.ones(len(v))) for n, v in levels.items()}, 0.3)
    conn = duckdb.connect(":memory:")
    first = rng.choice(["ann", "bo", "cy", "dee"], size=400, p=[0.7, 0.2, 0.09, 0.01])
    last = rng.choice(["li", "ng", "ox"], size=400, p=[0.6, 0.3, 0.1])
    conn.execute("create temp table match_records (node_id bigint, first_name varchar, last_name varchar)")
    rows = [[i, str(f), str(g)] for i, (f, g) in enumerate(zip(first, last, strict=True))]
    conn.executemany("insert into match_records values (?, ?, ?)", rows)
    vectors = [[i, (i + 1) % 400] + [int(rng.integers(-1, COMPARISONS[n].top + 1)) for n in names] for i in range(400)]
    conn.execute(
        "create temp table match_vectors (l bigint, r bigint, "
        "first_name tinyint, last_name tinyint, date_of_birth tinyint)"
    )
    conn.executemany("insert into match_vectors values (?, ?, ?, ?, ?)", vectors)
    term_frequencies = {column: f"tf_{column}" for column in term_frequency_columns(names)}
    build_term_frequencies(Sql(conn), "match_records", term_frequencies)
    share = {
        c: {str(v): float(np.mean(col == v)) for v in set(col)}
        for c, col in (("first_name", first), ("last_name", last))
    }
    expected = {}
    for left, right, *row in vectors:
        weight = math.log2(0.3 / 0.7)
        for name, level in zip(names, row, strict=True):
            if level < 0:
                continue
            tf_value = {"first_name": first, "last_name": last}.get(name)
            if tf_value is not None and level == COMPARISONS[name].exact_level:
                weight += math.log2(levels[name][level] / share[name][str(tf_value[left])])
            else:
                weight += model.weight(name, level)
        expected[(left, right)] = weight
    for threshold in (0.05, 0.5, 0.95):
        scored = scoring_sql(model, "match_records", "match_vectors", term_frequencies, threshold)
        kept = dict(
            ((left, right), w)
            for left, right, w in conn.execute(
                f"select l, r, match_weight from ({scored}) where match_probability >= {threshold}"
            ).fetchall()
        )
        wanted = {k: w for k, w in expected.items() if 1 / (1 + 2**-w) >= threshold}
        assert 0 < len(wanted) < len(expected)
        assert kept.keys() == wanted.keys()
        assert all(math.isclose(kept[k], wanted[k], abs_tol=1e-9) for k in wanted)


def _blocking_records() -> duckdb.DuckDBPyConnection:
    """Six records: a surname block of four in one postal code, two of them also sharing a birth year."""
    conn = duckdb.connect(":memory:")
    conn.execute(
        """create temp table match_records as select * from (values
            (0, 'okafor', '10001', 1980), (1, 'okafor', '10001', 1980), (2, 'okafor', '10001', 1975),
            (3, 'okafor', '10001', null), (4, 'novak', '10001', 1980), (5, 'novak', '94103', 1980)
        ) t(node_id, last_name, postal_code, birth_year)"""
    )
    return conn


def test_blocks_over_a_rules_cap_are_skipped_and_each_pair_is_credited_to_its_first_rule():
    conn = _blocking_records()
    rules = [
        (["last_name", "postal_code", "birth_year"], 100),
        (["last_name", "postal_code"], 3),
        (["postal_code"], 5),
        (["birth_year"], 3),
    ]
    keys = [f"keys_{index}" for index in range(len(rules))]
    estimates = preflight(Sql(conn), "match_records", rules, 100, keys)
    assert [(e["estimated_pairs"], e["skipped_keys"], e["records_in_skipped_keys"]) for e in estimates] == [
        (1, 0, 0),  # okafor 10001 1980: records 0 and 1
        (0, 1, 4),  # the okafor 10001 block of four is over this rule's cap of 3
        (10, 0, 0),  # 10001 holds five records, within the cap of 5
        (0, 1, 4),  # 1980 is on four records
    ]
    made = build_candidate_pairs(Sql(conn), "match_records", rules, keys, "match_pairs")
    assert made == {
        "last_name + postal_code + birth_year": 1,
        "last_name + postal_code": 0,
        "postal_code": 9,  # its tenth pair, 0-1, was found by the first rule
        "birth_year": 0,
    }
    assert conn.execute("select rule_index from match_pairs where l = 0 and r = 1").fetchall() == [(0,)]
    left = conn.execute("select table_name from duckdb_tables() where table_name like 'keys_%'").fetchall()
    assert left == []


def test_blocking_around_changed_records_makes_exactly_their_pairs_of_blocking_everything():
    # Records holding lists of e-mail forms (as email_one_slip does), some forms shared by a few records,
    # some by more than the cap of four whole values; a person's records repeat one list. Rules on the list
    # alone and on the list with a plain feature, which a configuration may add.
    rng = random.Random(11)
    rows = []
    for node in range(400):
        person = node // 2 if node < 100 else node
        forms = sorted({(person * 7919 + k) % 600 for k in range(3)} | {rng.randrange(40)})
        rows.append((node, forms, rng.choice(["ng", "ode", "obi"])))
    conn = duckdb.connect()
    conn.execute("create table match_records (node_id bigint, email_one_slip bigint[], last_name varchar)")
    conn.executemany("insert into match_records values (?, ?, ?)", rows)
    conn.execute("create table changed as select unnest([3, 57, 120, 288, 399]) as node_id")
    rules = [(["email_one_slip"], 4), (["email_one_slip", "last_name"], 4), (["last_name"], 500)]
    keys = [f"keys_{index}" for index in range(len(rules))]

    preflight(Sql(conn), "match_records", rules, 10**6, keys)
    build_candidate_pairs(Sql(conn), "match_records", rules, keys, "all_pairs")
    preflight(Sql(conn), "match_records", rules, 10**6, keys, touching="changed")
    build_candidate_pairs(Sql(conn), "match_records", rules, keys, "changed_pairs", touching="changed")

    expected = conn.execute(
        """select l, r, rule_index from all_pairs
           where l in (select node_id from changed) or r in (select node_id from changed) order by all"""
    ).fetchall()
    made = conn.execute("select l, r, rule_index from changed_pairs order by all").fetchall()
    assert made == expected
    # Each list rule makes pairs of its own here, the shared forms at and over the cap both occur.
    assert {0, 1} <= {rule for _, _, rule in made}
    capped = conn.execute(
        """select count(*) filter (where n > 4), count(*) filter (where n between 2 and 4) from (
               select form, count(distinct email_one_slip) as n
               from (select email_one_slip, unnest(email_one_slip) as form from match_records) group by form)"""
    ).fetchone()
    assert capped[0] > 0 and capped[1] > 0


def test_a_rejected_preflight_leaves_no_block_tables():
    conn = _blocking_records()
    with pytest.raises(BlockingRuleTooBroad, match=r"^[^;]*rule 'postal_code' would make 10 pairs, over"):
        preflight(Sql(conn), "match_records", [(["last_name"], 100), (["postal_code"], 100)], 8, ["keys_0", "keys_1"])
    assert conn.execute("select count(*) from duckdb_tables() where table_name like 'keys_%'").fetchall() == [(0,)]


def test_a_record_with_nothing_usable_is_a_singleton(tmp_path):
    found = customers(warehouse(tmp_path, background() + [{"id": "x"}, {"id": "y", "first": None}]))
    assert found["x"] != found["y"] and found["x"].startswith("cus_")


def test_max_per_profile_keeps_two_national_ids_apart(tmp_path):
    records = background() + [
        person("x", "olivia", "okafor", email="o@x.org", ids={"national_id": "AB123456"}),
        person("y", "olivia", "okafor", email="o@x.org", ids={"national_id": "ZZ987654"}),
        person("z", "olivia", "okafor", email="o@x.org"),
    ]
    limited = {"identifier_types": {"national_id": {"max_per_profile": 1, "priority": 10}}}
    found = customers(warehouse(tmp_path, records, limited))
    assert found["x"] != found["y"]
    unlimited = customers(warehouse(tmp_path, records))
    assert unlimited["x"] == unlimited["y"] == unlimited["z"]


_COLUMN_TYPES = {"date_of_birth": "date", "email_split": "boolean"}


def _levels(pairs: list[tuple[dict, dict]]) -> list[dict]:
    conn = duckdb.connect(":memory:")
    conn.execute("create schema identity")
    columns = list(COMPARED_COLUMNS)
    conn.execute(
        "create temp table match_records (node_id bigint, "
        + ", ".join(f"{c} {_COLUMN_TYPES.get(c, 'varchar')}" for c in columns)
        + ")"
    )
    conn.execute("create table pairs (l bigint, r bigint)")
    for i, (left, right) in enumerate(pairs):
        for node, record in ((2 * i, left), (2 * i + 1, right)):
            values = {**record}
            if values.get("date_of_birth"):
                values["dob_text"] = values["date_of_birth"].strftime("%Y%m%d")
            if values.get("first_name"):
                values["first_canon"] = canonical_first_name(values["first_name"])
            if values.get("last_name"):
                values["last_canon"] = canonical_first_name(values["last_name"])
            if values.get("identifier"):
                values["identifier_type"] = values["identifier"].split(":")[0]
            if values.get("email"):
                user, _, values["email_domain"] = values["email"].partition("@")
                values["email_local"] = user
                values["email_local_key"] = user.split("+")[0].replace(".", "")
            conn.execute(
                f"insert into match_records values (?, {', '.join('?' for _ in columns)})",
                [node, *(values.get(c) for c in columns)],
            )
        conn.execute("insert into pairs values (?, ?)", [2 * i, 2 * i + 1])
    return (
        conn.execute(f"select * from ({vector_sql('match_records', 'pairs', list(COMPARISONS))}) order by l")
        .df()
        .to_dict("records")
    )


@pytest.mark.parametrize(
    ("comparison", "left", "right", "level"),
    [
        ("first_name", "jonathan", "jonathan", 4),
        ("first_name", "bob", "robert", 3),
        ("first_name", "hans", "johannes", 3),  # European short forms too
        ("first_name", "kasia", "katarzyna", 3),
        ("first_name", "pepe", "jose", 3),
        ("first_name", "katherine", "katharine", 2),
        ("first_name", "jonathan", "johnathan", 1),
        ("first_name", "j", "jonathan", 1),
        ("first_name", "mary", "anna", 0),
        ("first_name", None, "anna", -1),
        ("first_name", "ольга", "olga", -1),  # one name in two scripts: no evidence either way
        ("first_name", "伟", "wei", -1),
        ("first_name", "ольга", "елена", 0),
        ("last_name", "smith", "smith", 3),
        ("last_name", "winterbourne", "winterbourn", 2),
        ("last_name", "smith", "jones", 0),
        ("last_name", "смирнова", "smirnova", -1),
        ("date_of_birth", date(1970, 5, 1), date(1970, 5, 1), 3),
        ("date_of_birth", date(1970, 5, 1), date(1970, 1, 5), 2),
        ("date_of_birth", date(1970, 5, 1), date(1971, 5, 1), 1),
        ("date_of_birth", date(1970, 5, 12), date(1970, 5, 21), 1),
        ("date_of_birth", date(1970, 5, 1), date(1981, 11, 23), 0),
        ("email", "a@x.org", "a@x.org", 3),
        ("email", "a@x.org", "b@zz.com", 0),
        ("email", "john.smith@outlook.com", "johnsmith@outlook.cm", 2),  # a slip in the domain
        ("email", "ann@yahoo.com", "ann@yaho.com", 2),
        ("email", "ann@gmail.com", "ann@gmail.cmo", 2),
        ("email", "jsmith@x.org", "jsmiht@x.org", 2),  # two letters swapped in the user
        ("email", "jsmith@x.org", "jsmth@x.org", 1),  # a letter less: weaker, weighed on its own
        ("email", "mary82@x.org", "mry82@x.org", 1),
        ("email", "jennifer.castillo@x.org", "jennifer.castilo@x.org", 1),
        ("email", "jennifer.castillo@x.org", "jennifer.kastillo@x.org", 1),  # another letter
        ("email", "mary.payne@x.org", "marypayne@x.org", 0),
        ("email", "jsmith72@x.org", "jsmith73@x.org", 0),  # another digit: another account
        ("email", "jsmith7@x.org", "jsmith72@x.org", 0),
        ("email", "laura1969@x.org", "laura1996@x.org", 0),  # two birth years, not a swap
        ("email", "ann@x.org", "an@x.org", 0),  # users too short for a letter to be a slip
        ("email", "jsmith@x.org", "jsmiht@y.org", 0),  # a slip on each side
        ("phone", "12125550100", "12125550100", 2),
        ("phone", "12125550100", "12125550109", 1),
        ("phone", "12125550100", "12125551000", 1),
        ("phone", "12125550100", "13105559999", 0),
        ("address", "12 harbour view rd", "12 harbour view rd", 2),
        ("address", "12 harbour view rd", "12 harbor view rd", 1),
        ("address", "12 harbour view rd", "7 quay st", 0),
        ("postal_code", "10001", "10001", 2),
        ("postal_code", "10001", "10007", 1),
        ("postal_code", "10001", "94103", 0),
        ("city", "springfield", "springfeld", 1),
        ("identifier", "ssn:1234567", "ssn:1234567", 2),
        ("identifier", "ssn:1234567", "ssn:1234568", 1),
        ("identifier", "ssn:6794611", "ssn:6794161", 1),  # neighbours swapped
        ("identifier", "ssn:1234567", "ssn:12345678", 1),  # one added
        ("identifier", "ssn:1234567", "ssn:1243576", 0),  # two swaps
        ("identifier", "ssn:1234567", "ssn:1634527", 0),  # two digits exchanged, not neighbours
        ("identifier", "ssn:1234567", "ssn:7654321", 0),
        ("identifier", "ssn:1234567", "loyalty:1234567", -1),
    ],
)
def test_comparison_levels(comparison, left, right, level):
    (row,) = _levels([({comparison: left}, {comparison: right})])
    assert row[comparison] == level


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        (("nathan", "miller", "nathan.miller@x.org"), ("nathan", None, "nathan.w.miller@x.org"), 0),
        (("nathan", "miller", "nathanamiller@x.org"), ("nathan", None, "nathanwmiller@x.org"), 0),
        (("john", "smith", "jsmith@x.org"), ("john", None, "jasmith@x.org"), 0),
        (("nathan", "miller", "nathan.miller@x.org"), ("nathan", None, "nathan.mille@x.org"), 1),
        (("mary", "rodriguez", "mary82@x.org"), ("mary", None, "mry82@x.org"), 1),
        (("patricia", "phillips", "patricia.p.phillips@x.org"), ("patricia", None, "patriciaphillips@x.org"), 0),
        (("joseph", "medina", "jmedina@x.org"), (None, "medina", "smedina@x.org"), 0),  # another initial
        (("thomas", "harris", "thomas_harris@x.org"), ("tom", "harris", "thomas.harris@x.org"), 0),
        (("andrew", "johnston", "andrewjohnston@x.org"), ("andrew", "johnson", "andrewjohnson@x.org"), 0),
        (("catherine", "adams", "catherineadams@x.org"), ("katherine", "adams", "katherineadams@x.org"), 0),
    ],
)
def test_how_namesakes_addresses_differ_is_no_slip(left, right, level):
    """Namesakes' addresses differ by a middle initial, an initial, a separator, or where their names
    differ; a letter dropped elsewhere is a slip the model weighs."""
    records = [{"first_name": f, "last_name": ln, "email": e} for f, ln, e in (left, right)]
    (row,) = _levels([(records[0], records[1])])
    assert row["email"] == level


@pytest.mark.parametrize(
    ("left", "right", "postal_code", "city"),
    [
        # The city says more only where the postal codes do not already agree; m and u of the two groups
        # of levels are measured apart, so agreeing on both is not counted twice.
        ({"postal_code": "10001", "city": "springfield"}, {"postal_code": "10001", "city": "springfield"}, 2, 5),
        ({"postal_code": "10001", "city": "springfield"}, {"postal_code": "10001", "city": "shelbyville"}, 2, 3),
        ({"postal_code": "10001", "city": "springfield"}, {"postal_code": "10002", "city": "springfield"}, 1, 2),
        ({"city": "springfield"}, {"postal_code": "10001", "city": "springfield"}, -1, 2),
        # The same street address already says the postal code and city agree.
        (
            {"address": "12 oak st", "postal_code": "10001", "city": "springfield"},
            {"address": "12 oak st", "postal_code": "10001", "city": "springfield"},
            -1,
            -1,
        ),
    ],
)
def test_postal_code_and_city_are_not_counted_twice(left, right, postal_code, city):
    (row,) = _levels([(left, right)])
    assert (row["postal_code"], row["city"]) == (postal_code, city)


def test_a_household_only_pair_goes_to_review_with_its_reason(tmp_path):
    records = background() + [
        person("x", "theodora", "winterbourne", address="12 harbour view rd", zip="10001"),
        person("y", None, "winterbourne", address="12 harbour view rd", zip="10001"),
    ]
    conn = warehouse(tmp_path, records)
    decision, probability = conn.execute(
        "select decision, match_probability from identity.review where left_record_id = 'x' and right_record_id = 'y'"
    ).fetchone()
    assert decision == "review: only household fields agree" and probability >= 0.5
    trusting = customers(warehouse(tmp_path, records, {"matching": {"person_evidence": []}}))
    assert trusting["x"] == trusting["y"]


def test_a_first_last_swap_is_undone_before_names_are_compared():
    (row,) = _levels(
        [
            (
                {"first_name": "theodora", "last_name": "winterbourne"},
                {"first_name": "winterbourne", "last_name": "theodora"},
            )
        ]
    )
    assert row["swapped"] and row["first_name"] == 4 and row["last_name"] == 3


def test_a_swap_whose_first_name_is_a_nickname_of_the_other_s_is_undone_and_read_as_one():
    """Signed surname first with a nickname ("Hill", "Tony") beside Anthony Hill: the evidence shows the
    surnames equal and the first names nicknames of each other, not two names that both differ; a pair
    whose names only share a first letter is not read as swapped."""
    rows = _levels(
        [
            ({"first_name": "anthony", "last_name": "hill"}, {"first_name": "hill", "last_name": "tony"}),
            ({"first_name": "tony", "last_name": "hill"}, {"first_name": "hill", "last_name": "anthony"}),
            ({"first_name": "anthony", "last_name": "hill"}, {"first_name": "hale", "last_name": "tom"}),
        ]
    )
    found = [(r["swapped"], r["first_name"], r["last_name"]) for r in rows]
    assert found == [(True, 3, 3), (True, 3, 3), (False, 0, 0)]


def test_an_e_mail_linked_within_the_people_sharing_it_is_no_evidence():
    """A family mailbox the deterministic layer linked person by person says nothing more between two of
    its records; a mistyped copy of it still does."""
    box = {"email": "browns@x.org", "email_local": "browns", "email_local_key": "browns", "email_domain": "x.org"}
    split = {**box, "email_split": True}
    slipped = {**box, "email": "browns@x.orgg", "email_domain": "x.orgg", "email_split": False}
    rows = _levels([(split, split), (box, box), (split, slipped)])
    assert [row["email"] for row in rows] == [-1, 3, 2]


def test_kept_term_frequencies_give_a_value_not_kept_the_share_of_its_records_and_keep_no_comparison_without_them():
    conn = duckdb.connect()
    conn.execute("create schema identity")
    conn.execute(
        "create table records as select * from (values ('ann', 'x'), ('ann', 'y'), ('bo', null)) t(first_name, city)"
    )
    sql = Sql(conn)
    # Comparisons weighed by no term frequency keep an empty table, and a later run finds it kept.
    save_term_frequencies(sql, "records", [])
    assert has_kept_term_frequencies(sql, [])
    save_term_frequencies(sql, "records", ["first_name", "city"])
    assert has_kept_term_frequencies(sql, ["first_name", "city"])
    conn.execute("insert into records values ('cy', 'x'), ('dee', null), ('dee', null)")
    fill_kept_term_frequencies(sql, "records", {"first_name": "tf_first", "city": "tf_city"})
    # ann (two of three names at training) keeps its share; bo (one then) and cy (new) get a single record's
    # share of training, dee (new, on two records) two records'; so does city x, on one record at training.
    assert conn.execute("select * from tf_first order by 1").fetchall() == [
        ("ann", 2 / 3, math.log2(2 / 3)),
        ("bo", 1 / 3, math.log2(1 / 3)),
        ("cy", 1 / 3, math.log2(1 / 3)),
        ("dee", 2 / 3, math.log2(2 / 3)),
    ]
    assert conn.execute("select * from tf_city order by 1").fetchall() == [("x", 1.0, 0.0), ("y", 0.5, -1.0)]


def _resolve_with_event(tmp_path, records: list[dict], overrides: str) -> dict[str, str]:
    """`records` and one web event (record `e1`) carrying loyalty card L-1, resolved with `overrides`."""
    (tmp_path / "overrides.csv").write_text("action,record,other,author,reason\n" + overrides)
    conn = warehouse(tmp_path, records, {"overrides": "overrides.csv", "identifier_types": {"loyalty": {}}})
    conn.execute(
        "insert into clean.events (source, event_id, source_record_id, event, occurred_at, file, row_number) "
        "values ('web', 'm1', 'e1', 'Page Viewed', timestamp '2025-01-01 10:00:00', 'w.jsonl', 1)"
    )
    conn.execute("insert into clean.events_identifiers values ('web', 'e1', 'loyalty', 'L-1', 'w.jsonl', 1)")
    resolve(Sql(conn), load_config(tmp_path / "cdp.yaml"))
    return dict(conn.execute("select source_record_id, customer_id from cdp.identity_map").fetchall())


def test_a_record_an_override_moves_takes_along_the_activity_joined_to_it_by_identifiers(tmp_path):
    """x and y are one customer by a probabilistic link, and an event joins y by its loyalty card: a
    cannot_link or an unmerge of y moves the event with it rather than leaving it with x. A person record
    joined to y by an identifier is not moved unless named: then nothing is taken along."""
    people = background() + [
        person("x", "theodora", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
        person(
            "y", "theodora", "winterbourne", dob=DOB, address="12 harbor view rd", zip="10001", ids={"loyalty": "L-1"}
        ),
    ]
    found = _resolve_with_event(tmp_path, people, "")
    assert found["x"] == found["y"] == found["e1"]
    for line in ("cannot_link,crm/x,crm/y,ana,two people\n", "unmerge,crm/y,,ana,not x\n"):
        found = _resolve_with_event(tmp_path, people, line)
        assert found["x"] != found["y"] == found["e1"], line
    with_card_holder = [*people, {"id": "y2", "ids": {"loyalty": "L-1"}}]
    found = _resolve_with_event(tmp_path, with_card_holder, "cannot_link,crm/x,crm/y,ana,two people\n")
    assert found["y"] != found["x"] == found["y2"] == found["e1"]
    found = _resolve_with_event(tmp_path, with_card_holder, "cannot_link,crm/x,loyalty:L-1,ana,two people\n")
    assert found["x"] != found["y"] == found["y2"] == found["e1"]


def test_an_order_under_an_e_mail_of_two_people_follows_them_once_matching_makes_them_one(tmp_path):
    """Zoe and Zeo Kruger share an e-mail and a phone: two three-letter names a letter apart could be two
    people's, so the sharing check lets neither value link, and matching (one birth date, surname and
    address) makes them one customer. The order carrying only the e-mail joins that customer. The order
    under an e-mail of two people matching keeps apart stays a customer of its own, as does one carrying
    both e-mails."""
    records = background() + [
        person("z1", "zoe", "kruger", dob=DOB, address="12 harbour view rd", zip="10001",
               email="zoe.kruger@example.org", phone="+12125550199"),
        person("z2", "zeo", "kruger", dob=DOB, address="12 harbour view rd", zip="10001",
               email="zoe.kruger@example.org", phone="+12125550199"),
        person("p1", "theodora", "winterbourne", dob=date(1950, 2, 3), address="1 elm st", zip="10002",
               email="family@example.org"),
        person("p2", "winifred", "winterbourne", dob=date(1982, 7, 9), address="1 elm st", zip="10002",
               email="family@example.org"),
    ]  # fmt: skip
    conn = warehouse(tmp_path, records)
    # o3 carries both e-mails: one names Zoe's customer, the other two people, so it names no one customer.
    orders = [("o1", "zoe.kruger@example.org"), ("o2", "family@example.org")]
    orders += [("o3", "zoe.kruger@example.org"), ("o3", "family@example.org")]
    for line, (order, email) in enumerate(orders):
        conn.execute(
            "insert into clean.events (source, event_id, source_record_id, event, occurred_at, file, row_number) "
            "values ('shop', ?, ?, 'Order Completed', timestamp '2025-01-01 10:00:00', 'o.jsonl', ?)",
            [f"{order}-{line}", order, line + 1],
        )
        conn.execute(
            "insert into clean.events_identifiers values ('shop', ?, 'email', ?, 'o.jsonl', ?)",
            [order, email, line + 1],
        )
    summary = resolve(Sql(conn), load_config(tmp_path / "cdp.yaml"))
    found = customers(conn)
    blocked = {v for (v,) in conn.execute("select id_value from identity.blocked_identifiers").fetchall()}
    assert {"zoe.kruger@example.org", "family@example.org"} <= blocked
    assert found["o1"] == found["z1"] == found["z2"]
    assert found["p1"] != found["p2"] and found["o2"] not in (found["p1"], found["p2"])
    assert found["o3"] not in (found["z1"], found["p1"], found["p2"], found["o2"])
    assert summary["activity_following_shared_values"] == 1


def _decision(conn: duckdb.DuckDBPyConnection, left: str, right: str) -> str:
    return conn.execute(
        "select decision from identity.evidence where left_record_id = ? and right_record_id = ?", [left, right]
    ).fetchone()[0]


def test_a_first_name_conflict_applies_only_where_records_sharing_an_e_mail_show_first_names_reliable(tmp_path):
    """x and y agree on everything but a first name none could be the other's: where one person's records
    (two sharing an e-mail and a birth date) keep their first name, that objects to the link (twins);
    where a fifth of them give another first name (re-keyed data, as in FEBRL), it does not, though the
    deterministic layer, splitting those e-mails by first name, leaves m measured on agreeing pairs only."""
    pair = [
        person("x", "theodora", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
        person("y", "winifred", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
    ]
    reliable = warehouse(tmp_path, background() + pair)
    assert _decision(reliable, "x", "y") == "conflict: first_name differs"

    rekeyed = background()
    rng = random.Random(3)
    for record in rekeyed[1::2]:
        if rng.random() < 0.2:
            record["first"] = rng.choice([f for f in FIRST if f != record["first"]])
    unreliable = warehouse(tmp_path, rekeyed + pair)
    assert _decision(unreliable, "x", "y") == "linked"


def test_namesakes_elsewhere_under_one_family_e_mail_leave_the_birth_date_conflict_in_force(tmp_path):
    """x and y share a name and an address but not a birth date (a parent and a child): the birth date
    conflict objects. Three Heloise Williamses in three towns under each of three family e-mails, born
    years apart, are several people sharing a mailbox, not one person giving several birth dates: they
    must not make birth dates look unreliable, which would let x and y link."""
    pair = [
        person("x", "theodora", "winterbourne", dob=DOB, address="12 harbour view rd", zip="10001"),
        person("y", "theodora", "winterbourne", dob=date(1961, 8, 2), address="12 harbour view rd", zip="10001"),
    ]
    namesakes = [
        person(
            f"hw{mailbox}{n}",
            "heloise",
            "williams",
            dob=date(1948 + 17 * n, 1 + mailbox + 3 * n, 5 + 7 * n),
            address=f"{n + 1} church rd",
            zip=f"{20000 + 100 * mailbox + n}",
            email=f"williams.family{mailbox}@example.org",
        )
        for mailbox in range(3)
        for n in range(3)
    ]
    conn = warehouse(tmp_path, background() + namesakes + pair)
    assert _decision(conn, "x", "y") == "conflict: date_of_birth differs"


def _level_weights(conn) -> dict[str, list[tuple[int, float]]]:
    weights: dict[str, list[tuple[int, float]]] = {}
    for name, level, weight in conn.execute(
        "select comparison, level, weight from identity.model order by all"
    ).fetchall():
        weights.setdefault(name, []).append((level, weight))
    return weights


def test_a_model_trained_on_a_small_file_ranks_exact_over_partial_over_different(tmp_path):
    """On few pairs m/u can come out in another order (a close value weighing more than the same value);
    the trained model's weights keep, within each level group, exact >= partial >= different."""
    conn = warehouse(tmp_path, background())
    weights = _level_weights(conn)
    assert set(weights) >= {"first_name", "last_name", "date_of_birth", "postal_code"}
    for name, levels in weights.items():
        by_level = dict(levels)
        for group in COMPARISONS[name].level_groups:
            lowest, exact = min(group), max(group)
            for level in group:
                assert by_level[lowest] - 1e-9 <= by_level[level] <= by_level[exact] + 1e-9, (name, by_level)


def test_u_over_every_pair_of_few_records_is_what_the_draws_measure_without_their_noise(tmp_path):
    """80 records have 6,320 ordered pairs: with a sample of at least that many draws each pair is compared
    once, counted as often as the draws would pick it; with fewer the pairs are drawn. Both must measure
    the same u, a level no stranger pair shows too (weighed against as many draws, not against the pairs)."""
    sql = Sql(warehouse(tmp_path, background(people=40)))
    names = ["first_name", "last_name", "date_of_birth", "email", "phone", "postal_code"]
    records = "identity.match_features"
    every_pair = estimate_u(sql, records, names, 1_000_000, seed=42)
    drawn = estimate_u(sql, records, names, 6_319, seed=42)
    drawn_more = estimate_u(sql, records, names, 6_319, seed=7)
    # Every pair, not a draw of them: the seed picks nothing.
    assert all(np.array_equal(every_pair[n], estimate_u(sql, records, names, 1_000_000, seed=7)[n]) for n in names)
    # A level no pair shows weighs 0.5 of a million draws, about 21 bits down, not 13 (0.5 of 6,320
    # pairs); one pair in 6,320 is 156 draws of a million, about 12.7 bits down.
    levels = np.concatenate([np.log2(every_pair[name]) for name in names])
    assert levels.min() < -20 and all(level < -20 or level > -13 for level in levels), levels
    for name in names:
        # Seen levels: within the draws' own spread, two seeds' samples apart.
        seen = drawn[name] > 1e-3
        spread = np.abs(np.log2(drawn[name][seen]) - np.log2(drawn_more[name][seen])).max()
        assert np.abs(np.log2(every_pair[name][seen]) - np.log2(drawn[name][seen])).max() <= max(2 * spread, 0.2)


def test_levels_out_of_order_are_pooled_keeping_m_summing_to_one():
    from cdp_assets.identity.matching.model import ordered_m

    # e-mail: a letter off (level 1) measured 30 times likelier among matches than strangers, exact 15 times.
    m, u = np.array([0.05, 0.3, 0.05, 0.6]), np.array([0.9, 0.01, 0.05, 0.04])
    pooled = ordered_m("email", m, u)
    assert pooled.sum() == pytest.approx(1.0)
    assert pooled[1] / u[1] == pytest.approx(pooled[3] / u[3]) == pytest.approx(0.9 / 0.05)
    assert list(pooled[[0, 2]]) == [0.05, 0.05]  # in order already: untouched
    # A partial level below different: pooled with it. Exact below different: the whole group pooled.
    pooled = ordered_m("phone", np.array([0.3, 0.01, 0.69]), np.array([0.6, 0.3, 0.1]))
    assert pooled[0] / 0.6 == pytest.approx(pooled[1] / 0.3) == pytest.approx(0.31 / 0.9)
    flat = ordered_m("phone", np.array([0.8, 0.1, 0.1]), np.array([0.2, 0.3, 0.5]))
    assert np.allclose(flat / np.array([0.2, 0.3, 0.5]), 1.0)
    # Partial levels are not ordered among themselves: a nickname may weigh less than a close spelling.
    m, u = np.array([0.02, 0.1, 0.2, 0.08, 0.6]), np.array([0.9, 0.04, 0.02, 0.02, 0.02])
    assert np.array_equal(ordered_m("first_name", m, u), m)


def test_links_decided_group_by_group_give_what_one_strongest_first_pass_gives(tmp_path):
    """Clustering decides each group of customers that links join on its own (on Spark, on the executors):
    every decision and every merged customer must be what applying all links in one order gives."""
    from cdp_assets.identity.clustering import ConstrainedUnion, Customer, FirstNames
    from cdp_assets.identity.matching.pipeline import _cluster

    config = load_config(write_config(tmp_path))
    rng = random.Random(5)
    first = ["ann", "anne", "mary", "mark", "bob", "robert", "jon", None]
    dates = ["19800101", "19800110", "19800111", "19751230", None]
    persons, components = 240, 90
    records = [(n, rng.choice(first), rng.choice(["lee", "ng", None]), rng.choice(dates)) for n in range(persons)]
    # Activity records (no matching row) after the persons; each node in one of the deterministic components.
    labels = np.array([rng.randrange(components) for _ in range(persons + 60)], dtype=np.int64)
    labels = np.array([np.flatnonzero(labels == c).min() for c in labels])
    # Few distinct weights, so ties are broken by record numbers, as they are in real runs.
    # Each pair once, as the scored pairs hold it.
    pairs = {tuple(sorted(rng.sample(range(persons), 2))) for _ in range(220)}
    links = [(a, b, float(rng.choice([3.5, 7.25, 7.25, 12.0, 20.5])), rng.random() < 0.9) for a, b in sorted(pairs)]
    sql = Sql.in_memory()
    sql.execute("create schema identity")  # where the decisions are kept for the next run
    sql.execute(
        "create table recs (node_id bigint, source varchar, source_record_id varchar, first_name varchar, "
        "last_name varchar, dob_text varchar)"
    )
    sql.execute(
        "insert into recs select * from (values "
        + ", ".join(
            f"({n}, 'crm', 'C{n:04d}', {sql_literal(f)}, {sql_literal(la)}, {sql_literal(d)})"
            for n, f, la, d in records
        )
        + ")"
    )
    sql.execute("create table node_labels (node_id bigint, component bigint)")
    sql.execute("insert into node_labels values " + ", ".join(f"({n}, {c})" for n, c in enumerate(labels)))
    sql.execute(
        "create table scores (l bigint, r bigint, match_weight double, match_probability double, "
        "person_evidence boolean, l_component bigint, r_component bigint, same_component boolean)"
    )
    sql.execute(
        "insert into scores values "
        + ", ".join(
            f"({a}, {b}, {w}, 0.99, {e}, {labels[a]}, {labels[b]}, {labels[a] == labels[b]})" for a, b, w, e in links
        )
    )
    conflicts = {c: COMPARISONS[c].conflict for c in ("date_of_birth", "first_name")}
    counts: dict[str, int] = {}
    for _, f, _, _ in records:
        if f is not None:
            counts[f] = counts.get(f, 0) + 1

    def cluster(reuse: bool, figures: dict[str, int]) -> tuple[list[int], dict[tuple[int, int], str]]:
        with sql.scratch("clustering") as tables:
            after = _cluster(
                sql,
                config,
                0.9,
                conflicts,
                "recs",
                "scores",
                "node_labels",
                None,
                tables,
                "decided",
                "after",
                FirstNames(counts),
                reuse,
                figures,
            )
            got = sql.arrays(f"select component from {after} order by node_id")["component"].tolist()
        decided = {(int(a), int(b)): d for a, b, d in sql.rows("select l, r, decision from decided")}
        sql.drop_table("decided")
        return got, decided

    decided_now: dict[str, int] = {}
    got, decided = cluster(False, decided_now)
    assert decided_now["groups"] >= 1 and decided_now["groups_kept"] == 0
    # Decided again with the decisions this pass kept (the model and settings unchanged), every group takes
    # its kept decisions, which are the ones deciding it gives.
    kept: dict[str, int] = {}
    assert cluster(True, kept) == (got, decided)
    assert kept["groups_kept"] == kept["groups"] == decided_now["groups"]
    # A link whose weight changed changes its group's rows: that group is decided again, as afresh.
    a, b, weight, _ = links[0]
    sql.execute(f"update scores set match_weight = {weight + 30} where l = {a} and r = {b}")
    changed: dict[str, int] = {}
    again = cluster(True, changed)
    assert changed["groups_kept"] == changed["groups"] - 1
    assert again == cluster(False, {})

    # One pass over every link, strongest first, ties by record numbers.
    applied = sorted(
        (link for link in links if link[3] and labels[link[0]] != labels[link[1]]),
        key=lambda link: (-link[2], link[0], link[1]),
    )
    involved = sorted({int(labels[a]) for a, *_ in applied} | {int(labels[b]) for _, b, *_ in applied})
    customers = []
    for component in involved:
        members = [r for r in records if labels[r[0]] == component]
        customers.append(
            Customer(
                person_records=len(members),
                birth_dates={d for *_, d in members if d},
                names={(f, la) for _, f, la, _ in members if f},
            )
        )
    union = ConstrainedUnion(customers, {}, config.identity.max_cluster_person_records, conflicts, FirstNames(counts))
    position = {c: i for i, c in enumerate(involved)}
    expected = {(a, b): union.merge(position[int(labels[a])], position[int(labels[b])]) for a, b, *_ in applied}
    assert decided == expected
    assert {"linked", "same customer"} <= set(expected.values()) and any(
        d.startswith("conflict") for d in expected.values()
    )
    root = {c: involved[union.find(position[c])] for c in involved}
    assert got == [root.get(int(c), int(c)) for c in labels]
