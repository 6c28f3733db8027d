"""Identifier hashing against vectors fixed in the test, so a change to the rules cannot pass unnoticed.

The hex digests are literals computed once outside this module (they agree with `sha256sum`), not
recomputed with the code under test.
"""

import pytest

from resources.hashing import (
    REASON_BAD_EMAIL,
    REASON_BAD_PHONE,
    REASON_MISSING,
    HashResult,
    hash_identifier,
    hash_rows,
    is_sha256_hex,
    normalize_email,
    normalize_phone,
    sha256_hex,
)

pytestmark = pytest.mark.unit

SHA_TEST_GMAIL = "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"  # test@gmail.com
SHA_TESTUSER_TAG = "d33002a2c6329ed1708e1e7c27bdede32240e4a3fa44dfd842e65978f5ec9689"  # testuser+x@gmail.com
SHA_TEST_DOT_USER_TAG = "56f80ff8dfa3d0fe0c8674c9e58fca87b9e725dec4773eba1fdbbba65973a091"  # test.user+x@gmail.com
SHA_JANE = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"  # jane.doe@example.com
SHA_PHONE_PLUS = "36a2cef4ff9bf7a1abd2a93359136b870393be4106e6c5d19b72ff564f9deca4"  # +14155550123
SHA_PHONE_DIGITS = "413ba75461ab5f99d36820e561ea97e2bd80f9cb586f7ecea6cf4c496518950a"  # 14155550123
SHA_UK_PLUS = "f0bf0228144d9fe2bdf1da2d8ca698f17bf1410ee688b075c27062e47b6f0b6d"  # +442079460958


@pytest.mark.parametrize(
    ("text", "digest"),
    [
        ("test@gmail.com", SHA_TEST_GMAIL),
        ("testuser+x@gmail.com", SHA_TESTUSER_TAG),
        ("+14155550123", SHA_PHONE_PLUS),
        ("14155550123", SHA_PHONE_DIGITS),
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ],
)
def test_sha256_hex_matches_known_vectors(text: str, digest: str) -> None:
    assert sha256_hex(text) == digest


@pytest.mark.parametrize(
    ("raw", "gmail_dots", "expected"),
    [
        (" Test@Gmail.com ", False, "test@gmail.com"),
        (" Test.User+x@Gmail.com ", True, "testuser+x@gmail.com"),  # dots go, the +tag stays
        (" Test.User+x@Gmail.com ", False, "test.user+x@gmail.com"),
        ("first.last@GoogleMail.com", True, "firstlast@googlemail.com"),
        ("Jane.Doe@Example.com", True, "jane.doe@example.com"),  # the dot rule is Gmail's alone
        ("jane.doe@mail.gmail.com", True, "jane.doe@mail.gmail.com"),  # a subdomain is not gmail.com
        ("no-at-sign.example.com", False, None),
        ("@example.com", False, None),
        ("jane@", False, None),
        ("jane doe@example.com", False, None),
        ("jane@example", False, None),
        ("jane@@example.com", False, None),
        ("jane@example..com", False, None),
        ("...@gmail.com", True, None),
        ("   ", False, None),
    ],
)
def test_normalize_email(raw: str, gmail_dots: bool, expected: str | None) -> None:
    assert normalize_email(raw, gmail_dots=gmail_dots) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-0123", "US", "+14155550123"),
        ("(415) 555-0123", "US", "+14155550123"),
        ("415.555.0123", "US", "+14155550123"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+44 20 7946 0958", "US", "+442079460958"),  # an explicit country code beats the region
        ("0000000000", "US", None),
        ("12", "US", None),
        ("call me", "US", None),
        ("", "US", None),
    ],
)
def test_normalize_phone(raw: str, region: str, expected: str | None) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SHA_TEST_GMAIL, True),
        (SHA_TEST_GMAIL.upper(), True),
        (SHA_TEST_GMAIL[:-1], False),
        (SHA_TEST_GMAIL + "0", False),
        ("g" + SHA_TEST_GMAIL[1:], False),
        ("test@gmail.com", False),
    ],
)
def test_is_sha256_hex(value: str, expected: bool) -> None:
    assert is_sha256_hex(value) is expected


@pytest.mark.parametrize(
    ("value", "kind", "options", "expected"),
    [
        ("test@gmail.com", "email", {}, HashResult(SHA_TEST_GMAIL)),
        ("  TEST@gmail.COM ", "email", {}, HashResult(SHA_TEST_GMAIL)),
        (" Test.User+x@Gmail.com ", "email", {"gmail_dots": True}, HashResult(SHA_TESTUSER_TAG)),
        (" Test.User+x@Gmail.com ", "email", {}, HashResult(SHA_TEST_DOT_USER_TAG)),
        ("Jane.Doe@example.com", "email", {"gmail_dots": True}, HashResult(SHA_JANE)),
        # Google: E.164 with the plus. Meta: the same digits without it.
        ("+1 (415) 555-0123", "phone", {}, HashResult(SHA_PHONE_PLUS)),
        ("+1 (415) 555-0123", "phone", {"phone_plus": False}, HashResult(SHA_PHONE_DIGITS)),
        ("(415) 555-0123", "phone", {"phone_plus": False}, HashResult(SHA_PHONE_DIGITS)),
        ("020 7946 0958", "phone", {"default_region": "GB"}, HashResult(SHA_UK_PLUS)),
        # Already hashed: passed through lower-cased, never hashed again, whatever the options.
        (SHA_TEST_GMAIL.upper(), "email", {}, HashResult(SHA_TEST_GMAIL, None, already_hashed=True)),
        (f"  {SHA_PHONE_PLUS}  ", "phone", {"phone_plus": False}, HashResult(SHA_PHONE_PLUS, None, True)),
        # Rejected, with the reason.
        ("not-an-email", "email", {}, HashResult(None, REASON_BAD_EMAIL)),
        ("jane@example", "email", {}, HashResult(None, REASON_BAD_EMAIL)),
        ("0000000000", "phone", {}, HashResult(None, REASON_BAD_PHONE)),
        ("call me maybe", "phone", {}, HashResult(None, REASON_BAD_PHONE)),
        ("(415) 555-0123", "phone", {"default_region": "GB"}, HashResult(None, REASON_BAD_PHONE)),
        (SHA_TEST_GMAIL[:63], "email", {}, HashResult(None, REASON_BAD_EMAIL)),  # almost a digest is not one
        (None, "email", {}, HashResult(None, REASON_MISSING)),
        ("   ", "phone", {}, HashResult(None, REASON_MISSING)),
    ],
)
def test_hash_identifier(value: str | None, kind: str, options: dict, expected: HashResult) -> None:
    assert hash_identifier(value, kind, **options) == expected


def test_hash_identifier_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown identifier kind"):
        hash_identifier("x", "zip")  # type: ignore[arg-type]


FIELDS = {"email": "email", "phone": "phone"}


@pytest.mark.parametrize(
    ("rows", "options", "expected_rows", "expected_rejects"),
    [
        pytest.param(
            [{"id": 1, "email": "Test@Gmail.com", "phone": "+1 (415) 555-0123"}],
            {},
            [{"id": 1, "email": SHA_TEST_GMAIL, "phone": SHA_PHONE_PLUS}],
            [],
            id="all-valid",
        ),
        pytest.param(
            [{"id": 1, "email": "Test@Gmail.com", "phone": "0000000000"}],
            {},
            [{"id": 1, "email": SHA_TEST_GMAIL, "phone": None}],
            [(0, "phone", REASON_BAD_PHONE)],
            id="kept-with-one-valid-field",
        ),
        pytest.param(
            [{"id": 1, "email": "Test@Gmail.com", "phone": None}],
            {},
            [{"id": 1, "email": SHA_TEST_GMAIL, "phone": None}],
            [],
            id="an-empty-field-is-not-a-reject",
        ),
        pytest.param(
            [{"id": 1, "email": "nope", "phone": "12"}],
            {},
            [],
            [(0, "email", REASON_BAD_EMAIL), (0, "phone", REASON_BAD_PHONE)],
            id="dropped-with-no-valid-field",
        ),
        pytest.param(
            [{"id": 1, "email": "", "phone": float("nan")}],
            {},
            [],
            [(0, "email", REASON_MISSING), (0, "phone", REASON_MISSING)],
            id="dropped-when-empty",
        ),
        pytest.param(
            [{"id": 1, "phone": 4155550123.0}],
            {"phone_plus": False},
            [{"id": 1, "email": None, "phone": SHA_PHONE_DIGITS}],
            [],
            id="spreadsheet-float-phone-and-absent-email",
        ),
        pytest.param(
            [
                {"id": 1, "email": "bad", "phone": ""},
                {"id": 2, "email": SHA_JANE.upper(), "phone": "bad"},
                {"id": 3, "email": " Test.User+x@Gmail.com ", "phone": "(415) 555-0123"},
            ],
            {"gmail_dots": True, "phone_plus": False},
            [
                {"id": 2, "email": SHA_JANE, "phone": None},
                {"id": 3, "email": SHA_TESTUSER_TAG, "phone": SHA_PHONE_DIGITS},
            ],
            [(0, "email", REASON_BAD_EMAIL), (0, "phone", REASON_MISSING), (1, "phone", REASON_BAD_PHONE)],
            id="mixed-batch-keeps-going",
        ),
    ],
)
def test_hash_rows(rows: list[dict], options: dict, expected_rows: list[dict], expected_rejects: list) -> None:
    assert hash_rows(rows, FIELDS, **options) == (expected_rows, expected_rejects)


def test_hash_rows_leaves_its_input_alone() -> None:
    rows = [{"email": "test@gmail.com", "name": "Test"}]
    hashed, _ = hash_rows(rows, {"email": "email"})
    assert hashed == [{"email": SHA_TEST_GMAIL, "name": "Test"}]
    assert rows == [{"email": "test@gmail.com", "name": "Test"}]


def test_hash_rows_needs_a_field() -> None:
    with pytest.raises(ValueError, match="at least one"):
        hash_rows([{"email": "test@gmail.com"}], {})
