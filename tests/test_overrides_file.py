"""The manual identity overrides file (resources/config/overrides.py): what it accepts and how it fails."""

from pathlib import Path

import pytest

from resources.config.overrides import OverrideError, load_overrides

pytestmark = pytest.mark.unit

SOURCES = ["crm", "shop"]
TYPES = ["email", "phone"]
HEADER = "action,record,other,author,reason\n"


def load(tmp_path: Path, body: str):
    path = tmp_path / "overrides.csv"
    path.write_text(HEADER + body)
    return load_overrides(path, SOURCES, TYPES)


def test_records_and_identifier_values_are_both_sides(tmp_path: Path) -> None:
    overrides = load(
        tmp_path,
        "must_link,crm/C-1,shop/S/7,ana,Confirmed on the phone\n"
        "# a comment line\n"
        "cannot_link,email:Pat@Example.com,crm/C-2,ana,Twins\n"
        "unmerge,shop/S-9,,li,Colleague's ticket\n",
    )
    assert [(o.line, o.action) for o in overrides] == [(2, "must_link"), (4, "cannot_link"), (5, "unmerge")]
    assert (overrides[0].other.source, overrides[0].other.record_id) == ("shop", "S/7")
    assert (overrides[1].record.id_type, overrides[1].record.value) == ("email", "Pat@Example.com")


def test_a_file_saved_by_excel_with_a_byte_order_mark_and_crlf_line_ends_loads(tmp_path: Path) -> None:
    path = tmp_path / "overrides.csv"
    path.write_bytes(
        ("\ufeff" + HEADER + "must_link,crm/C-1,shop/S-1,ana,Same person\n").replace("\n", "\r\n").encode()
    )
    (override,) = load_overrides(path, SOURCES, TYPES)
    assert (override.action, override.record.record_id, override.other.record_id) == ("must_link", "C-1", "S-1")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("merge,crm/C-1,crm/C-2,ana,x\n", "line 2: action: unknown action 'merge'"),
        ("must_link,crm/C-1,crm/C-2,,x\n", "line 2: author: empty; every override needs an author and a reason"),
        ("must_link,erp/E-1,crm/C-2,ana,x\n", "line 2: record: begins with 'erp', which is neither"),
        ("must_link,crm/C-1,emial:pat@x.org,ana,x\n", "line 2: other: begins with 'emial', which is neither"),
        ("must_link,crm/C-1,email:,ana,x\n", "line 2: other: names no email value"),
        ("must_link,crm/,shop/S-1,ana,x\n", "line 2: record: names no record id after 'crm/'"),
        ("must_link,crm/C-1,shop/ ,ana,x\n", "line 2: other: names no record id after 'shop/'"),
        ("unmerge,crm/C-1,crm/C-2,ana,x\n", "line 2: other: unmerge takes one side"),
        ("must_link,crm/C-1,,ana,x\n", "line 2: other: must_link needs both"),
        ("must_link,crm/C-1,crm/C-1,ana,x\n", "line 2: other: the same side as 'record'"),
        ("must_link,crm/C-1,ana,x\n", "line 2: expected 5 fields"),
    ],
)
def test_a_bad_line_fails_naming_the_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(OverrideError, match="overrides.csv: " + message.replace("(", r"\(")):
        load(tmp_path, body)


def test_every_mistake_of_the_file_is_reported_at_once_naming_its_line_and_column(tmp_path: Path) -> None:
    body = (
        "must_link,crm/A,crm/B,ana,fine\n"
        "merge,crm/C,crm/D,ana,x\n"
        "must_link,erp/E,crm/F,,x\n"
        "must_link,crm/G,shop/H,ana\n"
        "unmerge,crm/I,crm/J,li,\n"
        "cannot_link,crm/B,crm/A,li,twins\n"
    )
    with pytest.raises(OverrideError) as raised:
        load(tmp_path, body)
    path = tmp_path / "overrides.csv"
    assert raised.value.problems == [
        f"{path}: line 3: action: unknown action 'merge'; use one of must_link, cannot_link, unmerge",
        f"{path}: line 4: record: begins with 'erp', which is neither <source>/<record id> with a configured "
        "source (crm, shop) nor <identifier type>:<value> with a configured type (email, phone)",
        f"{path}: line 4: author: empty; every override needs an author and a reason",
        f"{path}: line 5: expected 5 fields (action,record,other,author,reason), found 4",
        f"{path}: line 6: other: unmerge takes one side; leave 'other' empty",
        f"{path}: line 6: reason: empty; every override needs an author and a reason",
        f"{path}: line 7 says its record and other are never one customer, but must_link line(s) 2 join them; "
        "remove one of the two",
    ]
    assert str(raised.value) == "\n".join(raised.value.problems)


def test_a_cannot_link_between_sides_must_links_join_fails_naming_every_line(tmp_path: Path) -> None:
    body = (
        "must_link,crm/A,crm/B,ana,x\n"
        "must_link,shop/C,crm/B,ana,x\n"
        "must_link,crm/X,crm/Y,ana,x\n"
        "cannot_link,crm/A,shop/C,li,y\n"
    )
    with pytest.raises(
        OverrideError,
        match=r"line 5 says its record and other are never one customer, but must_link line\(s\) 2, 3 join",
    ):
        load(tmp_path, body)


def test_a_wrong_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "overrides.csv"
    path.write_text("a,b\n")
    with pytest.raises(OverrideError, match="line 1: the header must be exactly"):
        load_overrides(path, SOURCES, TYPES)


@pytest.mark.parametrize(
    "body",
    [
        "must_link,email:pat.secret@example.com,email:pat.secret@example.com,ana,x\n",
        "must_link,crm/0035g000007Cb0Lnyy,email:pat.secret@example.com,ana,x\n"
        "cannot_link,email:pat.secret@example.com,crm/0035g000007Cb0Lnyy,li,y\n",
        "must_link,Pat Secret <pat.secret@example.com>,crm/C-1,ana,x\n",
        "must_link,crm/C-1,pat.secret@example.com:crm,ana,x\n",
    ],
)
def test_a_failure_never_quotes_a_customer_value(tmp_path: Path, body: str) -> None:
    """The error reaches the run history of the identity run that read the file: lines and columns only."""
    with pytest.raises(OverrideError) as raised:
        load(tmp_path, body)
    assert "pat.secret" not in str(raised.value) and "0035g" not in str(raised.value)
    assert "overrides.csv: line" in str(raised.value)
