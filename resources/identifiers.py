"""Identifier normalisers, declared once: what each `normalize` kind of identifier type means.

An identifier type in the configuration (`identity.identifier_types.<type>.normalize`) names one of
these. Each declaration says everything the configuration validator and the stages need to know about
it: its cleaning rule (the function from a raw value to its clean value, match key and reason), the
rule's outputs and which of them is the match key, whether the rule reads the record's country, the
built-in values that identify nobody, how many people may share a value before it links nobody, whether
it is a contact field of person records, its text limit, and whether ad audiences can hash it.

The cleaning stage (cdp_assets/clean/assets.py) builds one map per normaliser from these declarations
(ids, `kept_as_written`, have none), and the identity stage normalises configured blocked values with
`match_key`. Adding a normaliser is one entry in NORMALISERS (plus, only if it is a new contact field of
person records, that field itself).

The rules live here, not in cdp_assets/clean/rules.py (which re-exports them), so the declarations can
name them; so do the e-mail and phone rules shared by cleaning and ad-audience hashing (the Gmail
domains, reading a number as E.164), so both read one definition.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

import phonenumbers

from resources.sql import sql_literal

Result = tuple[str | None, str | None]

# Values that identify nobody, whatever the identifier type: blocked from linking records.
DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    r"^[0\-\s]*$",
    r"^-1$",
    r"^(null|none|nil|n/?a|unknown|anonymous)$",
)


# ---------------------------------------------------------------- the normalisers' cleaning rules

# Values that mean "no value": missing, not errors.
FILLERS = frozenset({"", "null", "none", "nil", "n/a", "na", "-", "--", "nan", "unknown", "?", "undefined"})


def is_missing(raw: object) -> bool:
    return raw is None or str(raw).strip().lower() in FILLERS


GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

_EMAIL_RE = re.compile(
    r"^(?!\.)(?!.*\.\.)[a-z0-9.!#$%&'*+/=?^_`{|}~-]+(?<!\.)"
    r"@(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{0,58}[a-z0-9])$"
)


# The local part of an internationalised address (RFC 6531): letters and digits of any script, with the
# ASCII specials and dot rules of `_EMAIL_RE`.
_UNICODE_LOCAL_RE = re.compile(r"^(?!\.)(?!.*\.\.)[\w.!#$%&'*+/=?^`{|}~-]+(?<!\.)$")


# A display name before the address in angle brackets: "Anna Schmidt" <anna@gmx.de>, Schmidt, Anna <anna@gmx.de>.
_NAMED_ADDRESS_RE = re.compile(r"^[^<>@]*<\s*([^<>\s]+@[^<>\s]+)\s*>$")


def _internationalised(text: str) -> tuple[str, str] | None:
    """(address, address with its domain in ASCII) of a lower-cased address with letters beyond ASCII
    (hanna@müller.de, zoë@exämple.org), or None when it is not one. The domain's ASCII form (IDNA,
    `xn--mller-kva.de`) is what mail servers resolve, so the two spellings of one domain match."""
    local, at, domain = unicodedata.normalize("NFC", text).rpartition("@")
    if not at or not _UNICODE_LOCAL_RE.match(local):
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    if not _EMAIL_RE.match(f"a@{ascii_domain}"):
        return None
    return f"{local}@{domain}", f"{local}@{ascii_domain}"


def clean_email(raw: object) -> tuple[str | None, str | None, str | None]:
    """(address, match_key, reason). The address is trimmed and lower-cased; the match key also folds
    `+tags` (all providers) and dots in the local part (Gmail only), so jane.doe+shop@gmail.com and
    janedoe@gmail.com match while the address a person typed is kept as they typed it. An address with
    letters beyond ASCII is kept as typed, and matched with its domain in ASCII (IDNA)."""
    if is_missing(raw):
        return None, None, None
    text = str(raw).strip()
    named = _NAMED_ADDRESS_RE.match(text)
    if named:  # "Anna Schmidt" <anna@gmx.de>, as mail programs and CRMs export a contact
        text = named.group(1)
    text = text.strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    text = text.lower()
    keyed = text
    if not _EMAIL_RE.match(text):
        international = None if text.isascii() else _internationalised(text)
        if international is None:
            return None, None, _several_addresses(text) or "not a valid e-mail address"
        text, keyed = international
    local, _, domain = keyed.rpartition("@")
    key_local = local.split("+", 1)[0] or local
    if domain in GMAIL_DOMAINS:
        key_local = key_local.replace(".", "")
        domain = "gmail.com"
    return text, f"{key_local}@{domain}", None


def _several_addresses(text: str) -> str | None:
    """Why a value holding several addresses (`ann@x.org; ann@y.org`, as CRMs export a contact's other
    addresses) is refused, naming how many and the separator (never the addresses), or None. A field takes
    one address: which of them is the person's is not for cleaning to guess."""
    parts = [p for p in re.split(r"[;,\s]+", text) if p]
    if len(parts) < 2 or not all(_EMAIL_RE.match(p) for p in parts):
        return None
    separator = next((c for c in ";," if c in text), " ")
    return (
        f"holds {len(parts)} e-mail addresses separated by '{separator}', where one is expected: export one "
        "address per column and map each (another identifier path of type email links the others)"
    )


def email_sql_shortcut(raw: str) -> tuple[str, dict[str, str]]:
    """(condition, SQL per output) for the e-mails whose `clean_email` outcome SQL decides: addresses of
    ASCII letters, digits and `._+-` before one `@` and a domain `_EMAIL_RE` accepts, with none of the dots it
    refuses (leading, doubled, ending the local part) and a domain of at most 253 characters; these are
    valid, so their address is the lower-cased value and their key is `clean_email`'s. Tests compare both."""
    text = f"lower({raw})"
    local, domain = f"split_part({text}, '@', 1)", f"split_part({text}, '@', 2)"
    condition = (
        f"coalesce(regexp_full_match({raw}, '[!-~]+') and regexp_full_match({text}, "
        "'[a-z0-9._+-]+@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}') "
        f"and not starts_with({text}, '.') and not contains({text}, '..') and not contains({text}, '.@') "
        f"and length({domain}) <= 253, false)"
    )
    untagged = f"coalesce(nullif(split_part({local}, '+', 1), ''), {local})"
    gmail = ", ".join(sql_literal(d) for d in sorted(GMAIL_DOMAINS))
    key = (
        f"case when {domain} in ({gmail}) then replace({untagged}, '.', '') || '@gmail.com' "
        f"else {untagged} || '@' || {domain} end"
    )
    return condition, {"email": text, "match_key": key, "reason": "null::varchar"}


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


def clean_phone(raw: object, region: str | None = "US") -> Result:
    """E.164 (`+14155550147`), reading numbers without a country code as numbers of `region`."""
    if is_missing(raw):
        return None, None
    text = str(raw).strip()
    if text.endswith(".0") and text[:-2].isdigit():  # a spreadsheet turned the number into a float
        text = text[:-2]
    if text.startswith("00"):
        text = "+" + text[2:]
    return parse_e164(text, region or "US")


# The phone rule's outcome, decided in SQL for the values whose outcome is certain: a national number of
# ten digits in one of the common North American layouts, which libphonenumber reads as country code 1
# and those ten digits whatever the layout (without `+1`, only when the record's country is US), and
# which is valid as a US number. Its validity is libphonenumber's own test (`_number_type_helper` on the
# US metadata: the general pattern, then any number type's pattern), run by DuckDB over the metadata's
# own patterns; a valid US number is valid for `is_valid_number`, since US comes first among the
# regions of country code 1 and has no leading digits. Any other value, or a number not valid as a US
# number (it may still be a valid Canadian one), is left to `clean_phone`; tests compare both on
# every layout.
_NANP_LAYOUTS = (
    r"[2-9][0-9]{9}",
    r"[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}",
    r"[2-9][0-9]{2}\.[0-9]{3}\.[0-9]{4}",
    r"\([2-9][0-9]{2}\) [0-9]{3}-[0-9]{4}",
)
_NANP_INTERNATIONAL = r"\+1 [2-9][0-9]{2} [0-9]{3} [0-9]{4}"
_US_NUMBER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


def _us_valid_sql(nsn: str) -> str | None:
    """SQL for libphonenumber's `_number_type_helper(nsn, US) != UNKNOWN` on a ten-digit `nsn`, or None
    when the installed metadata is not shaped as this assumes (the shortcut is then not taken)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("US")
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(1, ())
    if metadata is None or not regions or regions[0] != "US" or metadata.leading_digits is not None:
        return None

    def matches(desc: object) -> str | None:
        pattern = getattr(desc, "national_number_pattern", None)
        lengths = getattr(desc, "possible_length", None) or ()
        if desc is None or not pattern or (lengths and 10 not in lengths):
            return None
        if any(token in pattern for token in ("(?=", "(?!", "(?<", "\\b", "\\1")):
            return "unsupported"
        return f"regexp_full_match({nsn}, {sql_literal(pattern)})"

    general = matches(metadata.general_desc)
    kinds = [
        matches(getattr(metadata, kind))
        for kind in _US_NUMBER_TYPES
        if not (kind == "mobile" and metadata.same_mobile_and_fixed_line_pattern)
    ]
    tests = [k for k in kinds if k is not None]
    if general is None or "unsupported" in (general, *tests) or not tests:
        return None
    return f"({general} and ({' or '.join(tests)}))"


def phone_sql_shortcut(raw: str, region: str) -> tuple[str, dict[str, str]] | None:
    """(condition, SQL per output) for the phone values whose clean value SQL decides (see _NANP_LAYOUTS);
    None if it decides none."""
    nsn = f"right(regexp_replace({raw}, '[^0-9]', '', 'g'), 10)"
    # The validity test matches the digits against several patterns: bound once by a lambda, they are
    # extracted once per value rather than once per pattern.
    valid = _us_valid_sql("__nsn")
    if valid is None:
        return None
    national = " or ".join(f"regexp_full_match({raw}, {sql_literal(layout)})" for layout in _NANP_LAYOUTS)
    laid_out = f"(({region} = 'US' and ({national})) or regexp_full_match({raw}, {sql_literal(_NANP_INTERNATIONAL)}))"
    valid_digits = f"list_transform([{nsn}], lambda __nsn: {valid})[1]"
    return f"coalesce({laid_out} and {valid_digits}, false)", {"phone": f"'+1' || {nsn}", "reason": "null::varchar"}


def clean_identifier(raw: object) -> Result:
    """Ids are compared as trimmed strings; "12.0" from a spreadsheet float is read as "12"."""
    if is_missing(raw):
        return None, None
    text = str(raw).strip()
    if re.fullmatch(r"\d+\.0", text):
        text = text[:-2]
    return text, None


# ---------------------------------------------------------------- the normalisers


@dataclass(frozen=True)
class IdentifierNormaliser:
    """One kind of identifier value: its cleaning rule and its defaults (added to by an identifier type's
    own settings)."""

    name: str
    _: KW_ONLY
    # The cleaning rule: a raw value (and, when `reads_region`, the country its record is in, which a
    # phone number without a country code is read as) to one value per name in `outputs`. One output is
    # `reason`, why the value was refused (None if it was not); `key` names the one values of this kind
    # are compared in, its match key. Cleaning runs the rule once per distinct value into the step's
    # table `<name>_map` (raw, region when read, then the outputs), which also serves the person
    # records' own field of this name for a `contact` normaliser.
    rule: Callable[..., tuple]
    outputs: tuple[str, ...]
    key: str
    # SQL deciding the rule's outcome for the values it is sure of, from the SQL of the map's input columns:
    # (condition, SQL per output), or None. Cleaning runs the rule only on the other values.
    sql_shortcut: Callable[..., tuple[str, dict[str, str]] | None] | None = None
    reads_region: bool = False
    # Cleaning keeps values of this kind trimmed as written instead of applying the rule (no map); the
    # rule then only gives configured blocked values their match key.
    kept_as_written: bool = False
    blocked_values: tuple[str, ...] = ()
    blocked_patterns: tuple[str, ...] = ()
    max_people_per_value: int | None = None
    # A person record's own field of this kind (its e-mail, its phone): junk values of it are no
    # matching evidence either, and the probabilistic layer compares it as its own comparison.
    contact: bool = False
    text_limit_field: str = "identifier"  # the canonical field whose text limit applies (config/sources.py)
    hashed: bool = False  # ad audiences can hash it (resources/hashing.py)
    # A built-in identifier type of this name is declared with these defaults.
    default_type: bool = False

    def __post_init__(self) -> None:
        if self.key not in self.outputs or "reason" not in self.outputs or self.key == "reason":
            raise ValueError(f"normaliser {self.name}: outputs {self.outputs} need `reason` and the key {self.key!r}")

    def clean(self, raw: object, region: str | None = "US") -> dict[str, str | None]:
        """The rule's outputs for one value, by name."""
        inputs = (raw, region) if self.reads_region else (raw,)
        return dict(zip(self.outputs, self.rule(*inputs), strict=True))

    def match_key(self, raw: object, region: str | None = "US") -> str | None:
        """The form `raw` is compared in, read as a value of a record in `region`; None if it has none."""
        return self.clean(raw, region)[self.key]

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns of its map the rule reads: the raw value, and the record's country if it reads one."""
        return ("raw", "region") if self.reads_region else ("raw",)


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
            rule=clean_email,
            outputs=("email", "match_key", "reason"),
            sql_shortcut=email_sql_shortcut,
            key="match_key",
            max_people_per_value=1,
            contact=True,
            text_limit_field="email",
            hashed=True,
            default_type=True,
        ),
        IdentifierNormaliser(
            "phone",
            rule=clean_phone,
            outputs=("phone", "reason"),
            sql_shortcut=phone_sql_shortcut,
            key="phone",
            reads_region=True,
            blocked_values=("+11234567890", "+15555555555", "+10000000000"),
            max_people_per_value=1,
            contact=True,
            text_limit_field="phone",
            hashed=True,
            default_type=True,
        ),
        IdentifierNormaliser("id", rule=clean_identifier, outputs=("id", "reason"), key="id", kept_as_written=True),
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
