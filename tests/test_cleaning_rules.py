"""The cleaning rules, case by case, including the nasty ones seen in real exports."""

from datetime import date

import pytest

from cdp_assets.clean import rules

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "email", "key", "rejected"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com", "jane.doe@example.com", False),
        ("jane.doe+shop@gmail.com", "jane.doe+shop@gmail.com", "janedoe@gmail.com", False),
        ("J.A.N.E@googlemail.com", "j.a.n.e@googlemail.com", "jane@gmail.com", False),
        ("jane+news@outlook.com", "jane+news@outlook.com", "jane@outlook.com", False),
        (
            "first.last@yahoo.com",
            "first.last@yahoo.com",
            "first.last@yahoo.com",
            False,
        ),  # dots matter outside Gmail
        ("mailto:bob@example.org", "bob@example.org", "bob@example.org", False),
        ("<bob@example.org>", "bob@example.org", "bob@example.org", False),
        ('"Anna Schmidt" <Anna@GMX.de>', "anna@gmx.de", "anna@gmx.de", False),  # a display name before it
        ("Schmidt, Anna <anna+shop@gmx.de>", "anna+shop@gmx.de", "anna@gmx.de", False),
        ("anna@gmx.de <x@y.de>", None, None, True),
        ("Anna <anna@>", None, None, True),
        ("john.smith@", None, None, True),
        ("mary@@example.com", None, None, True),
        ("not an email", None, None, True),
        ("a..b@example.com", None, None, True),
        (".ab@example.com", None, None, True),
        ("ab@example", None, None, True),
        # Internationalised addresses: kept as typed, matched with the domain in ASCII (IDNA).
        ("Hanna@Müller.de", "hanna@müller.de", "hanna@xn--mller-kva.de", False),
        ("hanna@xn--mller-kva.de", "hanna@xn--mller-kva.de", "hanna@xn--mller-kva.de", False),
        ("zoë+news@exämple.org", "zoë+news@exämple.org", "zoë@xn--exmple-cua.org", False),
        ("zoe\u0308@example.org", "zoë@example.org", "zoë@example.org", False),  # decomposed ë
        # A top-level domain in another script (.рф, .ελ, .中国) is xn-- in ASCII.
        ("Olga@Пример.РФ", "olga@пример.рф", "olga@xn--e1afmkfd.xn--p1ai", False),
        ("olga@xn--e1afmkfd.xn--p1ai", "olga@xn--e1afmkfd.xn--p1ai", "olga@xn--e1afmkfd.xn--p1ai", False),
        ("eleni@example.ελ", "eleni@example.ελ", "eleni@example.xn--qxam", False),
        ("a@example.xn--p1ai-", None, None, True),
        ("ü..x@müller.de", None, None, True),
        ("hanna@müller", None, None, True),
        ("", None, None, False),
        ("N/A", None, None, False),
        (None, None, None, False),
    ],
)
def test_clean_email(raw, email, key, rejected):
    got_email, got_key, reason = rules.clean_email(raw)
    assert (got_email, got_key) == (email, key)
    assert (reason is not None) == rejected


@pytest.mark.parametrize(
    ("raw", "region", "expected", "rejected"),
    [
        ("(415) 555-0147", "US", "+14155550147", False),
        ("(212) 736-5000", "US", "+12127365000", False),
        ("212.736.5000", "US", "+12127365000", False),
        ("+1 212 736 5000", "US", "+12127365000", False),
        ("2127365000", "US", "+12127365000", False),
        ("2127365000.0", "US", "+12127365000", False),
        ("001 212 736 5000", "US", "+12127365000", False),
        ("020 7946 0958", "GB", "+442079460958", False),
        ("+44 20 7946 0958", "US", "+442079460958", False),
        ("0000000000", "US", None, True),
        ("1234567890", "US", None, True),
        ("555-555-5555", "US", None, True),
        ("call me", "US", None, True),
        ("", "US", None, False),
        (None, "US", None, False),
    ],
)
def test_clean_phone(raw, region, expected, rejected):
    phone, reason = rules.clean_phone(raw, region)
    assert phone == expected
    assert (reason is not None) == rejected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SMITH, JOHN", ("John", None, "Smith")),
        ("Smith, John A.", ("John", "A", "Smith")),
        ("John A. Smith", ("John", "A", "Smith")),
        ("john smith", ("John", None, "Smith")),
        ("Dr. Jane van der Berg", ("Jane", None, "van der Berg")),
        ("John Smith Jr.", ("John", None, "Smith")),
        ("John Smith, Jr.", ("John", None, "Smith")),
        ("MARY O'NEILL", ("Mary", None, "O'Neill")),
        ("  Ana   María   López ", ("Ana", "María", "López")),
        ("Madonna", ("Madonna", None, None)),
        ("MCDONALD, RONALD", ("Ronald", None, "McDonald")),
        ("Herr Hans Müller", ("Hans", None, "Müller")),
        ("Frau Dr. Anna Schmidt", ("Anna", None, "Schmidt")),
        ("Dr. Müller, Hans", ("Hans", None, "Müller")),
        ("Mr. Smith", (None, None, "Smith")),
        ("Don Johnson", ("Don", None, "Johnson")),  # a given name, not the Spanish title
        ("Pieter ter Horst", ("Pieter", None, "ter Horst")),
        ("Anna Maria dos Santos", ("Anna", "Maria", "dos Santos")),
        ("", (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_split_full_name(raw, expected):
    assert rules.split_full_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SMITH", "Smith"),
        ("smith", "Smith"),
        ("McDonald", "McDonald"),
        ("DeShawn", "DeShawn"),
        ("mary-jane", "Mary-Jane"),
        ("  anne  marie ", "Anne Marie"),
        ("VAN DER BERG", "Van der Berg"),  # particles inside a name stay lower case
        ("LUDWIG VAN BEETHOVEN", "Ludwig van Beethoven"),
        ("FRANKFURT AM MAIN", "Frankfurt am Main"),
        ("ST PAUL", "St Paul"),
        ("n/a", None),
        ("123", None),
    ],
)
def test_tidy_name(raw, expected):
    assert rules.tidy_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "formats", "expected", "rejected"),
    [
        ("03/04/1985", ["%m/%d/%Y"], "1985-03-04", False),
        ("1985-03-04", ["%m/%d/%Y", "%Y-%m-%d"], "1985-03-04", False),
        ("19850304", ["%Y%m%d"], "1985-03-04", False),
        ("04.03.1985", ["%Y%m%d", "%d.%m.%Y"], "1985-03-04", False),
        ("02/30/1985", ["%m/%d/%Y"], None, True),
        ("13/45/1990", ["%m/%d/%Y"], None, True),
        ("01/01/2090", ["%m/%d/%Y"], None, True),
        ("01/01/1850", ["%m/%d/%Y"], None, True),
        ("1985-03-04", None, "1985-03-04", False),
        ("1985-03-04 00:00:00", None, "1985-03-04", False),
        ("04.03.1985 00:00", ["%d.%m.%Y"], "1985-03-04", False),
        ("1985-03-04 13:30:00", None, None, True),
        ("05.07.55", ["%d.%m.%y"], "1955-07-05", False),
        ("05.07.12", ["%d.%m.%y"], "2012-07-05", False),
        ("01.07.25", ["%d.%m.%y"], "1925-07-01", False),
        ("", ["%m/%d/%Y"], None, False),
    ],
)
def test_parse_date_of_birth(raw, formats, expected, rejected):
    value, reason = rules.parse_date_of_birth(raw, formats, today=date(2025, 6, 30))
    assert value == expected
    assert (reason is not None) == rejected


@pytest.mark.parametrize(
    ("raw", "display", "key"),
    [
        ("12 North Main Street, Apt. 4", "12 North Main Street, Apt. 4", "12 N MAIN ST APT 4"),
        ("12 N MAIN ST APT 4", "12 N Main St Apt 4", "12 N MAIN ST APT 4"),
        ("  500   Oak  avenue ", "500 Oak avenue", "500 OAK AVE"),
        ("", None, None),
        # Accents and the letters ASCII spells otherwise fold away; German streets shorten, whole or compound.
        ("Große Straße 3", "Große Straße 3", "GROSSE ST 3"),
        ("Grosse Str. 3", "Grosse Str. 3", "GROSSE ST 3"),
        ("Hauptstraße 5", "Hauptstraße 5", "HAUPTSTR 5"),
        ("Hauptstr. 5", "Hauptstr. 5", "HAUPTSTR 5"),
        ("Ørstedsvej 2", "Ørstedsvej 2", "ORSTEDSVEJ 2"),
        ("Rue de l'Église", "Rue de l'Église", "RUE DE L EGLISE"),
        # Umlauts spelt out read as folded (the e after a, o or u dropped, inside a word): one street.
        ("Königsweg 7", "Königsweg 7", "KONIGSWEG 7"),
        ("Koenigsweg 7", "Koenigsweg 7", "KONIGSWEG 7"),
        ("KOENIGSWEG 7", "Koenigsweg 7", "KONIGSWEG 7"),
        ("Müllerstraße 1", "Müllerstraße 1", "MULLERSTR 1"),
        ("Muellerstr. 1", "Muellerstr. 1", "MULLERSTR 1"),
        ("12 Joe Rue", "12 Joe Rue", "12 JOE RUE"),
        # Other scripts keep their letters; full-width digits are digits.
        ("ул. Ленина 5", "ул. Ленина 5", "УЛ ЛЕНИНА 5"),
        ("１２ Main St", "１２ Main St", "12 MAIN ST"),
    ],
)
def test_clean_address_line(raw, display, key):
    assert rules.clean_address_line(raw) == (display, key, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("FRANKFURT AM MAIN", "Frankfurt am Main"),
        ("MÜLHEIM AN DER RUHR", "Mülheim an der Ruhr"),
        ("freiburg im breisgau", "Freiburg im Breisgau"),
        ("ALPHEN AAN DEN RIJN", "Alphen aan den Rijn"),
        ("AIX-EN-PROVENCE", "Aix-en-Provence"),
        ("BOULOGNE-SUR-MER", "Boulogne-sur-Mer"),
        ("CASTELLÓN DE LA PLANA", "Castellón de la Plana"),
        ("VILLENEUVE-D'ASCQ", "Villeneuve-d'Ascq"),
        ("'S-HERTOGENBOSCH", "'s-Hertogenbosch"),
        ("LA CORUÑA", "La Coruña"),  # the first word keeps its capital
        ("AIX-LES-BAINS", "Aix-les-Bains"),
        ("NORTH LAS VEGAS", "North Las Vegas"),  # an article not after a particle begins a name
        ("WEST DES MOINES", "West Des Moines"),
        ("DE LA PAZ", "De la Paz"),
        ("L'AQUILA", "L'Aquila"),
        ("Bergen Op Zoom", "Bergen Op Zoom"),  # mixed case is kept as written
    ],
)
def test_clean_city_keeps_particles_inside_a_place_name_lower_case(raw, expected):
    assert rules.clean_city(raw) == (expected, None)


def test_particles_of_place_names_are_not_lowered_in_a_persons_name():
    assert rules.clean_name("MARIA LA ROSA") == ("Maria La Rosa", None)
    assert rules.clean_name("NGUYEN AN BINH") == ("Nguyen An Binh", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ann", ("Ann", None)),
        ("o'neill", ("O'Neill", None)),
        ("n/a", (None, None)),
        ("-", (None, None)),
        ("-2+3", (None, "no letters: only digits, punctuation or symbols")),
        ("123", (None, "no letters: only digits, punctuation or symbols")),
        ("?!", (None, "no letters: only digits, punctuation or symbols")),
        ("...", (None, "no letters: only digits, punctuation or symbols")),
        ("#1", (None, "no letters: only digits, punctuation or symbols")),
        ("M?ller", (None, rules.LOST_LETTER)),
        ("?ukasz", (None, rules.LOST_LETTER)),
        ("M\ufffdller", (None, rules.LOST_LETTER)),
    ],
)
def test_clean_name_refuses_values_without_letters_with_a_reason(raw, expected):
    assert rules.clean_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("John A. Smith", ("John", "A", "Smith", None)),
        ("", (None, None, None, None)),
        ("-2+3", (None, None, None, "no name: no letters")),
        ("123 456", (None, None, None, "no name: no letters")),
        ("Mr.", (None, None, None, "no name: only a title or suffix")),
        ("John 3 Smith", ("John", None, "Smith", "part(s) without letters dropped: '3'")),
        ("Smith, 42", (None, None, "Smith", "part(s) without letters dropped: '42'")),
        ("Wi?niewski, ?ukasz", (None, None, None, rules.LOST_LETTER)),
    ],
)
def test_clean_full_name_says_when_part_of_the_name_is_lost(raw, expected):
    assert rules.clean_full_name(raw) == expected


@pytest.mark.parametrize(
    ("rule", "raw"),
    [
        (lambda v: rules.clean_address_line(v)[::2], ",,"),
        (lambda v: rules.clean_address_line(v)[::2], "-/-"),
        (lambda v: rules.clean_region(v, "CA"), "./."),
        (lambda v: rules.clean_postal_code(v, "GB"), "*-*"),
        (lambda v: rules.clean_postal_code(v, None), "#"),
    ],
)
def test_address_parts_without_letters_or_digits_are_refused_not_dropped(rule, raw):
    assert rule(raw) == (None, "no letters or digits")


@pytest.mark.parametrize(
    ("raw", "country", "expected", "rejected"),
    [
        ("new york", "US", "NY", False),
        ("ny", "US", "NY", False),
        ("Ontario", "CA", "ONTARIO", False),
        ("Atlantis", "US", None, True),
        ("TX", None, "TX", False),
    ],
)
def test_clean_region(raw, country, expected, rejected):
    value, reason = rules.clean_region(raw, country)
    assert value == expected and (reason is not None) == rejected


@pytest.mark.parametrize(
    ("raw", "country", "expected", "rejected"),
    [
        ("02134", "US", "02134", False),
        ("2134", "US", "02134", False),
        ("02134-1234", "US", "02134", False),
        ("SW1A 1AA", "GB", "SW1A 1AA", False),
        ("1067", "DE", "01067", False),  # Dresden, its zero lost in a spreadsheet
        ("10115", "DE", "10115", False),
        ("150", "NO", "0150", False),
        ("1000", "BE", "1000", False),  # Belgian codes never start with 0
        # An old European country prefix of the record's own country is dropped, and only that one.
        ("D-10115", "DE", "10115", False),
        ("d-1067", "DE", "01067", False),
        ("F-75001", "FR", "75001", False),
        ("NL-1012 AB", "NL", "1012 AB", False),
        ("CH-8001", "CH", "8001", False),
        ("D-10115", "FR", "D-10115", False),
        ("D-10115", None, "D-10115", False),
        ("N1 9GU", "GB", "N1 9GU", False),
        ("ABCDE", "US", None, True),
    ],
)
def test_clean_postal_code(raw, country, expected, rejected):
    value, reason = rules.clean_postal_code(raw, country)
    assert value == expected and (reason is not None) == rejected


@pytest.mark.parametrize(
    ("raw", "expected", "rejected"),
    [
        ("US", "US", False),
        ("usa", "US", False),
        ("United States", "US", False),
        ("U.S.A.", "US", False),
        ("uk", "GB", False),
        ("DE", "DE", False),
        # Names in other languages, with or without their accents.
        ("Niederlande", "NL", False),
        ("Nederland", "NL", False),
        ("Frankreich", "FR", False),
        ("España", "ES", False),
        ("Espana", "ES", False),
        ("Österreich", "AT", False),
        ("België", "BE", False),
        # The United Kingdom by the names people write besides its official ones.
        ("Großbritannien", "GB", False),
        ("Grande-Bretagne", "GB", False),
        ("Scotland", "GB", False),
        ("Holland", "NL", False),
        # ISO 3166 alpha-3 codes, as ERP systems export them: every country's, not only a few.
        ("POL", "PL", False),
        ("swe", "SE", False),
        ("NLD", "NL", False),
        ("ESP", "ES", False),
        ("CHE", "CH", False),
        ("DEU", "DE", False),
        ("XXX", None, True),
        ("Narnia", None, True),
        ("", None, False),
    ],
)
def test_clean_country(raw, expected, rejected):
    value, reason = rules.clean_country(raw)
    assert value == expected and (reason is not None) == rejected


@pytest.mark.parametrize(
    ("raw", "expected", "rejected"),
    [
        ("true", True, False),
        ("Y", True, False),
        ("opt-in", True, False),
        ("FALSE", False, False),
        ("N", False, False),
        ("unsubscribed", False, False),
        ("Opted-Out", False, False),
        ("opt out", False, False),
        ("withdrawn", False, False),
        ("Opted_In", True, False),
        ("", None, False),
        ("maybe", None, True),
    ],
)
def test_parse_consent(raw, expected, rejected):
    value, reason = rules.parse_consent(raw)
    assert value is expected and (reason is not None) == rejected


def test_the_phone_rule_sql_shortcut_agrees_with_the_rule_on_every_value_it_decides():
    """SQL decides the common North American layouts of valid US numbers (resources/identifiers.py); on
    every value it decides, its outputs are the rule's, and it decides the bulk of real-looking numbers."""
    import random

    import duckdb

    from resources.identifiers import NORMALISERS

    rng = random.Random(7)
    values = []
    for _ in range(4000):
        digits = f"{rng.randrange(10**10):010d}"
        a, b, c = digits[:3], digits[3:6], digits[6:]
        layouts = [digits, f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"({a}) {b}-{c}", f"+1 {a} {b} {c}", f"1{digits}"]
        layout = rng.choice([*layouts, f"+44 {a} {b} {c}"])
        values.append((layout, rng.choice(["US", "US", "CA", "GB", "DE"])))
    values += [("(212) 555-0147", "US"), ("212-555-0147 ", "US"), ("212 555 0147", "US"), ("+1 800 555 0199", "GB")]
    values += [("900-555-0199", "US"), ("(800) 555-0199", "US"), ("+1 204 555 0199", "US"), ("204-555-0199", "US")]
    phone = NORMALISERS["phone"]
    shortcut = phone.sql_shortcut("raw", "region")
    assert shortcut is not None
    condition, outputs = shortcut
    conn = duckdb.connect()
    conn.execute("create table v (raw varchar, region varchar)")
    conn.executemany("insert into v values (?, ?)", values)
    decided = conn.execute(
        f"select raw, region, {outputs['phone']}, {outputs['reason']} from v where {condition}"
    ).fetchall()
    for raw, region, clean, reason in decided:
        assert (clean, reason) == phone.rule(raw, region), (raw, region)
    assert len(decided) > len(values) / 10
    assert ("(212) 555-0147", "US", "+12125550147", None) in decided


def _decided(shortcut: tuple[str, dict[str, str]], outputs: list[str], values: list[str]) -> list[tuple]:
    """The values a rule's SQL shortcut decides, each with the outputs it gives."""
    import duckdb

    condition, computed = shortcut
    conn = duckdb.connect()
    conn.execute("create table v (raw varchar)")
    conn.executemany("insert into v values (?)", [(v,) for v in values])
    columns = ", ".join(computed[o] for o in outputs)
    return conn.execute(f"select raw, {columns} from v where {condition}").fetchall()


_TEXT_PIECES = ["a", "B", "Jane", "DOE", ".", "..", "+", "-", "_", "@", " ", "  ", ",", "1", "é", "K", "<", "'", "\t"]


def _nasty_values(rng, pieces: list[str], count: int) -> list[str]:
    return ["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 9))) for _ in range(count)]


def test_the_email_rule_sql_shortcut_agrees_with_the_rule_on_every_value_it_decides():
    import random

    from resources.identifiers import NORMALISERS

    email = NORMALISERS["email"]
    rng = random.Random(3)
    values = _nasty_values(rng, [*_TEXT_PIECES, "gmail.com", "googlemail.com", "x.io", "@b.co", "mailto:"], 6000)
    values += ["Jane.Doe+shop@GMAIL.com", "a@b.c", "a.@b.com", ".a@b.com", "a@-b.com", "a@b-.com", "a@b.c0m"]
    values += ["J.A.N.E@googlemail.com", "+tag@x.org", "a@" + "b" * 250 + ".com", "null", "a@b.com\n"]
    decided = _decided(email.sql_shortcut("raw"), list(email.outputs), values)
    for raw, *outputs in decided:
        assert tuple(outputs) == email.rule(raw), raw
    assert ("Jane.Doe+shop@GMAIL.com", "jane.doe+shop@gmail.com", "janedoe@gmail.com", None) in decided
    assert len(decided) > 50


def test_the_address_rule_sql_shortcut_agrees_with_the_rule_on_every_value_it_decides():
    import random

    rng = random.Random(4)
    pieces = [*_TEXT_PIECES, "Street", "STREET", "north", "Apt.", "McDonald", "st", "Ave", "strasse", "Str.", "STRASSE"]
    pieces += ["oe", "Ue", "AE", "e", "E", "o", "U", "Koenig"]
    values = _nasty_values(rng, pieces, 6000)
    values += ["12 North Main Street, Apt. 4", " ,12 Main St,, ", "N/A", "123", "-/-", "Rue du Moulin Å"]
    values += ["Koenigsweg 7", "AEOE Uee", "Queue Ave", "OEE x", "Aeae Strasse"]
    decided = _decided(rules.address_sql_shortcut("raw"), ["display", "address_key", "reason"], values)
    for raw, *outputs in decided:
        assert tuple(outputs) == rules.clean_address_line(raw), raw
    assert ("12 North Main Street, Apt. 4", "12 North Main Street, Apt. 4", "12 N MAIN ST APT 4", None) in decided
    assert len(decided) > 500


def test_the_suite_patterns_mean_in_re2_what_python_re_means_by_the_plain_patterns():
    """The Great Expectations suite runs its patterns in RE2 (resources/quality.py); spelled out for RE2,
    they accept exactly the values Python's `re` accepts for `\\s` and `$`."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    from cdp_assets.clean import checks

    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert re.findall(f"[{checks.WHITESPACE}]", "".join(chr(c) for c in range(0x110000))) == spaces
    values = ["a@b.com", "+14155550147", "US", "a@b.com\n", "a@b.com\n\n", "+1415555\n", "US\n", "U\nS", "", "a b@c.de"]
    values += [f"a{s}b@c.de" for s in spaces] + [f"+1415555{s}" for s in spaces] + ["a@b.c0m", "ab.com", "a@@b.com"]
    plain = {
        checks.EMAIL: r"^[^@\s]+@[^@\s]+\.[a-z]{2,63}$",
        checks.E164: r"^\+[1-9][0-9]{6,14}$",
        checks.COUNTRY: r"^[A-Z]{2}$",
    }
    for pattern, python in plain.items():
        in_re2 = pc.match_substring_regex(pa.array(values), pattern).to_pylist()
        assert in_re2 == [bool(re.search(python, v)) for v in values], pattern


def test_the_suite_finds_every_bad_value_in_a_frame():
    import pyarrow as pa

    from cdp_assets.clean.checks import _expectations
    from resources.quality import validate_frame, validation_frame

    table = pa.table(
        {
            "source": ["crm", "crm", "crm"],
            "source_record_id": ["1", "2", "3"],
            "file": ["f", "f", "f"],
            "row_number": [1, 2, 3],
            "email": ["a@b.com", "a b@c.com", "x@y.com\n\n"],
            "email_match_key": ["a@b.com", None, None],
            "phone": ["+14155550147", "4155550147", None],
            "country": ["US", "us", "GB"],
            "birth_year": [1980.0, None, 1850.0],
            "trust": [50, 50, 50],
        }
    )
    outcomes = validate_frame("test", validation_frame(table), _expectations())
    unexpected = {(o.expectation, o.column): o.unexpected_count for o in outcomes}
    assert unexpected[("expect_column_values_to_match_regex", "email")] == 2
    assert unexpected[("expect_column_values_to_match_regex", "phone")] == 1
    assert unexpected[("expect_column_values_to_match_regex", "country")] == 1
    assert unexpected[("expect_column_values_to_be_between", "birth_year")] == 1
    assert sum(unexpected.values()) == 5
    examples = {(o.expectation, o.column): o.unexpected_examples for o in outcomes}
    assert examples[("expect_column_values_to_match_regex", "phone")] == ["4155550147"]
    assert examples[("expect_column_values_to_match_regex", "country")] == ["us"]


def test_the_suite_validated_bucket_by_bucket_finds_what_it_finds_on_the_whole_table(monkeypatch):
    """The way Spark's executors validate the person records (`map_groups` over buckets of rows, run here
    in this process) gives each expectation the outcome and unexpected count that validating every row at
    once gives, a repeated key included (its rows share a bucket)."""
    import random

    import duckdb

    from cdp_assets.clean import checks
    from resources.quality import validate_frame, validation_frame
    from resources.sql import Sql

    conn = duckdb.connect()
    sql = Sql(conn)
    sql.execute("create schema clean")
    rng = random.Random(4)
    rows = []
    for n in range(400):
        email = rng.choice(["a@b.com", "a b@c.com", None, "x@y.org"])
        rows.append(
            (
                rng.choice(["crm", "shop"]),
                str(n),
                "f.csv",
                n % 390,  # ten keys twice
                email,
                email if email and " " not in email else None,
                rng.choice(["+14155550147", "4155550147", None]),
                rng.choice(["US", "us", "GB", None]),
                rng.choice([date(1980, 1, 2), date(1850, 1, 1), None]),
                rng.choice([50, 100, 120]),
            )
        )
    sql.execute(
        """create table clean.person_records (source varchar, source_record_id varchar, file varchar,
           row_number bigint, email varchar, email_match_key varchar, phone varchar, country varchar,
           date_of_birth date, trust integer)"""
    )
    conn.executemany("insert into clean.person_records values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    whole = validate_frame("whole", validation_frame(sql.arrow(checks._VALIDATED)), checks._expectations())
    monkeypatch.setattr(checks, "_BUCKET_ROWS", 90)  # five buckets
    buckets = checks._validated_on_executors(sql, len(rows))
    assert [(o.expectation, o.column, o.success, o.unexpected_count) for o in buckets] == [
        (o.expectation, o.column, o.success, o.unexpected_count) for o in whole
    ]
    assert sum(not o.success for o in whole) >= 5 and all(len(o.unexpected_examples) <= 5 for o in buckets)
    unique = [o for o in buckets if o.expectation == "expect_compound_columns_to_be_unique"]
    assert unique[0].unexpected_count > 0
