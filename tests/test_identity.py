"""Deterministic identity rules, case by case, on a hand-made warehouse: what links and what must not."""

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from cdp_assets.identity.inputs import read_inputs
from resources.config import load_config
from resources.sql import Sql
from tests.fixtures import customers
from tests.fixtures import identity_warehouse as warehouse

pytestmark = pytest.mark.stage


def resolve_records(tmp_path: Path, records: list[dict], identity: dict | None = None) -> dict[str, str]:
    """Write person records with their identifiers, resolve, return record id -> customer id."""
    return customers(warehouse(tmp_path, records, identity))


PHONE = "+12127365000"
D1, D2 = date(1970, 5, 1), date(1972, 9, 9)


@pytest.mark.parametrize(
    ("case", "records", "together"),
    [
        (
            "same person, same phone",
            [
                {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
                {"id": "b", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
            ],
            True,
        ),
        (
            "nickname and formal name",
            [
                {"id": "a", "first": "Robert", "dob": D1, "ids": {"phone": PHONE}},
                {"id": "b", "first": "Bob", "ids": {"phone": PHONE}},
            ],
            True,
        ),
        (
            "two short forms of one name",
            [
                {"id": "a", "first": "Jon", "ids": {"email": "j@x.org"}},
                {"id": "b", "first": "Johnny", "ids": {"email": "j@x.org"}},
            ],
            True,
        ),
        (
            "typo in the first name",
            [
                {"id": "a", "first": "Jonathan", "ids": {"phone": PHONE}},
                {"id": "b", "first": "Johnathan", "ids": {"phone": PHONE}},
            ],
            True,
        ),
        (
            "household landline",
            [
                {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
                {"id": "b", "first": "John", "dob": D2, "ids": {"phone": PHONE}},
            ],
            False,
        ),
        (
            "twins: one birthday, two names",
            [
                {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
                {"id": "b", "first": "Anna", "dob": D1, "ids": {"phone": PHONE}},
            ],
            False,
        ),
        (
            "family e-mail",
            [
                {"id": "a", "first": "Mary", "ids": {"email": "smiths@x.org"}},
                {"id": "b", "first": "Tom", "ids": {"email": "smiths@x.org"}},
            ],
            False,
        ),
        (
            "junk e-mail links nobody",
            [
                {"id": "a", "first": "Mary", "ids": {"email": "test@test.com"}},
                {"id": "b", "first": "Mary", "ids": {"email": "test@test.com"}},
            ],
            False,
        ),
        (
            "junk phone links nobody",
            [{"id": "a", "ids": {"phone": "+11234567890"}}, {"id": "b", "ids": {"phone": "+11234567890"}}],
            False,
        ),
        (
            "customer ids have no people limit",
            [
                {"id": "a", "first": "Mary", "ids": {"shop_id": "7"}},
                {"id": "b", "first": "John", "ids": {"shop_id": "7"}},
            ],
            True,
        ),
        (
            "the e-mail still links when the phone is shared",
            [
                {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE, "email": "mary@x.org"}},
                {"id": "b", "first": "John", "dob": D2, "ids": {"phone": PHONE}},
                {"id": "c", "first": "Mary", "ids": {"email": "mary@x.org"}},
            ],
            None,
        ),
    ],
)
def test_what_links_and_what_stays_apart(tmp_path, case, records, together):
    customers = resolve_records(tmp_path, records)
    if together is None:  # the last case: a and c together, b apart
        assert customers["a"] == customers["c"] != customers["b"]
    else:
        assert (customers["a"] == customers["b"]) is together, case


def test_limit_can_be_lifted_per_type(tmp_path):
    records = [
        {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "b", "first": "John", "dob": D2, "ids": {"phone": PHONE}},
    ]
    lifted = resolve_records(tmp_path, records, {"identifier_types": {"phone": {"max_people_per_value": None}}})
    assert lifted["a"] == lifted["b"]
    capped = resolve_records(tmp_path, records, {"identifier_types": {"phone": {"max_people_per_value": 2}}})
    assert capped["a"] == capped["b"]


def test_a_record_without_identifiers_is_its_own_customer(tmp_path):
    customers = resolve_records(tmp_path, [{"id": "lonely"}, {"id": "other", "ids": {"email": "o@x.org"}}])
    assert customers["lonely"].startswith("cus_") and customers["lonely"] != customers["other"]


@pytest.mark.parametrize("shape", ["random", "long chain"])
def test_components_by_label_propagation_match_scipy(shape):
    """Label propagation finds SciPy's components, on a random graph and on a deep one (a chain)."""
    from cdp_assets.identity.assets import _scipy_components, connected_components

    rng = np.random.default_rng(3)
    if shape == "random":
        node_count, value_count = 5000, 4000
        nodes, values = rng.integers(0, node_count, 6000), rng.integers(0, value_count, 6000)
    else:  # record i and i + 1 share value i: one component whose labels travel one step per round
        node_count = value_count = 200
        nodes = np.concatenate([np.arange(199), np.arange(1, 200)])
        values = np.concatenate([np.arange(199), np.arange(199)])
    fast = connected_components(node_count, value_count, nodes, values)
    reference = _scipy_components(node_count, value_count, nodes.astype(np.int64), values.astype(np.int64))
    assert len(np.unique(fast)) == len(np.unique(reference))
    assert len(set(zip(fast.tolist(), reference.tolist(), strict=True))) == len(np.unique(reference))
    if shape == "long chain":
        assert len(np.unique(fast)) == 1


def test_asset_checks_count_records_left_without_a_customer_and_mapped_twice(tmp_path):
    """The blocking checks see a record missing from the map once, however many versions it has, and a
    record mapped twice."""
    from cdp_assets.identity.assets import _checks, _summary
    from resources.config import load_config
    from resources.sql import Sql

    conn = warehouse(tmp_path, [{"id": "a", "first": "Ann"}, {"id": "b", "first": "Bea"}, {"id": "c"}])
    conn.execute(
        """insert into clean.person_records (source, source_record_id, file, row_number, is_latest, first_name)
           values ('crm', 'a', 'g.csv', 2, false, 'Anne')"""
    )
    conn.execute("delete from cdp.identity_map where source_record_id = 'a'")
    conn.execute("insert into cdp.identity_map select * from cdp.identity_map where source_record_id = 'b'")
    config = load_config(tmp_path / "cdp.yaml")
    sql = Sql(conn)
    with sql.scratch("test") as tables:
        per_customer = tables("per_customer")
        _summary(sql, per_customer)
        results = {r.check_name: r for r in _checks(sql, config, {"largest_cluster_person_records": 1}, per_customer)}
    complete, unique = results["every_record_has_a_customer"], results["identity_map_unique_records"]
    assert not complete.passed and complete.metadata["records_without_customer"].value == 1
    assert not unique.passed and unique.metadata["duplicate_records"].value == 1
    assert results["cluster_size_within_bound"].passed


def test_own_blocked_patterns_apply_with_the_built_in_ones(tmp_path):
    """A type's own pattern and the built-in ones are one expression; each still blocks, case-insensitively.
    Matching is off: only a shared value could join these records."""
    records = [
        {"id": id_, "first": "Mary", "dob": D1, "ids": {"loyalty": value}}
        for id_, value in [("a1", "test-123"), ("a2", "test-123"), ("a3", "TEST-9"), ("a4", "TEST-9")]
        + [("b1", "N/A"), ("b2", "N/A"), ("c1", "L-77"), ("c2", "L-77")]
    ]
    identity = {"identifier_types": {"loyalty": {"blocked_patterns": ["^test-"]}}, "matching": {"enabled": False}}
    conn = warehouse(tmp_path, records, identity)
    linked = customers(conn)
    assert len({linked[r] for r in ("a1", "a2", "a3", "a4", "b1", "b2")}) == 6
    assert linked["c1"] == linked["c2"]
    blocked = conn.execute("select id_value, reason from identity.blocked_identifiers order by 1").fetchall()
    assert blocked == [
        ("N/A", "matches a blocked pattern"),
        ("TEST-9", "matches a blocked pattern"),
        ("test-123", "matches a blocked pattern"),
    ]


def _with_overrides(tmp_path: Path, lines: str) -> dict:
    (tmp_path / "overrides.csv").write_text("action,record,other,author,reason\n" + lines)
    return {"overrides": "overrides.csv"}


def test_a_cannot_link_beats_a_shared_e_mail_and_a_must_link_joins_strangers(tmp_path):
    records = [
        {"id": "a", "first": "Pat", "last": "Ray", "email": "family@example.org"},
        {"id": "b", "first": "Pat", "last": "Ray", "email": "family@example.org"},
        {"id": "c", "first": "Kim", "last": "Ono", "email": "kim@example.org"},
        {"id": "d", "first": "Lu", "last": "Wu", "email": "lu@example.org"},
    ]
    automatic = resolve_records(tmp_path, records)
    assert automatic["a"] == automatic["b"] and automatic["c"] != automatic["d"]
    identity = _with_overrides(
        tmp_path,
        "cannot_link,crm/a,email:FAMILY@example.org,ana,twins\n"  # the value names both a and b: b leaves
        "must_link,crm/c,crm/d,ana,same person, new name\n".replace("same person, new name", '"same person, new name"'),
    )
    conn = warehouse(tmp_path, records, identity)
    ids = customers(conn)
    assert ids["a"] != ids["b"]
    assert ids["c"] == ids["d"]
    decisions = conn.execute(
        "select rule, decision from identity.evidence where rule like 'override%' order by 1"
    ).fetchall()
    assert decisions == [
        ("override line 2", "override: cannot_link by ana: twins"),
        ("override line 3", "override: must_link by ana: same person, new name"),
    ]


def test_a_must_link_a_cannot_link_forbids_is_refused_not_applied(tmp_path):
    records = [
        {"id": "a", "first": "Pat", "email": "pat@example.org"},
        {"id": "b", "first": "Bo", "email": "bo@example.org"},
        {"id": "c", "first": "Pat", "email": "pat@example.org"},
    ]
    # a and c share an e-mail; a cannot_link between b and c forbids joining b to a's customer.
    identity = _with_overrides(tmp_path, "cannot_link,crm/b,crm/c,li,no\nmust_link,crm/a,crm/b,ana,yes\n")
    ids = customers(warehouse(tmp_path, records, identity))
    assert ids["a"] == ids["c"] != ids["b"]


def test_a_family_mailbox_links_each_person_s_own_records_and_no_one_else_s(tmp_path):
    """Three people of one surname share a mailbox: it links each one's records, never two people, and a
    record that could be either of two people, or says nothing, gets no link from it."""
    box = "carpenters@x.org"
    records = [
        {"id": "m1", "first": "Michael", "last": "Carpenter", "dob": D1, "email": box},
        {"id": "m2", "first": "Mke", "last": "Carpenter", "email": box},
        {"id": "m3", "first": "Mike", "email": box},
        {"id": "j1", "first": "Jane", "last": "Carpenter", "dob": D2, "email": box},
        {"id": "j2", "first": "Jane", "email": box},
        {"id": "j3", "first": "Carpenter", "last": "J.", "email": box},
        {"id": "s1", "first": "Sara", "last": "Carpenter", "email": box},
        {"id": "s2", "dob": D1, "email": box},  # no name: Michael (same birthday) or Sara (none known)?
        {"id": "nobody", "email": box},
    ]
    conn = warehouse(tmp_path, records, {"matching": {"enabled": False}})
    ids = customers(conn)
    assert ids["m1"] == ids["m2"] == ids["m3"]
    assert ids["j1"] == ids["j2"] == ids["j3"]  # j3 signed with her names swapped
    assert len({ids["m1"], ids["j1"], ids["s1"], ids["s2"], ids["nobody"]}) == 5
    assert conn.execute("select reason from identity.shared_identifiers").fetchall() == [
        ("shared by 3 people: links within each",)
    ]
    assert conn.execute("select count(*) from identity.blocked_identifiers").fetchone() == (0,)
    linked = conn.execute("select source_record_id from identity.links where id_value = ? order by 1", [box]).fetchall()
    assert [r for (r,) in linked] == ["j1", "j2", "j3", "m1", "m2", "m3"]


def test_a_german_name_with_its_umlauts_spelt_out_is_one_persons_name(tmp_path):
    """A shop without umlauts writes Jürgen Müller as Juergen Mueller, and both spellings are common in
    German data: the two records under one e-mail are one person, and a household's Uwe still is not."""
    many = [
        {"id": f"{name}{i}", "first": name, "dob": date(1950 + i, 1, 2)}
        for name in ("Jürgen", "Juergen")
        for i in range(5)
    ]
    records = many + [
        {"id": "crm", "first": "Jürgen", "last": "Müller", "dob": D1, "ids": {"email": "j.mueller@web.de"}},
        {"id": "shop", "first": "Juergen", "last": "Mueller", "ids": {"email": "j.mueller@web.de"}},
        {"id": "crm2", "first": "Käthe", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "shop2", "first": "Uwe", "dob": D2, "ids": {"phone": PHONE}},
    ]
    ids = resolve_records(tmp_path, records)
    assert ids["crm"] == ids["shop"]
    assert ids["crm2"] != ids["shop2"]


def test_a_record_signed_surname_first_is_one_person_with_a_nickname_or_beside_no_surname(tmp_path):
    """A shop form filled in surname first ("Hill", "Tony") beside the CRM's Anthony Hill, and "Fischer",
    "Wolfgang" beside a CRM contact without a surname (a placeholder cleaned away): under one e-mail or
    phone each pair is one person, for the sharing check and for clustering alike, while another first
    name still objects."""
    records = [
        {"id": "crm", "first": "Anthony", "last": "Hill", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "shop", "first": "Hill", "last": "Tony", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "crm2", "first": "Wolfgang", "dob": D2, "ids": {"email": "wf@x.org"}},
        {"id": "shop2", "first": "Fischer", "last": "Wolfgang", "ids": {"email": "wf@x.org"}},
        {"id": "crm3", "first": "Klaus", "dob": D2, "ids": {"email": "k@x.org"}},
        {"id": "shop3", "first": "Fischer", "last": "Wolfgang", "ids": {"email": "k@x.org"}},
    ]
    ids = resolve_records(tmp_path, records)
    assert ids["crm"] == ids["shop"]
    assert ids["crm2"] == ids["shop2"]
    assert ids["crm3"] != ids["shop3"]


def test_a_name_in_another_script_does_not_object_to_its_transliteration(tmp_path):
    """A CRM keeps Ольга Смирнова in Cyrillic and the loyalty system, in Latin-1, as Olga Smirnova: under
    one phone and one birth date they are one person; another name in the same script still objects."""
    records = [
        {"id": "crm", "first": "Ольга", "last": "Смирнова", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "pos", "first": "Olga", "last": "Smirnova", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "crm2", "first": "Ольга", "dob": D1, "ids": {"email": "o@x.org"}},
        {"id": "crm3", "first": "Елена", "dob": D1, "ids": {"email": "o@x.org"}},
    ]
    ids = resolve_records(tmp_path, records)
    assert ids["crm"] == ids["pos"]
    assert ids["crm2"] != ids["crm3"]


def test_a_shared_value_whose_people_have_one_record_each_links_nobody(tmp_path):
    records = [
        {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "b", "first": "John", "dob": D2, "ids": {"phone": PHONE}},
    ]
    conn = warehouse(tmp_path, records)
    assert conn.execute("select reason from identity.blocked_identifiers").fetchall() == [
        ("shared by 2 people (max_people_per_value 1)",)
    ]
    assert conn.execute("select count(*) from identity.shared_identifiers").fetchone() == (0,)


def test_linking_within_a_shared_value_can_be_turned_off(tmp_path):
    records = [
        {"id": "a", "first": "Mary", "dob": D1, "ids": {"phone": PHONE}},
        {"id": "b", "first": "Mary", "ids": {"phone": PHONE}},
        {"id": "c", "first": "John", "dob": D2, "ids": {"phone": PHONE}},
    ]
    assert len({*resolve_records(tmp_path, records).values()}) == 2
    phone = {"normalize": "phone", "max_people_linked_within": 0}
    off = {"identifier_types": {"phone": phone}, "matching": {"enabled": False}}
    assert len({*resolve_records(tmp_path, records, off).values()}) == 3


@pytest.mark.parametrize(
    ("left", "right", "one_person"),
    [
        (("mke", "carpenter"), ("michael", "carpenter"), True),  # a slip in a nickname of the other
        (("mke", None), ("mikey", None), True),
        (("carpenter", "j."), ("james", "carpenter"), True),  # names swapped, the first an initial
        (("hill", "tony"), ("anthony", "hill"), True),  # names swapped, the first a nickname
        (("hill", "tony"), ("anthony", "smith"), False),
        (("fischer", "wolfgang"), ("wolfgang", None), True),  # swapped, beside one without a surname
        (("wolfgang", None), ("fischer", "wolfgang"), True),
        (("w", None), ("fischer", "wolfgang"), False),  # an initial alone is no surname
        (("fischer", "wolfgang"), ("klaus", None), False),
        (("tim", None), ("thomas", None), False),  # Tim is one slip from Tom, but a Timothy
        (("jan", None), ("jennifer", None), False),
        (("mark", None), ("mary", None), False),
        (("brown", "c."), ("brown", "k"), False),  # two of the Browns, each signing surname first
        (("brown", "c."), ("brown", "c"), True),
        (("rné", "dubois"), ("rené", "dubois"), True),  # a letter dropped from a common name
        (("rne", None), ("rené", None), True),  # and its accent with it
        (("ann", None), ("anna", None), False),  # a letter apart, both common: two names
        (("jürgen", "müller"), ("juergen", "mueller"), True),  # an umlaut spelt out, both spellings common
        (("juergen", None), ("jurgen", None), True),
        (("käthe", None), ("kaethe", None), True),
        (("joe", None), ("jo", None), False),  # an e at the end is no umlaut: two names
        (("hans", "meier"), ("johannes", "meier"), True),  # a European short form, both common
        (("gosia", None), ("małgorzata", None), True),
        (("hans", None), ("klaus", None), False),
        (("ольга", "смирнова"), ("olga", "smirnova"), True),  # one name in two scripts
        (("伟", "王"), ("wei", "wang"), True),
        (("ольга", None), ("елена", None), False),  # two names in one script
    ],
)
def test_first_names_one_person_could_carry(left, right, one_person):
    from cdp_assets.identity.clustering import FirstNames

    counts = {"michael": 500, "mike": 200, "mikey": 20, "mke": 3, "tim": 100, "timothy": 300, "thomas": 400}
    counts |= {"jan": 50, "jennifer": 900, "jen": 100, "mark": 300, "mary": 300, "james": 600, "carpenter": 2}
    counts |= {"rené": 300, "rné": 1, "rne": 1, "ann": 200, "anna": 250}
    counts |= {"hans": 300, "johannes": 200, "gosia": 40, "małgorzata": 90, "klaus": 150}
    counts |= {"jürgen": 300, "juergen": 120, "jurgen": 80, "käthe": 40, "kaethe": 30, "joe": 90, "jo": 60}
    assert FirstNames(counts).compatible(left, right) is one_person


def test_which_activity_records_there_are_is_read_and_how_many_rows_each_has_is_not(tmp_path):
    """Identity skips a run when what it reads is as the last run left it. It numbers activity records, so a
    new one (here without any identifier: its own customer) is a change, while another event of a record it
    knows, giving no new identifier, is not."""
    conn = warehouse(tmp_path, [{"id": "a", "ids": {"email": "a@x.org"}}])
    sql, config = Sql(conn), load_config(tmp_path / "cdp.yaml")

    def fingerprint(name: str) -> str:
        return read_inputs(sql, config, "v", "s", name).records

    def event(record: str, row: int) -> None:
        conn.execute(
            "insert into clean.events (source, event_id, source_record_id, event, file, row_number) "
            "values ('web', ?, ?, 'page', 'e.jsonl', ?)",
            [f"e{row}", record, row],
        )

    event("browser-1", 1)
    before = fingerprint("activity_1")
    event("browser-1", 2)
    assert fingerprint("activity_2") == before
    event("browser-2", 3)
    with_browser = fingerprint("activity_3")
    assert with_browser != before
    conn.execute(
        "insert into clean.transactions (source, event_id, source_record_id, file, row_number) "
        "values ('shop', 'o1', 'order-1', 'o.jsonl', 1)"
    )
    assert fingerprint("activity_4") != with_browser
