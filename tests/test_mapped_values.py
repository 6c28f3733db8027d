"""A mapped field that takes one value reads one value: a JSON list or object where a source's mapping
expects a name, an id or a time is quarantined naming the path, never loaded as its JSON text. Each test
cleans hand-written raw rows in an in-memory warehouse and checks that raw rows = cleaned rows + rows
quarantined whole."""

import pytest

from cdp_assets.clean.assets import clean_activity, clean_person_records
from resources.sql import Sql
from tests.fixtures import raw_json_warehouse

pytestmark = pytest.mark.stage

AT = "2025-06-01T10:00:00Z"
# The reasons a list or an object at a one-value field is quarantined with, for a field.
LIST_OF = "{} is a list where a single value is expected"
OBJECT_OF = "{} is an object where a single value is expected"
TRUTH_OF = "{} is true or false where text or a number is expected"


def _rejects(sql: Sql, source: str) -> list[tuple]:
    return sql.rows(
        "select row_number, field, value, reason, scope from cdp.quarantine where source = ? "
        "order by row_number, field",
        [source],
    )


def _accounted_for(counts: dict[str, int], raw_rows: int) -> bool:
    return counts["cleaned"] + counts["rows_quarantined"] == raw_rows


PEOPLE = {
    "name": "shop",
    "format": "jsonl",
    "glob": "shop/*.jsonl",
    "role": "person",
    "record_id": "id",
    "fields": {"first_name": "first_name", "last_name": "last_name", "email": "email", "city": "address.city"},
    "consent": {"email_marketing": "opt_in"},
    "identifiers": [{"path": "email", "type": "email"}, {"path": "loyalty", "type": "loyalty_card"}],
}


def test_a_list_or_object_where_a_person_field_takes_one_value_is_quarantined(tmp_path):
    rows = [
        {"id": "c1", "first_name": ["Ann", "Bob"], "last_name": "Lee", "email": "ann@example.org", "opt_in": "yes"},
        {"id": "c2", "first_name": "Cy", "last_name": {"family": "Diaz"}, "email": ["cy@example.org"]},
        {"id": ["c3", "c4"], "first_name": "Di", "email": "di@example.org"},
        {"id": "c5", "first_name": "Eve", "address": {"city": ["Oslo"]}, "opt_in": ["yes"], "loyalty": {"n": 7}},
        {"id": "c6", "first_name": "Fay", "last_name": "Fox", "email": "fay@example.org", "loyalty": 7},
    ]
    config, sql = raw_json_warehouse(tmp_path, [PEOPLE], {"shop": rows})
    counts = clean_person_records(sql, config)

    assert _rejects(sql, "shop") == [
        (1, "first_name", '["Ann","Bob"]', LIST_OF.format("first_name"), "value"),
        (2, "email", '["cy@example.org"]', LIST_OF.format("email"), "value"),
        (2, "last_name", '{"family":"Diaz"}', OBJECT_OF.format("last_name"), "value"),
        (3, "id", '["c3","c4"]', LIST_OF.format("id"), "row"),
        (4, "address.city", '["Oslo"]', LIST_OF.format("address.city"), "value"),
        (4, "loyalty", '{"n":7}', OBJECT_OF.format("loyalty"), "value"),
        (4, "opt_in", '["yes"]', LIST_OF.format("opt_in"), "value"),
    ]
    # The record keeps its other values; no JSON text reaches a cleaned field, an identifier or a consent.
    assert sql.rows(
        "select source_record_id, first_name, last_name, email, city from clean.person_records order by 1"
    ) == [
        ("c1", None, "Lee", "ann@example.org", None),
        ("c2", "Cy", None, None, None),
        ("c5", "Eve", None, None, None),
        ("c6", "Fay", "Fox", "fay@example.org", None),
    ]
    assert sql.rows("select source_record_id, id_type, id_value from clean.person_identifiers order by all") == [
        ("c1", "email", "ann@example.org"),
        ("c6", "email", "fay@example.org"),
        ("c6", "loyalty_card", "7"),
    ]
    assert sql.rows("select source_record_id, granted from clean.consent_statements") == [("c1", True)]
    assert _accounted_for(counts, len(rows))


def test_true_or_false_where_a_field_takes_text_is_quarantined_but_a_consent_reads_it(tmp_path):
    """JSON's true read as text would be the name "true" (and "True" once cased): only a consent takes it."""
    rows = [
        {"id": "c1", "first_name": True, "last_name": "Lee", "email": "ann@example.org", "opt_in": True},
        {"id": "c2", "first_name": "Cy", "email": False, "loyalty": True, "opt_in": False},
        {"id": True, "first_name": "Di", "email": "di@example.org"},
        {"id": "c4", "first_name": "Eve", "address": {"city": False}, "loyalty": 7},
    ]
    config, sql = raw_json_warehouse(tmp_path, [PEOPLE], {"shop": rows})
    counts = clean_person_records(sql, config)

    assert _rejects(sql, "shop") == [
        (1, "first_name", "true", TRUTH_OF.format("first_name"), "value"),
        (2, "email", "false", TRUTH_OF.format("email"), "value"),
        (2, "loyalty", "true", TRUTH_OF.format("loyalty"), "value"),
        (3, "id", "true", TRUTH_OF.format("id"), "row"),
        (4, "address.city", "false", TRUTH_OF.format("address.city"), "value"),
    ]
    assert sql.rows("select source_record_id, first_name, email, city from clean.person_records order by 1") == [
        ("c1", None, "ann@example.org", None),
        ("c2", "Cy", None, None),
        ("c4", "Eve", None, None),
    ]
    assert sql.rows("select source_record_id, id_type, id_value from clean.person_identifiers order by all") == [
        ("c1", "email", "ann@example.org"),
        ("c4", "loyalty_card", "7"),
    ]
    assert sql.rows("select source_record_id, granted from clean.consent_statements order by 1") == [
        ("c1", True),
        ("c2", False),
    ]
    assert _accounted_for(counts, len(rows))


def test_of_several_paths_the_one_read_decides(tmp_path):
    """`{path: [a, b]}` reads the first that holds a value: a list there is refused, a list in a path after
    a value is never read."""
    source = {**PEOPLE, "fields": {"first_name": {"path": ["given", "first_name"]}}, "consent": {}, "identifiers": []}
    rows = [
        {"id": "c1", "given": "Ann", "first_name": ["Ann", "Bob"]},
        {"id": "c2", "given": " ", "first_name": ["Cy"]},
        {"id": "c3", "given": ["Di"], "first_name": "Di"},
    ]
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": rows})
    clean_person_records(sql, config)
    assert _rejects(sql, "shop") == [
        (2, "given | first_name", '["Cy"]', "first_name is a list where a single value is expected", "value"),
        (3, "given | first_name", '["Di"]', "given is a list where a single value is expected", "value"),
    ]
    assert sql.rows("select source_record_id, first_name from clean.person_records order by 1") == [
        ("c1", "Ann"),
        ("c2", None),
        ("c3", None),
    ]


def test_a_list_or_object_where_an_event_or_order_field_takes_one_value_is_quarantined(tmp_path):
    events = {
        "name": "web",
        "format": "jsonl",
        "glob": "web/*.jsonl",
        "role": "events",
        "record_id": "user",
        "event_id": "mid",
        "fields": {"occurred_at": "at", "event": "name", "status": "state"},
    }
    orders = {
        "name": "orders",
        "format": "jsonl",
        "glob": "orders/*.jsonl",
        "role": "transactions",
        "record_id": "customer",
        "event_id": "id",
        "fields": {"occurred_at": "at", "amount": "total", "currency": "currency"},
    }
    web_rows = [
        {"user": "u1", "mid": "m1", "at": AT, "name": ["Viewed", "Clicked"], "state": "ok"},
        {"user": "u2", "mid": ["m2"], "at": AT, "name": "Viewed"},
        {"user": "u3", "mid": "m3", "at": {"utc": AT}, "name": "Viewed"},
        {"user": "u4", "mid": "m4", "at": AT, "name": "Viewed", "state": {"code": 1}},
    ]
    order_rows = [
        {"customer": "c1", "id": "o1", "at": AT, "total": [12.5], "currency": "EUR"},
        {"customer": "c2", "id": "o2", "at": AT, "total": "7.00", "currency": ["EUR", "USD"]},
        {"customer": ["c3"], "id": "o3", "at": AT, "total": "8.00"},
    ]
    config, sql = raw_json_warehouse(
        tmp_path, [{**PEOPLE, "consent": {}}, events, orders], {"web": web_rows, "orders": order_rows}
    )
    web_counts = clean_activity(sql, config, "events")
    order_counts = clean_activity(sql, config, "transactions")

    assert _rejects(sql, "web") == [
        (1, "name", '["Viewed","Clicked"]', LIST_OF.format("name"), "value"),
        (2, "mid", '["m2"]', LIST_OF.format("mid"), "row"),
        (3, "at", '{"utc":"2025-06-01T10:00:00Z"}', OBJECT_OF.format("at"), "row"),
        (4, "state", '{"code":1}', OBJECT_OF.format("state"), "value"),
    ]
    assert sql.rows("select event_id, event, status from clean.events order by 1") == [
        ("m1", None, "ok"),
        ("m4", "Viewed", None),
    ]
    assert _rejects(sql, "orders") == [
        (1, "total", "[12.5]", LIST_OF.format("total"), "row"),
        (2, "currency", '["EUR","USD"]', LIST_OF.format("currency"), "value"),
        (3, "customer", '["c3"]', LIST_OF.format("customer"), "row"),
    ]
    assert sql.rows("select event_id, amount::varchar, currency from clean.transactions") == [("o2", "7.00", None)]
    assert _accounted_for(web_counts, len(web_rows)) and _accounted_for(order_counts, len(order_rows))


def test_a_path_through_a_value_that_is_not_an_object_is_quarantined_naming_what_was_found(tmp_path):
    """`address.city` where `address` is a string finds nothing: refused naming the path and what `address`
    is, with the value found there, where a missing or null `address` is simply no city."""
    source = {
        **PEOPLE,
        "fields": {"first_name": "first_name", "city": "address.city", "postal_code": "address.zip.code"},
        "consent": {},
        "identifiers": [{"path": "contact.email", "type": "email"}],
    }
    rows = [
        {"id": "c1", "first_name": "Ann", "address": "12 Main St, Oslo", "contact": {"email": "ann@example.org"}},
        {"id": "c2", "first_name": "Bo", "address": ["Oslo"], "contact": "bo@example.org"},
        {"id": "c3", "first_name": "Cy", "address": {"city": "Rome", "zip": 12345}, "contact": None},
        {"id": "c4", "first_name": "Di", "address": None},
        {"id": "c5", "first_name": "Eve", "address": {"zip": {"code": "02134"}}, "contact": {}},
        {"id": "c6", "first_name": "Fay", "address": True},
    ]
    config, sql = raw_json_warehouse(tmp_path, [source], {"shop": rows})
    counts = clean_person_records(sql, config)
    city, code = "address.city cannot be read: ", "address.zip.code cannot be read: "
    assert _rejects(sql, "shop") == [
        (1, "address.city", "12 Main St, Oslo", city + "address is a string, not an object", "value"),
        (1, "address.zip.code", "12 Main St, Oslo", code + "address is a string, not an object", "value"),
        (2, "address.city", '["Oslo"]', city + "address is a list, not an object", "value"),
        (2, "address.zip.code", '["Oslo"]', code + "address is a list, not an object", "value"),
        (
            2,
            "contact.email",
            "bo@example.org",
            "contact.email cannot be read: contact is a string, not an object",
            "value",
        ),
        (3, "address.zip.code", "12345", code + "address.zip is a number, not an object", "value"),
        (6, "address.city", "true", city + "address is true or false, not an object", "value"),
        (6, "address.zip.code", "true", code + "address is true or false, not an object", "value"),
    ]
    assert sql.rows("select source_record_id, first_name, city, postal_code from clean.person_records order by 1") == [
        ("c1", "Ann", None, None),
        ("c2", "Bo", None, None),
        ("c3", "Cy", "Rome", None),
        ("c4", "Di", None, None),
        ("c5", "Eve", None, "02134"),
        ("c6", "Fay", None, None),
    ]
    assert sql.rows("select source_record_id, id_value from clean.person_identifiers") == [("c1", "ann@example.org")]
    assert _accounted_for(counts, len(rows))


def test_an_event_path_through_a_value_that_is_not_an_object_is_quarantined(tmp_path):
    """The same for an event's fields, its JSON ones too: a time behind a string quarantines the row, the
    properties behind one only the value, even where a later path of the field holds some."""
    events = {
        "name": "web",
        "format": "jsonl",
        "glob": "web/*.jsonl",
        "role": "events",
        "record_id": "user",
        "fields": {"occurred_at": "meta.at", "event": "name", "properties": {"path": ["data.props", "props"]}},
    }
    rows = [
        {"user": "u1", "meta": {"at": AT}, "name": "Viewed", "data": "none", "props": {"sku": "B2"}},
        {"user": "u2", "meta": "yesterday", "name": "Viewed"},
        {"user": "u3", "meta": {"at": AT}, "name": "Bought", "data": {"props": {"sku": "A1"}}},
        {"user": "u4", "meta": {"at": AT}, "name": "Left", "data": None, "props": {"sku": "C3"}},
    ]
    config, sql = raw_json_warehouse(tmp_path, [{**PEOPLE, "consent": {}}, events], {"web": rows})
    counts = clean_activity(sql, config, "events")
    assert _rejects(sql, "web") == [
        (1, "data.props | props", "none", "data.props cannot be read: data is a string, not an object", "value"),
        (2, "meta.at", "yesterday", "meta.at cannot be read: meta is a string, not an object", "row"),
    ]
    assert sql.rows("select source_record_id, event, properties::varchar from clean.events order by 1") == [
        ("u1", "Viewed", None),
        ("u3", "Bought", '{"sku":"A1"}'),
        ("u4", "Left", '{"sku":"C3"}'),
    ]
    assert _accounted_for(counts, len(rows))
