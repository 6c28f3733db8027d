"""Cleaning rules for person fields: pure functions from a raw value to a clean value or a reason.

Each rule returns `(clean, reason)`: a clean value, or None with the reason it was refused, which the
cleaning stage writes to quarantine. Empty values and fillers such as "n/a" are missing, not errors.
They are plain functions so they can be tested row by row with the nasty cases, and the cleaning stage
applies them once per distinct value.

The identifier normalisers' rules (e-mail, phone, ids) and `is_missing` are declared with the normalisers
in resources/identifiers.py, and the text limits with the canonical fields in resources/config/sources.py,
and imported here, so there is one implementation of each.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import date, datetime

import phonenumbers

from resources.config.sources import CONTROL_CHARACTERS as CONTROL_CHARACTERS
from resources.config.sources import text_limit as text_limit
from resources.identifiers import FILLERS
from resources.identifiers import Result as Result
from resources.identifiers import clean_email as clean_email
from resources.identifiers import clean_identifier as clean_identifier
from resources.identifiers import clean_phone as clean_phone
from resources.identifiers import is_missing as is_missing
from resources.sql import sql_literal
from resources.tables import AMOUNT_TYPE

_SPACES = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


# Letters that carry no accent to strip but are written without one in ASCII, by the usual transliteration
# (Straße as Strasse, Ørsted as Orsted, Łódź as Lodz); DuckDB's strip_accents leaves them as they are.
_PLAIN_SPELLINGS = {
    "ß": "ss",
    "ẞ": "SS",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "þ": "th",
    "Þ": "TH",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "Ð": "D",
    "ħ": "h",
    "Ħ": "H",
    "ı": "i",
}
_PLAIN_TABLE = str.maketrans(_PLAIN_SPELLINGS)


def fold_accents(text: str) -> str:
    """`text` as it is spelt without accents: Jürgen and Jurgen, Sören and Soren, Straße and Strasse are
    one spelling to compare. Records from one country's systems keep the accents and another's drop them,
    and a name compared with its accents would count one person as two. Letters of other scripts are kept
    (a Cyrillic or Greek name is not emptied). The same fold as fold_accents_sql, and like it, text all
    ASCII is returned as it is: it has nothing to replace or decompose (most values, and a character-by-
    character pass over them was most of the address rule's time)."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text.translate(_PLAIN_TABLE))
    return "".join(ch for ch in decomposed if not unicodedata.category(ch).startswith("M"))


def fold_accents_sql(expr: str) -> str:
    """fold_accents in DuckDB SQL over a column `expr`: strip_accents removes the marks (categories Mn,
    Mc, Me) of the canonical decomposition, as fold_accents does, once the plain spellings are replaced;
    a value all ASCII (as many bytes as characters) is left as it is, without the replacements."""
    folded = expr
    for letter, plain in _PLAIN_SPELLINGS.items():
        folded = f"replace({folded}, {sql_literal(letter)}, {sql_literal(plain)})"
    return f"(case when strlen({expr}) = length({expr}) then {expr} else strip_accents({folded}) end)"


# German spells ä, ö and ü out as ae, oe and ue where a keyboard or a system lacks them (Jürgen as Juergen,
# Käthe as Kaethe, Königsweg as Koenigsweg), while the accent fold reads Jürgen as Jurgen: the spellings
# are one once an e after a, o or u is dropped, inside the word: no German name ends in an umlaut, while
# Joe and Jo, Zoe and Zo are other names. Both spellings are common in German data, so neither is a typo
# of the other.
_SPELT_OUT_UMLAUT = re.compile(r"(?<=[aou])e(?=.)", re.IGNORECASE)


@functools.lru_cache(maxsize=1 << 16)
def umlauts_dropped(letters: str) -> str:
    """A folded word with the e of a spelt-out umlaut dropped ("juergen" and "jurgen" -> "jurgen")."""
    return _SPELT_OUT_UMLAUT.sub("", letters)


def umlauts_dropped_sql(word: str) -> str:
    """umlauts_dropped in SQL over an upper-case word: the pairs replaced in turn, in all but the last
    letter, without the lookbehind RE2 lacks (a replacement joins an A, O or U to what followed the E, so
    no pair a later replacement reads is made or unmade)."""
    body = f"left({word}, length({word}) - 1)"
    for vowel in "AOU":
        body = f"replace({body}, '{vowel}E', '{vowel}')"
    return f"({body} || right({word}, 1))"


# ---------------------------------------------------------------- free text

# Free-text fields are bounded by `text_limit` and refuse CONTROL_CHARACTERS (both declared with the canonical
# fields in resources/config/sources.py, which the collector reads too); the cleaning stage applies them in
# SQL before any other rule.
# Tabs and line breaks inside a value become one space, as runs of spaces do in the name rules.
LINE_BREAKS = r"[\t\r\n]+"


# ---------------------------------------------------------------- names

# Titles and salutations written before a name, English and European: Herr and Frau, Monsieur and Madame,
# Señor and Señora, Signor and Signora, Dutch heer and mevrouw, and academic titles (Dipl.-Ing., Mag.,
# Dott.). Ones that are also given names or surnames (Don, Pan, Sig) are left out, and so is "M." (an
# initial as often as Monsieur).
_TITLES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "rev"}
    | {"herr", "hr", "frau", "fr", "fräulein", "frl", "dipl", "dipl.-ing", "ing", "mag", "univ.-prof"}
    | {"monsieur", "mme", "madame", "mlle", "mademoiselle"}
    | {"sr", "sra", "srta", "señor", "señora", "señorita", "dña", "doña", "dª", "dott", "dott.ssa", "sig.ra"}
    | {"signor", "signora", "signorina", "dhr", "mevr", "dr.med", "dr.-ing"}
)
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "v", "phd", "md", "esq", "dds"})
# Name particles written lower case inside a name ("st", "la", "le" are left out: St Paul, Costa La Rosa).
_INNER_PARTICLES = frozenset(
    {"van", "von", "de", "da", "del", "della", "di", "du", "der", "den", "ter", "ten", "zu", "am"}
)
# Particles that begin a surname when a full name is split: "Pieter ter Horst", "Elisabeth zu Guttenberg",
# "Ana dos Santos", "Hilma af Klint" (the particles above, which stay lower case inside a name, among them).
_PARTICLES = frozenset(
    {"van", "von", "de", "da", "del", "della", "di", "du", "la", "le", "st", "der", "den", "bin"}
    | {"ter", "ten", "zu", "zum", "zur", "vom", "dos", "das", "do", "des", "af", "av", "'t"}
)


def _bare(token: str) -> str:
    return token.lower().strip(".,")


_LETTER_RUN = re.compile(r"[^\W\d_]+")
_MC = re.compile(r"\b(Mc)(\w)")
_O_APOSTROPHE = re.compile(r"\b(O')(\w)")
_INNER_WORD = re.compile(r"(?<=\s)(\w+)(?=\s)")


# A '?' (or U+FFFD, the decoder's mark) beside a letter stands for a letter the file's encoding could not
# hold: "M?ller", "Fran?ois", "?ukasz" from an export saved in a Western code page. Such a name can neither
# be written to its owner nor compared with "Müller"; the value is quarantined saying how to get it back.
_LOST_LETTER = re.compile(r"[^\W\d_][?\ufffd]|[?\ufffd][^\W\d_]")
LOST_LETTER = "a '?' stands for a letter the file's encoding could not hold (M?ller): export the file again as UTF-8"


def tidy_name(raw: object) -> str | None:
    """Trim, collapse spaces, and fix case only when the source shouted or whispered ("SMITH", "smith");
    mixed case such as "McDonald" or "DeShawn" is kept as written."""
    if is_missing(raw):
        return None
    text = _collapse(str(raw)).strip(" ,.;")
    if not text or not any(c.isalpha() for c in text):
        return None
    if text.isupper() or text.islower():
        text = _LETTER_RUN.sub(lambda m: m.group(0).capitalize(), text.lower())
        text = _MC.sub(lambda m: m.group(1) + m.group(2).upper(), text)
        text = _O_APOSTROPHE.sub(lambda m: m.group(1) + m.group(2).upper(), text)
        # Particles inside a name stay lower case: "VAN DER BERG" is "Van der Berg", "LUDWIG VAN BEETHOVEN"
        # "Ludwig van Beethoven", "RIO DE JANEIRO" "Rio de Janeiro".
        text = _INNER_WORD.sub(
            lambda m: m.group(1).lower() if m.group(1).lower() in _INNER_PARTICLES else m.group(1), text
        )
    return text


def clean_name(raw: object) -> Result:
    """A name part (or a city) tidied by `tidy_name`; a value with no letter in it ("-2+3", "123", "?!"), or
    with a letter lost to an encoding (`LOST_LETTER`), cannot be a name and is refused with the reason, so the
    cleaning stage quarantines it instead of dropping it without a trace."""
    if is_missing(raw):
        return None, None
    if _LOST_LETTER.search(str(raw)):
        return None, LOST_LETTER
    name = tidy_name(raw)
    if name is None:
        return None, "no letters: only digits, punctuation or symbols"
    return name, None


# Words written lower case inside a place name, between its other words or hyphenated parts: Mülheim an
# der Ruhr, Freiburg im Breisgau, Rothenburg ob der Tauber, Alphen aan den Rijn, Bergen op Zoom,
# Aix-en-Provence, Boulogne-sur-Mer, Stratford-upon-Avon. Only for cities: in a person's name An, In or
# La is as often a name of its own.
_PLACE_PARTICLES = _INNER_PARTICLES | frozenset(
    {"an", "im", "in", "ob", "bei", "vor", "auf", "unter", "dem", "aan", "op", "bij", "het"}
    | {"en", "sur", "sous", "lès", "aux", "au", "sul", "sulla", "nel", "upon", "on", "under", "by"}
)
# Articles, lower case only after a particle or between hyphenated parts (Castellón de la Plana,
# Aix-les-Bains, Saint-Germain-des-Prés), as elsewhere they begin a name: North Las Vegas, West Des Moines.
_INNER_PLACE_WORD = re.compile(r"(?<=[\s-])([^\W\d_]+)(?=[\s-])")
_PLACE_ARTICLE = re.compile(
    r"(?<=-)(la|le|les|las|los|des)(?=-)|(?<=\b(?:de|di|da|du) )(la|le|les|las|los)\b|(?<=\bdel )(la|los|las)\b",
    re.IGNORECASE,
)
# An elided article or preposition inside a place name (Villeneuve-d'Ascq, Reggio nell'Emilia), and the
# Dutch 's and 't before one ('s-Hertogenbosch, 's-Gravenhage).
_INNER_ELISION = re.compile(
    r"(?<=[\s-])(d|l|dell|nell|sull|dall|all)(?=['’]\w)|(?<=^['’])([st])(?=[\s-])", re.IGNORECASE
)


def clean_city(raw: object) -> Result:
    """A city tidied as a name part is (`clean_name`), and when its case was fixed (the source wrote it in
    capitals or all lower case), the particles inside it lower case: `MÜLHEIM AN DER RUHR` is Mülheim an
    der Ruhr, `AIX-EN-PROVENCE` Aix-en-Provence. Mixed case is kept as written."""
    city, reason = clean_name(raw)
    if city is None:
        return city, reason
    text = _collapse(str(raw)).strip(" ,.;")
    if not (text.isupper() or text.islower()):
        return city, None
    city = _INNER_PLACE_WORD.sub(
        lambda m: m.group(1).lower() if m.group(1).lower() in _PLACE_PARTICLES else m.group(1), city
    )
    city = _PLACE_ARTICLE.sub(lambda m: m.group(0).lower(), city)
    return _INNER_ELISION.sub(lambda m: m.group(0).lower(), city), None


def split_full_name(raw: object) -> tuple[str | None, str | None, str | None]:
    """(first, middle, last) from "SMITH, John A.", "John A. Smith", "Dr. Ludwig van Beethoven Jr."."""
    return _split_full_name(raw, [])


def clean_full_name(raw: object) -> tuple[str | None, str | None, str | None, str | None]:
    """(first, middle, last, reason): `split_full_name`, with the reason when part or all of the name is
    lost, a part with no letters ("John 3 Smith", "-2+3") or a name that is only a title ("Mr."), so
    the cleaning stage can quarantine the value rather than drop it silently."""
    if is_missing(raw):
        return None, None, None, None
    if _LOST_LETTER.search(str(raw)):
        return None, None, None, LOST_LETTER
    dropped: list[str] = []
    first, middle, last = _split_full_name(raw, dropped)
    shown = ", ".join(f"'{d}'" for d in dropped)
    if first is None and middle is None and last is None:
        letters = any(c.isalpha() for c in str(raw))
        return None, None, None, ("no name: only a title or suffix" if letters else "no name: no letters")
    if dropped:
        return first, middle, last, f"part(s) without letters dropped: {shown}"
    return first, middle, last, None


def _split_full_name(raw: object, dropped: list[str]) -> tuple[str | None, str | None, str | None]:
    """The name split; each non-empty part that `tidy_name` refuses is appended to `dropped`."""

    def tidy(part: str) -> str | None:
        name = tidy_name(part)
        if name is None and not is_missing(part):
            dropped.append(part.strip())
        return name

    if is_missing(raw):
        return None, None, None
    text = _collapse(str(raw))
    if "," in text:
        head, _, tail = text.partition(",")
        tail_tokens = [t for t in tail.split() if _bare(t)]
        if tail_tokens and all(_bare(t) in _SUFFIXES for t in tail_tokens):
            text = head  # "John Smith, Jr."
        elif head.strip() and tail.strip():
            given = [t for t in tail.split() if _bare(t) not in _TITLES | _SUFFIXES and _bare(t)]
            # A title may stand before the surname too: "Dr. Müller, Hans", "Frau Schmidt, Anna".
            head_tokens = head.split()
            while len(head_tokens) > 1 and _bare(head_tokens[0]) in _TITLES:
                head_tokens = head_tokens[1:]
            last = tidy(" ".join(head_tokens))
            if not given:
                return None, None, last
            middle = tidy(" ".join(given[1:])) if len(given) > 1 else None
            return tidy(given[0]), middle, last
    tokens = [t for t in text.replace(",", " ").split() if _bare(t)]
    titled = False
    while tokens and _bare(tokens[0]) in _TITLES:
        tokens, titled = tokens[1:], True
    while len(tokens) > 1 and _bare(tokens[-1]) in _SUFFIXES:
        tokens = tokens[:-1]
    if not tokens:
        return None, None, None
    if len(tokens) == 1:
        # "Frau Müller", "Mr. Smith": a title addresses a person by the surname.
        return (None, None, tidy(tokens[0])) if titled else (tidy(tokens[0]), None, None)
    last_start = len(tokens) - 1
    while last_start > 1 and _bare(tokens[last_start - 1]) in _PARTICLES:
        last_start -= 1
    middle = tidy(" ".join(tokens[1:last_start])) if last_start > 1 else None
    return tidy(tokens[0]), middle, tidy(" ".join(tokens[last_start:]))


# ---------------------------------------------------------------- dates

DEFAULT_DATE_FORMATS = ("%Y-%m-%d",)
# A date kept as a timestamp at midnight: what a Parquet timestamp column (pandas writes dates so) reads as,
# and what spreadsheets and pandas write into CSV exports ("1979-06-06 00:00:00", "06.06.1979 00:00").
_MIDNIGHT = re.compile(r"[ T]00:00(?::00(?:\.0+)?)?(?:Z|[+-]00(?::?00)?)?$")


def parse_date_of_birth(raw: object, formats: tuple[str, ...] | list[str] | None, today: date | None = None) -> Result:
    """ISO date (`YYYY-MM-DD`) from the first declared format that parses; plausible years only. A two-digit
    year (`%y`) is the latest year with those digits that is not in the future.

    A value the formats do not read is tried again without a midnight time after it, since a birth date
    kept in a timestamp column is written with one; another time of day is refused, as it is no date."""
    if is_missing(raw):
        return None, None
    text = str(raw).strip()
    fmts = tuple(formats or DEFAULT_DATE_FORMATS)
    date_part = _MIDNIGHT.sub("", text)
    for fmt, candidate in [(f, text) for f in fmts] + [(f, date_part) for f in fmts if date_part != text]:
        try:
            parsed = datetime.strptime(candidate, fmt).date()
        except ValueError:
            continue
        today = today or date.today()
        if parsed > today and "%y" in fmt:
            # strptime reads a two-digit year 00-68 as 20xx; a birth date is in the past, so "05.07.55" is 1955.
            try:
                parsed = parsed.replace(year=parsed.year - 100)
            except ValueError:  # 29 February of a year whose century-earlier namesake is no leap year
                return None, "date of birth is in the future"
        if parsed > today:
            return None, "date of birth is in the future"
        if parsed.year < 1900:
            return None, "date of birth before 1900"
        return parsed.isoformat(), None
    return None, f"not a valid date in the format(s) {', '.join(fmts)}"


# ---------------------------------------------------------------- addresses

_STREET_ABBREVIATIONS = {
    "STREET": "ST",
    "STR": "ST",
    "AVENUE": "AVE",
    "AV": "AVE",
    "ROAD": "RD",
    "BOULEVARD": "BLVD",
    "DRIVE": "DR",
    "LANE": "LN",
    "COURT": "CT",
    "PLACE": "PL",
    "TERRACE": "TER",
    "PARKWAY": "PKWY",
    "HIGHWAY": "HWY",
    "CIRCLE": "CIR",
    "SQUARE": "SQ",
    "TRAIL": "TRL",
    "APARTMENT": "APT",
    "SUITE": "STE",
    "UNIT": "UNIT",
    "FLOOR": "FL",
    "NORTH": "N",
    "SOUTH": "S",
    "EAST": "E",
    "WEST": "W",
    "NORTHEAST": "NE",
    "NORTHWEST": "NW",
    "SOUTHEAST": "SE",
    "SOUTHWEST": "SW",
    "MOUNT": "MT",
    "FORT": "FT",
    "SAINT": "ST",
}


# German streets are written whole or shortened, as a word or a compound's end: Hauptstraße, Hauptstrasse
# and Hauptstr. are one street, and Berliner Straße is Berliner Str.
_STRASSE = re.compile(r"STRASSE$")


def _street_word(word: str) -> str:
    """One upper-case word of an address key in its short form (see address_sql_shortcut's `short`)."""
    word = _STRASSE.sub("STR", word)
    return _STREET_ABBREVIATIONS.get(word, word)


_NOT_WORD = re.compile(r"[^\w\s]")


def clean_address_line(raw: object) -> tuple[str | None, str | None, str | None]:
    """(line as displayed, match key, reason). The key is upper case, without punctuation or accents
    (fold_accents), with USPS abbreviations and German streets shortened and spelt-out umlauts read as
    the accent fold reads umlauts (umlauts_dropped), so "12 North Main Street, Apt. 4" and "12 N MAIN ST
    APT 4", "Große Straße 3" and "Grosse Str. 3", "Königsweg 7" and "Koenigsweg 7" compare equal. A line
    with no letter or digit ("-/-", ",") is refused with the reason rather than dropped."""
    if is_missing(raw):
        return None, None, None
    text = _collapse(str(raw)).strip(" ,")
    if not _has_alnum(text):
        return None, None, "no letters or digits"
    display = tidy_name(text) if (text.isupper() or text.islower()) else text
    # NFKC leaves text all ASCII as it is.
    words = _NOT_WORD.sub(" ", fold_accents(text if text.isascii() else unicodedata.normalize("NFKC", text)))
    key = " ".join(umlauts_dropped(_street_word(w)) for w in words.upper().split())
    return display, key or None, None


def address_sql_shortcut(raw: str) -> tuple[str, dict[str, str]]:
    """(condition, SQL per output) for the address lines whose `clean_address_line` outcome SQL decides:
    printable ASCII (so NFKC and fold_accents change nothing, and whitespace is spaces) in mixed case or
    without letters (so the line is displayed as written, collapsed), not a filler, with a letter or digit.
    Tests compare both on such lines.

    Collapsing spaces and trimming spaces and commas remove no letter or digit, and the key's words are
    split at every other character anyway, so the condition and the key read the value as given: only the
    displayed line is collapsed, and only a line with a run of spaces goes through the regex."""
    fillers = ", ".join(sql_literal(f) for f in sorted(FILLERS))
    collapsed = f"case when contains({raw}, '  ') then regexp_replace({raw}, ' +', ' ', 'g') else {raw} end"
    condition = (
        f"coalesce(regexp_full_match({raw}, '[ -~]*') and lower(trim({raw})) not in ({fillers}) "
        f"and regexp_matches({raw}, '[A-Za-z0-9]') "
        f"and (regexp_matches({raw}, '[A-Z]') = regexp_matches({raw}, '[a-z]')), false)"
    )
    abbreviations = ", ".join(f"{sql_literal(k)}: {sql_literal(v)}" for k, v in _STREET_ABBREVIATIONS.items())
    words = f"string_split_regex(trim(upper(regexp_replace({raw}, '[^A-Za-z0-9_ ]', ' ', 'g'))), ' +')"
    german = "regexp_replace(w, 'STRASSE$', 'STR')"
    short = f"lambda w: coalesce(map {{{abbreviations}}}[{german}], {german})"
    spelt_out = f"lambda w: {umlauts_dropped_sql('w')}"
    key = f"nullif(array_to_string(list_transform(list_transform({words}, {short}), {spelt_out}), ' '), '')"
    return condition, {"display": f"trim({collapsed}, ' ,')", "address_key": key, "reason": "null::varchar"}


def _has_alnum(text: str) -> bool:
    return any(c.isalnum() for c in text)


US_STATES = {
    "ALABAMA": "AL",
    "ALASKA": "AK",
    "ARIZONA": "AZ",
    "ARKANSAS": "AR",
    "CALIFORNIA": "CA",
    "COLORADO": "CO",
    "CONNECTICUT": "CT",
    "DELAWARE": "DE",
    "DISTRICT OF COLUMBIA": "DC",
    "FLORIDA": "FL",
    "GEORGIA": "GA",
    "HAWAII": "HI",
    "IDAHO": "ID",
    "ILLINOIS": "IL",
    "INDIANA": "IN",
    "IOWA": "IA",
    "KANSAS": "KS",
    "KENTUCKY": "KY",
    "LOUISIANA": "LA",
    "MAINE": "ME",
    "MARYLAND": "MD",
    "MASSACHUSETTS": "MA",
    "MICHIGAN": "MI",
    "MINNESOTA": "MN",
    "MISSISSIPPI": "MS",
    "MISSOURI": "MO",
    "MONTANA": "MT",
    "NEBRASKA": "NE",
    "NEVADA": "NV",
    "NEW HAMPSHIRE": "NH",
    "NEW JERSEY": "NJ",
    "NEW MEXICO": "NM",
    "NEW YORK": "NY",
    "NORTH CAROLINA": "NC",
    "NORTH DAKOTA": "ND",
    "OHIO": "OH",
    "OKLAHOMA": "OK",
    "OREGON": "OR",
    "PENNSYLVANIA": "PA",
    "RHODE ISLAND": "RI",
    "SOUTH CAROLINA": "SC",
    "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN",
    "TEXAS": "TX",
    "UTAH": "UT",
    "VERMONT": "VT",
    "VIRGINIA": "VA",
    "WASHINGTON": "WA",
    "WEST VIRGINIA": "WV",
    "WISCONSIN": "WI",
    "WYOMING": "WY",
    "PUERTO RICO": "PR",
}


def clean_region(raw: object, country: str | None) -> Result:
    """US state names become their two-letter codes; other regions are kept upper-cased."""
    if is_missing(raw):
        return None, None
    text = _collapse(str(raw)).upper().strip(".")
    if not _has_alnum(text):
        return None, "no letters or digits"
    if country in (None, "US"):
        if text in US_STATES:
            return US_STATES[text], None
        if text in US_STATES.values():
            return text, None
        if country == "US":
            return None, "not a US state or state code"
    return text, None


# Countries whose postal codes are all digits of one length, some starting with 0 (Dresden 01067, Rome
# 00100, Oslo 0150, Darwin 0800): a spreadsheet that read them as numbers dropped the zeros.
_NUMERIC_POSTAL_LENGTHS = {"DE": 5, "FR": 5, "IT": 5, "ES": 5, "FI": 5, "MX": 5, "NO": 4, "AU": 4}
# The country letters European addresses used to put before a postcode, and many old CRMs still hold
# (D-10115, F-75001, NL-1012 AB, CH-8001): the ISO code or the old international vehicle code.
_POSTAL_PREFIXES = {
    "DE": ("DE", "D"),
    "FR": ("FR", "F"),
    "AT": ("AT", "A"),
    "CH": ("CH",),
    "IT": ("IT", "I"),
    "ES": ("ES", "E"),
    "PT": ("PT", "P"),
    "NL": ("NL",),
    "BE": ("BE", "B"),
    "LU": ("LU", "L"),
    "DK": ("DK",),
    "SE": ("SE", "S"),
    "NO": ("NO", "N"),
    "FI": ("FI", "FIN"),
    "PL": ("PL",),
    "CZ": ("CZ",),
    "SK": ("SK",),
    "HU": ("HU", "H"),
    "SI": ("SI", "SLO"),
    "HR": ("HR",),
    "GR": ("GR",),
    "LT": ("LT",),
    "LV": ("LV",),
    "EE": ("EE",),
}
_POSTAL_PREFIX_PATTERNS = {
    country: re.compile(rf"(?:{'|'.join(codes)})\s?-\s?(?=\d)") for country, codes in _POSTAL_PREFIXES.items()
}


def clean_postal_code(raw: object, country: str | None) -> Result:
    """US ZIP codes become five digits (ZIP+4 dropped, lost leading zeros restored), and so do the all-digit
    codes of countries where some start with 0 (Germany's 1067 is 01067); a European country prefix of the
    record's country is dropped (D-10115 in Germany is 10115); others upper-cased."""
    if is_missing(raw):
        return None, None
    text = _collapse(str(raw)).upper()
    if not _has_alnum(text):
        return None, "no letters or digits"
    prefix = _POSTAL_PREFIX_PATTERNS.get(country or "")
    if prefix is not None:
        text = prefix.sub("", text, count=1) if prefix.match(text) else text
    length = _NUMERIC_POSTAL_LENGTHS.get(country or "")
    if length and re.fullmatch(rf"\d{{{length - 2},{length - 1}}}", text):
        return text.zfill(length), None
    if country in (None, "US"):
        digits = text.replace(" ", "")
        if re.fullmatch(r"\d{5}(-?\d{4})?", digits):
            return digits[:5], None
        if re.fullmatch(r"\d{3,4}", digits):
            return digits.zfill(5), None
        if country == "US":
            return None, "not a US ZIP code"
    return text, None


_COUNTRY_ALIASES = {
    "USA": "US",
    "U.S.": "US",
    "U.S.A.": "US",
    "UNITED STATES": "US",
    "UNITED STATES OF AMERICA": "US",
    "AMERICA": "US",
    "UK": "GB",
    "U.K.": "GB",
    "UNITED KINGDOM": "GB",
    "GREAT BRITAIN": "GB",
    "ENGLAND": "GB",
    # What people write for the United Kingdom besides its official names, which the geocoder's lists
    # hold (Vereinigtes Königreich, Royaume-Uni): its nations, and Great Britain in other languages.
    "BRITAIN": "GB",
    "SCOTLAND": "GB",
    "WALES": "GB",
    "NORTHERN IRELAND": "GB",
    "GROSSBRITANNIEN": "GB",
    "GRANDE-BRETAGNE": "GB",
    "GRANDE BRETAGNE": "GB",
    "GRAN BRETAÑA": "GB",
    "GRAN BRETAGNA": "GB",
    "GROOT-BRITTANNIË": "GB",
    "GROOT BRITTANNIË": "GB",
    "HOLLAND": "NL",
    "THE NETHERLANDS": "NL",
    "CZECHIA": "CZ",
    "CANADA": "CA",
    "CAN": "CA",
    "MEXICO": "MX",
    "MEX": "MX",
    "GERMANY": "DE",
    "DEUTSCHLAND": "DE",
    "DEU": "DE",
    "FRANCE": "FR",
    "FRA": "FR",
    "SPAIN": "ES",
    "ESPANA": "ES",
    "ITALY": "IT",
    "NETHERLANDS": "NL",
    "IRELAND": "IE",
    "AUSTRALIA": "AU",
    "AUS": "AU",
    "NEW ZEALAND": "NZ",
    "INDIA": "IN",
    "JAPAN": "JP",
    "BRAZIL": "BR",
    "GBR": "GB",
    "BELGIUM": "BE",
    "SWITZERLAND": "CH",
    "AUSTRIA": "AT",
    "SWEDEN": "SE",
    "NORWAY": "NO",
    "DENMARK": "DK",
    "FINLAND": "FI",
    "POLAND": "PL",
    "PORTUGAL": "PT",
    "CHINA": "CN",
}
_ISO_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)


# ISO 3166-1 alpha-3 codes (as ERP and shipping systems export countries: POL, SWE, NLD), each followed by
# its alpha-2 code, for the countries libphonenumber knows (the codes this rule returns).
_ALPHA3_CODES = (
    "ABWAW AFGAF AGOAO AIAAI ALAAX ALBAL ANDAD AREAE ARGAR ARMAM ASMAS ATGAG AUSAU AUTAT AZEAZ BDIBI "
    "BELBE BENBJ BESBQ BFABF BGDBD BGRBG BHRBH BHSBS BIHBA BLMBL BLRBY BLZBZ BMUBM BOLBO BRABR BRBBB "
    "BRNBN BTNBT BWABW CAFCF CANCA CCKCC CHECH CHLCL CHNCN CIVCI CMRCM CODCD COGCG COKCK COLCO COMKM "
    "CPVCV CRICR CUBCU CUWCW CXRCX CYMKY CYPCY CZECZ DEUDE DJIDJ DMADM DNKDK DOMDO DZADZ ECUEC EGYEG "
    "ERIER ESHEH ESPES ESTEE ETHET FINFI FJIFJ FLKFK FRAFR FROFO FSMFM GABGA GBRGB GEOGE GGYGG GHAGH "
    "GIBGI GINGN GLPGP GMBGM GNBGW GNQGQ GRCGR GRDGD GRLGL GTMGT GUFGF GUMGU GUYGY HKGHK HNDHN HRVHR "
    "HTIHT HUNHU IDNID IMNIM INDIN IOTIO IRLIE IRNIR IRQIQ ISLIS ISRIL ITAIT JAMJM JEYJE JORJO JPNJP "
    "KAZKZ KENKE KGZKG KHMKH KIRKI KNAKN KORKR KWTKW LAOLA LBNLB LBRLR LBYLY LCALC LIELI LKALK LSOLS "
    "LTULT LUXLU LVALV MACMO MAFMF MARMA MCOMC MDAMD MDGMG MDVMV MEXMX MHLMH MKDMK MLIML MLTMT MMRMM "
    "MNEME MNGMN MNPMP MOZMZ MRTMR MSRMS MTQMQ MUSMU MWIMW MYSMY MYTYT NAMNA NCLNC NERNE NFKNF NGANG "
    "NICNI NIUNU NLDNL NORNO NPLNP NRUNR NZLNZ OMNOM PAKPK PANPA PERPE PHLPH PLWPW PNGPG POLPL PRIPR "
    "PRKKP PRTPT PRYPY PSEPS PYFPF QATQA REURE ROURO RUSRU RWARW SAUSA SDNSD SENSN SGPSG SHNSH SJMSJ "
    "SLBSB SLESL SLVSV SMRSM SOMSO SPMPM SRBRS SSDSS STPST SURSR SVKSK SVNSI SWESE SWZSZ SXMSX SYCSC "
    "SYRSY TCATC TCDTD TGOTG THATH TJKTJ TKLTK TKMTM TLSTL TONTO TTOTT TUNTN TURTR TUVTV TWNTW TZATZ "
    "UGAUG UKRUA URYUY USAUS UZBUZ VATVA VCTVC VENVE VGBVG VIRVI VNMVN VUTVU WLFWF WSMWS YEMYE ZAFZA "
    "ZMBZM ZWEZW"
)
_ALPHA3 = {pair[:3]: pair[3:] for pair in _ALPHA3_CODES.split()}


@functools.cache
def _country_names() -> dict[str, str]:
    """Every country's name in the languages libphonenumber's geocoder speaks (Niederlande, Nederland,
    Pays-Bas, Paesi Bassi...), upper case without accents, to its code; a name two countries share in
    some language is left out rather than guessed."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    codes: dict[str, set[str]] = {}
    # 47,000 names but 3,665 distinct spellings: each is folded once, which took this table from 0.5 s to
    # 0.05 s (after importing the names, 0.25 s), paid by every cleaning run that reads a country name.
    folded: dict[str, str] = {}
    for code, names in LOCALE_DATA.items():
        for name in names.values():
            for _ in range(len(names)):  # "*de": the same as the German name (which may refer on)
                if not name.startswith("*"):
                    break
                name = names.get(name[1:], "")
            if name and code in _ISO_COUNTRIES:
                if name not in folded:
                    folded[name] = fold_accents(_collapse(name)).upper()
                codes.setdefault(folded[name], set()).add(code)
    names = {name: next(iter(found)) for name, found in codes.items() if len(found) == 1}
    return {**names, **{fold_accents(k): v for k, v in _COUNTRY_ALIASES.items()}}


def clean_country(raw: object) -> Result:
    """ISO 3166 alpha-2 code from an alpha-2 or alpha-3 code ("pl", "POL") or a name in any of some 180
    languages ("USA", "United States", "uk", "Niederlande", "España")."""
    if is_missing(raw):
        return None, None
    text = _collapse(str(raw)).upper()
    if text in _ISO_COUNTRIES:
        return text, None
    if text in _ALPHA3:
        return _ALPHA3[text], None
    code = _country_names().get(fold_accents(text))
    if code is not None:
        return code, None
    return None, "unknown country: use an ISO code such as US or GB, or the country's name"


# ---------------------------------------------------------------- amounts

# Spaces (also no-break and narrow no-break ones) and apostrophes group thousands whatever the decimal
# separator: 1 234,56 in France, 1'234.56 in Switzerland.
_GROUPING = "[ \u00a0\u202f'']"  # in a SQL string: the apostrophe doubled


# Currency signs written beside an amount: $, €, £, and Europe's other currencies as shops write them,
# zł (and zl), kr (Swedish, Danish, Norwegian, Icelandic; also kr.), Kč, Ft, lei, ₽, ₴, ₺, and ¥, ₹.
# Written before the amount, a word sign needs a space after it ("kr 199,00", not the "kr" of "krone").
_CURRENCY_SYMBOLS = "[$€£¥₹₽₴₺]"
_CURRENCY_WORDS = "(zł|zl|kr[.]?|Kč|Ft|lei)"


def amount_text_sql(raw: str, decimal_separator: str) -> str:
    """SQL giving the amount in `raw` as text DuckDB casts to a decimal: without a currency symbol or
    code beside it ($12.50, 12,50 €, 12.50 EUR, 1 234,56 zł, 199,00 kr) and without thousands separators,
    with a decimal point.

    A source declares its decimal separator. With ',' (1.234,56) a point only groups thousands. With '.'
    a comma is read as grouping only where a decimal point follows (1,234.56): "1,234" alone could be
    1234 or a German 1,234, and is left as written, which the caller refuses (see amount_reason_sql)."""
    bare = (
        rf"trim(regexp_replace(regexp_replace({raw}, "
        rf"'^\s*({_CURRENCY_SYMBOLS}|{_CURRENCY_WORDS}\s|[A-Z]{{3}}\s)\s*', ''), "
        rf"'\s*({_CURRENCY_SYMBOLS}|{_CURRENCY_WORDS}|\s[A-Z]{{3}})\s*$', ''))"
    )
    if decimal_separator == ",":
        grouped = rf"-?\d{{1,3}}([.]|{_GROUPING})\d{{3}}(([.]|{_GROUPING})\d{{3}})*(,\d+)?"
        plain = r"-?\d+(,\d+)?"
        fast = "-?[0-9]+"
        read = (
            f"case when regexp_full_match({bare}, '{grouped}') or regexp_full_match({bare}, '{plain}') "
            f"then replace(regexp_replace({bare}, '([.]|{_GROUPING})', '', 'g'), ',', '.') else {bare} end"
        )
    else:
        grouped = rf"-?\d{{1,3}}({_GROUPING}\d{{3}})+(\.\d+)?|-?\d{{1,3}}(,\d{{3}})+\.\d+"
        fast = "-?[0-9]+([.][0-9]+)?"
        read = (
            f"case when regexp_full_match({bare}, '{grouped}') "
            f"then regexp_replace({bare}, '(,|{_GROUPING})', '', 'g') else {bare} end"
        )
    # Most amounts are plain digits with or without decimals, read as written.
    return f"(case when regexp_full_match({raw}, '{fast}') then {raw} else {read} end)"


def amount_sql(amount_text: str) -> str:
    """SQL for the amount `amount_text` (from amount_text_sql) reads as, NULL where it is not a number. DuckDB's
    cast reads digits grouped by underscores as its SQL does (1_000 as 1000, 1_0.5 as 10.5), which no system
    writes money as, and Spark's refuses: such an amount is not a number on either engine."""
    return f"case when not contains({amount_text}, '_') then try_cast({amount_text} as {AMOUNT_TYPE}) end"


def amount_reason_sql(amount_text: str, decimal_separator: str) -> str:
    """SQL giving why an amount that is not a number was refused; `decimal_separator` is the SQL of the
    source's separator ('' when the source leaves it unset). An amount with a comma, or with points
    grouping thousands (1.234.567), from a source not declared with ',' is told to say which separator it
    writes."""
    comma = f"-?[0-9.{_GROUPING[1:-1]}]*[0-9],[0-9]+"
    points = r"-?[0-9]{1,3}([.][0-9]{3}){2,}"
    return (
        f"case when {decimal_separator} <> ',' and (regexp_full_match({amount_text}, '{comma}') "
        f"or regexp_full_match({amount_text}, '{points}')) "
        "then 'amount is not a number: a decimal comma, a comma grouping thousands without a decimal "
        "point, or points grouping thousands, is ambiguous; set the source''s decimal_separator' "
        "else 'amount is not a number' end"
    )


# Why an amount such as 1.234 from a source that left its decimal separator unset is refused.
AMBIGUOUS_AMOUNT = (
    "amount is ambiguous: a decimal point with three digits after it (1.234) is how a decimal-comma system "
    "groups thousands (1234); set the source's decimal_separator ('.' reads it as 1.234, ',' as 1234)"
)


def amount_exponent_sql(amount_text: str) -> str:
    """SQL condition, for an amount that reads as a number: it is written in exponent notation (1e3, 1.5E+2),
    which DuckDB reads as the number it stands for. No system writes money so; a spreadsheet shows a long
    number so (123456789012.34 as 1.23457E+11) and saves it as shown, digits lost."""
    return f"regexp_matches({amount_text}, '[eE]')"


def amount_exponent_reason_sql(label: str, raw: str) -> str:
    """SQL giving why an amount in exponent notation was refused, naming the source's field and the value as
    written (SQL expressions `label` and `raw`)."""
    return (
        f"'amount is in exponent notation (' || {label} || ' is ' || {raw} || '): a spreadsheet writes a long "
        "number so and may have dropped its digits; write the amount in plain digits'"
    )


def amount_ambiguous_sql(amount_text: str, decimal_separator: str, is_number: str = "false") -> str:
    """SQL condition: the amount reads as a number, but a source that did not declare its separator may
    have meant its point as thousands grouping (1.234 for 1234, which would load a thousand times too
    small). A leading zero (0.125) cannot be grouping and is read as written, and so is an amount the
    record holds as a number rather than text (SQL condition `is_number`: a JSON or Parquet number, whose
    point is always a decimal point)."""
    return (
        f"({decimal_separator} = '' and not {is_number} "
        f"and regexp_full_match({amount_text}, '-?[1-9][0-9]{{0,2}}[.][0-9]{{3}}'))"
    )


# ---------------------------------------------------------------- consent

_YES = frozenset(
    {
        "true",
        "t",
        "yes",
        "y",
        "1",
        "opt-in",
        "opt_in",
        "optin",
        "opted in",
        "granted",
        "subscribed",
        "accepted",
        "on",
        # The same in the languages of Europe's larger markets: German, Dutch, Swedish, Danish and Norwegian
        # (ja), French (oui), Spanish and Italian (sí, si), Portuguese (sim), Polish (tak), Finnish (kyllä).
        "ja",
        "oui",
        "si",
        "sí",
        "sim",
        "tak",
        "kyllä",
    }
)
_NO = frozenset(
    {
        "false",
        "f",
        "no",
        "n",
        "0",
        "opt-out",
        "opt_out",
        "optout",
        "opted out",
        "denied",
        "revoked",
        "withdrawn",
        "unsubscribed",
        "unsubscribe",
        "not subscribed",
        "declined",
        "off",
        # German, French, Dutch, Swedish and Danish, Norwegian, Portuguese, Polish, Finnish; Spanish and
        # Italian say no.
        "nein",
        "non",
        "nee",
        "nej",
        "nei",
        "não",
        "nao",
        "nie",
        "ei",
    }
)


def _consent_key(text: str) -> str:
    """A consent word with its separators alike: `Opted-Out`, `opted_out` and `opted out` are one statement."""
    return re.sub(r"[\s_-]+", " ", text.strip().lower())


_YES_KEYS = frozenset(_consent_key(word) for word in _YES)
_NO_KEYS = frozenset(_consent_key(word) for word in _NO)


def parse_consent(raw: object) -> tuple[bool | None, str | None]:
    """A yes/no statement; missing means unknown (which is not consent), anything else is refused. Refusing a
    revocation is not harmless: another source's grant would then stand, so a revocation written with
    another separator (`opted-out`, `opt out`) or as `withdrawn` is read as one."""
    if is_missing(raw):
        return None, None
    text = _consent_key(str(raw))
    if text in _YES_KEYS:
        return True, None
    if text in _NO_KEYS:
        return False, None
    return None, "not a yes/no consent statement"
