"""Identifier normalisers, declared once: what each `normalize` kind of identifier type means.

An identifier type in the configuration (`identity.identifier_types.<type>.normalize`) names one of
these. Each declaration says what the configuration validator and the stages need to know about it:
the built-in values that identify nobody, how many people may share a value before it links nobody,
whether it is a contact field of person records, its text limit, and whether ad audiences can hash it.
The cleaning rule that makes a value's match key is registered under the same name in
cdp_assets/clean/rules.py (MATCH_KEYS); a test keeps the two in step. Adding a normaliser is one entry
here and one there.

The e-mail and phone rules shared by cleaning and ad-audience hashing (the Gmail domains, reading a
number as E.164) live here too, so both read one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

# Values that identify nobody, whatever the identifier type: blocked from linking records.
DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    r"^[0\-\s]*$",
    r"^-1$",
    r"^(null|none|nil|n/?a|unknown|anonymous)$",
)


@dataclass(frozen=True)
class IdentifierNormaliser:
    """One kind of identifier value and its defaults (added to by an identifier type's own settings)."""

    name: str
    blocked_values: tuple[str, ...] = ()
    blocked_patterns: tuple[str, ...] = ()
    max_people_per_value: int | None = None
    # A person record's own field of this kind (its e-mail, its phone): junk values of it are no
    # matching evidence either, and the probabilistic layer compares it as its own comparison.
    contact: bool = False
    text_limit_field: str = "identifier"  # the canonical field whose text limit applies (clean/rules.py)
    hashed: bool = False  # ad audiences can hash it (resources/hashing.py)
    # A built-in identifier type of this name is declared with these defaults.
    default_type: bool = False


NORMALISERS: dict[str, IdentifierNormaliser] = {
    n.name: n
    for n in [
        IdentifierNormaliser(
            "email",
            blocked_values=(
                "test@test.com",
                "test@example.com",
                "noemail@noemail.com",
                "none@none.com",
                "no@email.com",
                "na@na.com",
            ),
            blocked_patterns=(r"^(no-?e?mail|noreply|no-reply|donotreply|none|test)@",),
            max_people_per_value=1,
            contact=True,
            text_limit_field="email",
            hashed=True,
            default_type=True,
        ),
        IdentifierNormaliser(
            "phone",
            blocked_values=("+11234567890", "+15555555555", "+10000000000"),
            max_people_per_value=1,
            contact=True,
            text_limit_field="phone",
            hashed=True,
            default_type=True,
        ),
        IdentifierNormaliser("id"),
    ]
}
DEFAULT_NORMALISER = "id"
HASHED_KINDS: tuple[str, ...] = tuple(n.name for n in NORMALISERS.values() if n.hashed)


def hashed_kind(column: str) -> str | None:
    """The identifier kind a profile column holds for an ad audience: `email`/`emails` e-mails,
    `phone`/`phones` phones; None for any other column.

    Read from the column a hashed field maps to, never from the field's own name: `contact_sha256: email`
    is an e-mail, and a field named `mail_sha256` mapped to `phone` is a phone."""
    kind = column.removesuffix("s")
    return kind if kind in HASHED_KINDS else None


def contact_kinds() -> list[str]:
    return [n.name for n in NORMALISERS.values() if n.contact]


GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def parse_e164(text: str, region: str) -> tuple[str | None, str | None]:
    """(E.164 form, reason): a number read as one of `region` where it has no country code, or None and
    why not. Only numbers libphonenumber considers valid are kept: an impossible number matches nobody."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None, f"not a phone number (read as {region})"
    if not phonenumbers.is_valid_number(number):
        return None, f"not a valid phone number for {phonenumbers.region_code_for_number(number) or region}"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None
