"""Synthetic landing data for demos, tests and measuring match quality.

One customer base of a US retailer is simulated first (the truth); then seven source systems each
write their own view of those people with the mess real exports have: duplicate contacts, stale
addresses, nicknames, typos, junk values, mixed formats and a few lines that do not even parse.
A ground-truth file maps every source record back to the person behind it, which is what lets the
identity stages be scored instead of eyeballed.

Only the standard library is used so the generator runs anywhere the project does, and a single
seeded ``random.Random`` plus a fixed reference date make every run byte-for-byte reproducible.
Rows are streamed to disk so a million people fit in ordinary memory.

    python -m demo.generate [--people N] [--seed S] [--out DIR] [--truth FILE]
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import csv
import functools
import gc
import io
import itertools
import json
import random
import string
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

REFERENCE_DATE = date(2025, 6, 30)
"""Plays the role of "today" so that output does not depend on when the generator runs."""

DATA_VERSION = 3
"""Raised whenever a change alters what a seed generates, so cached data sets are made again."""

# --------------------------------------------------------------------------------------------------
# Reference lists
# --------------------------------------------------------------------------------------------------

# Most common first, so that Zipf weights make the top names very frequent, as they are in reality.
MALE_FIRST_NAMES = (
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas", "Charles",
    "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua",
    "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Edward", "Jason", "Jeffrey", "Ryan",
    "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott", "Brandon",
    "Benjamin", "Samuel", "Gregory", "Alexander", "Frank", "Patrick", "Raymond", "Jack", "Dennis", "Jerry",
    "Tyler", "Aaron", "Jose", "Adam", "Nathan", "Henry", "Douglas", "Zachary", "Peter", "Kyle",
    "Ethan", "Walter", "Noah", "Jeremy", "Christian", "Keith", "Roger", "Terry", "Gerald", "Harold",
    "Sean", "Austin", "Carl", "Arthur", "Lawrence", "Dylan", "Jesse", "Jordan", "Bryan", "Juan",
)
FEMALE_FIRST_NAMES = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
    "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly", "Emily", "Donna", "Michelle",
    "Carol", "Amanda", "Dorothy", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia",
    "Kathleen", "Amy", "Angela", "Shirley", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen",
    "Samantha", "Katherine", "Christine", "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "Maria",
    "Heather", "Diane", "Ruth", "Julie", "Olivia", "Joyce", "Virginia", "Victoria", "Kelly", "Lauren",
    "Christina", "Joan", "Evelyn", "Judith", "Megan", "Andrea", "Cheryl", "Hannah", "Jacqueline", "Martha",
    "Gloria", "Teresa", "Ann", "Sara", "Madison", "Frances", "Kathryn", "Janice", "Jean", "Abigail",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
    "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper",
    "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson",
    "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez",
    "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes",
    "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton",
    "Graham", "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant", "Herrera",
    "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray", "Ford", "Castro", "Marshall",
    "Owens", "Harrison", "Fernandez", "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas",
    "Henry", "Chen", "Freeman", "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson",
    "Porter", "Hunter", "Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz",
    "Hunt", "Hicks", "Holmes", "Palmer", "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone",
    "Salazar", "Fox", "Warren", "Mills", "Meyer", "Rice", "Schmidt", "Garza", "Daniels", "Ferguson",
    "Nichols", "Stephens", "Soto", "Weaver", "Ryan", "Gardner", "Payne", "Grant", "Dunn", "Kelley",
    "Spencer", "Hawkins", "Arnold", "Pierce", "Vazquez", "Hansen", "Peters", "Santos", "Hart", "Bradley",
    "Knight", "Elliott", "Cunningham", "Duncan", "Armstrong", "Hudson", "Carroll", "Lane", "Riley",
    "Andrews", "Alvarado", "Ray", "Delgado", "Berry", "Perkins", "Hoffman", "Johnston", "Matthews", "Pena",
    "Richards", "Contreras", "Willis", "Carpenter", "Lawrence", "Sandoval", "O'Brien", "Lynch", "Singh",
    "Vega", "Bishop", "Montgomery", "Oliver", "Jensen", "Harvey", "Williamson", "Wong", "DeLeon", "McCoy",
)
NICKNAMES = {
    "Robert": ("Bob", "Rob"), "William": ("Bill", "Will"), "Elizabeth": ("Liz", "Beth"),
    "Katherine": ("Kate", "Katie"), "Michael": ("Mike",), "James": ("Jim",), "Jennifer": ("Jen",),
    "Richard": ("Rick", "Dick"), "Margaret": ("Peggy", "Maggie"), "Thomas": ("Tom",),
    "Christopher": ("Chris",), "Daniel": ("Dan",), "Joseph": ("Joe",), "Patricia": ("Pat", "Trish"),
    "Susan": ("Sue",), "Anthony": ("Tony",), "Charles": ("Charlie", "Chuck"), "Edward": ("Ed", "Ted"),
    "Jonathan": ("Jon",), "Nicholas": ("Nick",), "Stephen": ("Steve",), "Alexander": ("Alex",),
    "Samantha": ("Sam",), "Deborah": ("Deb",), "Rebecca": ("Becky",),
}
MIDDLE_INITIALS = "ABCDEFGHJKLMNPRSTW"

STREET_NAMES = (
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
    "Walnut", "Sunset", "Lincoln", "Jackson", "Church", "River", "Highland", "Jefferson", "Madison",
    "Franklin", "Adams", "Chestnut", "Spruce", "Willow", "Birch", "Meadow", "Forest", "Ridge", "Spring",
    "Center", "Mill", "Union", "Prospect", "Broad", "Market", "Water", "High", "School", "Bridge",
    "Mountain", "Valley", "Cherry", "Dogwood", "Magnolia", "Hickory", "Sycamore", "Aspen", "Laurel",
    "Holly", "Poplar", "Lakeview", "Fairview", "Hillcrest", "Woodland", "Greenwood", "Riverside",
    "Orchard", "Harbor", "Bay", "Cypress", "Colonial", "Heritage", "Liberty", "Grant", "Monroe",
    "Wilson", "Roosevelt", "Kennedy", "Evergreen", "Juniper", "Sherwood", "Windsor", "Cambridge",
    "Oxford", "Dover", "Front", "1st", "2nd", "3rd", "5th",
)
STREET_TYPES = ("Street", "Avenue", "Road", "Boulevard", "Drive", "Lane", "Court")
STREET_TYPE_WEIGHTS = (34, 22, 14, 6, 12, 7, 5)
STREET_ABBREVIATIONS = {
    "Street": "St", "Avenue": "Ave", "Road": "Rd", "Boulevard": "Blvd", "Drive": "Dr", "Lane": "Ln",
    "Court": "Ct",
}


class City(NamedTuple):
    name: str
    state: str
    zip: str
    area_codes: tuple[str, ...]
    weight: int


CITIES = (
    City("New York", "NY", "10001", ("212", "646", "917"), 40),
    City("Brooklyn", "NY", "11201", ("718", "347"), 18),
    City("Los Angeles", "CA", "90012", ("213", "323"), 30),
    City("San Francisco", "CA", "94103", ("415", "628"), 10),
    City("San Diego", "CA", "92101", ("619", "858"), 11),
    City("San Jose", "CA", "95113", ("408", "669"), 8),
    City("Sacramento", "CA", "95814", ("916",), 5),
    City("Chicago", "IL", "60601", ("312", "773"), 22),
    City("Houston", "TX", "77002", ("713", "832"), 20),
    City("Dallas", "TX", "75201", ("214", "469"), 12),
    City("Austin", "TX", "78701", ("512", "737"), 9),
    City("San Antonio", "TX", "78205", ("210",), 11),
    City("Phoenix", "AZ", "85004", ("602", "480"), 13),
    City("Philadelphia", "PA", "19103", ("215", "267"), 13),
    City("Pittsburgh", "PA", "15222", ("412",), 4),
    City("Miami", "FL", "33130", ("305", "786"), 6),
    City("Orlando", "FL", "32801", ("407",), 4),
    City("Tampa", "FL", "33602", ("813",), 5),
    City("Jacksonville", "FL", "32202", ("904",), 8),
    City("Atlanta", "GA", "30303", ("404", "678"), 7),
    City("Boston", "MA", "02108", ("617", "857"), 7),
    City("Seattle", "WA", "98101", ("206",), 7),
    City("Portland", "OR", "97204", ("503", "971"), 6),
    City("Denver", "CO", "80202", ("303", "720"), 7),
    City("Salt Lake City", "UT", "84111", ("801", "385"), 3),
    City("Las Vegas", "NV", "89101", ("702", "725"), 6),
    City("Minneapolis", "MN", "55401", ("612",), 4),
    City("Detroit", "MI", "48226", ("313",), 6),
    City("Columbus", "OH", "43215", ("614",), 8),
    City("Cleveland", "OH", "44113", ("216",), 4),
    City("Indianapolis", "IN", "46204", ("317",), 8),
    City("Nashville", "TN", "37203", ("615",), 6),
    City("Charlotte", "NC", "28202", ("704", "980"), 8),
    City("Raleigh", "NC", "27601", ("919", "984"), 4),
    City("Durham", "NC", "27701", ("919",), 3),
    City("Washington", "DC", "20001", ("202",), 6),
    City("Baltimore", "MD", "21202", ("410", "443"), 5),
    City("Kansas City", "MO", "64106", ("816",), 5),
    City("St. Louis", "MO", "63101", ("314",), 3),
    City("New Orleans", "LA", "70112", ("504",), 4),
    City("Milwaukee", "WI", "53202", ("414",), 5),
    City("Newark", "NJ", "07102", ("973", "862"), 3),
    City("Providence", "RI", "02903", ("401",), 2),
    City("Hartford", "CT", "06103", ("860",), 2),
    City("Albuquerque", "NM", "87102", ("505",), 5),
    City("Omaha", "NE", "68102", ("402",), 4),
)
ALL_AREA_CODES = tuple(sorted({code for city in CITIES for code in city.area_codes}))
STATE_NAMES = {
    "NY": "New York", "CA": "California", "IL": "Illinois", "TX": "Texas", "AZ": "Arizona",
    "PA": "Pennsylvania", "FL": "Florida", "GA": "Georgia", "MA": "Massachusetts", "WA": "Washington",
    "OR": "Oregon", "CO": "Colorado", "UT": "Utah", "NV": "Nevada", "MN": "Minnesota", "MI": "Michigan",
    "OH": "Ohio", "IN": "Indiana", "TN": "Tennessee", "NC": "North Carolina", "DC": "District of Columbia",
    "MD": "Maryland", "MO": "Missouri", "LA": "Louisiana", "WI": "Wisconsin", "NJ": "New Jersey",
    "RI": "Rhode Island", "CT": "Connecticut", "NM": "New Mexico", "NE": "Nebraska",
}

FREE_MAIL_DOMAINS = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com", "comcast.net",
)
FREE_MAIL_WEIGHTS = (40, 14, 9, 9, 8, 5, 3)
COMPANY_DOMAINS = (
    "contoso.com", "fabrikam.com", "northwindtraders.com", "initech.com", "globex.com", "hooli.com",
    "umbrellacorp.com", "wayneenterprises.com",
)
COMPANY_MAIL_SHARE = 0.12
JUNK_EMAILS = ("test@test.com", "noemail@noemail.com", "none@none.com", "")
JUNK_PHONES = ("0000000000", "1234567890", "555-555-5555")

# Share of people each source knows about.
CRM_SHARE = 0.70
SHOP_SHARE = 0.50
POS_SHARE = 0.30
SUPPORT_SHARE = 0.10
WEB_SHARE = 0.40
EMAIL_SHARE = 0.60

# Units are drawn until the population is full; these give ~25% of people in households of 2-4
# and ~0.5% of people with a twin.
TWIN_UNIT_RATE = 0.003
HOUSEHOLD_UNIT_RATE = 0.109
MOVER_RATE = 0.08
SECOND_EMAIL_RATE = 0.05

SHOP_CUSTOMER_ID_START = 6001234567
SHOP_ORDER_ID_START = 7001234567
PRODUCTS = tuple(
    (f"SKU-{10000 + 37 * i}", str(1000 + i), price)
    for i, price in enumerate(
        (1299, 1999, 2499, 2999, 3499, 3999, 4499, 4999, 5999, 6999, 7999, 8999, 9999, 12999, 14999,
         899, 1499, 1799, 2199, 2799, 3299, 3799, 4299, 5499, 6499, 7499, 8499, 10999, 15999, 19999,
         599, 799, 999, 1199, 1599, 2399, 2699, 3199, 4799, 24999)
    )
)
PRODUCT_SLUGS = (
    "classic-tee", "slim-jeans", "rain-jacket", "wool-sweater", "running-shoes", "canvas-tote",
    "leather-belt", "sun-hat", "linen-shirt", "chino-shorts", "hoodie", "yoga-pants", "ankle-socks",
    "denim-jacket", "puffer-vest", "sneakers", "flannel-shirt", "cargo-pants", "beanie", "scarf",
)
CATEGORIES = ("women", "men", "kids", "shoes", "accessories", "sale", "new-arrivals", "home")
USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
)
SUPPORT_SUBJECTS = (
    "Where is my order?", "Return request", "Refund not received", "Wrong size delivered",
    "Item arrived damaged", "Change shipping address", "Please cancel my order", "Loyalty points missing",
    "Promo code not working", "Stop sending me emails", "Password reset", "Question about sizing",
    "Item out of stock", "Charged twice", "Update my email address", "Store pickup delay",
    "Gift card balance", "Price adjustment request", "Account locked", "Delivery is late",
)
CAMPAIGNS = (
    ("cmp_2025_01_new_year_sale", "2025-01-03"), ("cmp_2025_01_clearance", "2025-01-17"),
    ("cmp_2025_02_valentines", "2025-02-06"), ("cmp_2025_02_presidents_day", "2025-02-14"),
    ("cmp_2025_03_spring_preview", "2025-03-04"), ("cmp_2025_03_loyalty_double_points", "2025-03-20"),
    ("cmp_2025_04_easter", "2025-04-10"), ("cmp_2025_04_earth_day", "2025-04-22"),
    ("cmp_2025_05_mothers_day", "2025-05-01"), ("cmp_2025_05_memorial_day", "2025-05-22"),
    ("cmp_2025_06_fathers_day", "2025-06-05"), ("cmp_2025_06_summer_sale", "2025-06-19"),
    ("cmp_newsletter_2025_w05", "2025-01-30"), ("cmp_newsletter_2025_w09", "2025-02-27"),
    ("cmp_newsletter_2025_w14", "2025-04-03"), ("cmp_newsletter_2025_w18", "2025-05-01"),
    ("cmp_newsletter_2025_w23", "2025-06-05"), ("cmp_newsletter_2025_w26", "2025-06-26"),
)

CRM_HEADER = (
    "ContactId", "First Name", "Last Name", "Email", "Phone", "Mailing Street", "Mailing City",
    "Mailing State", "Mailing Postal Code", "Mailing Country", "Birthdate", "Email Opt In", "Last Modified",
)
POS_HEADER = ("card_number", "name", "phone", "postal_code", "birth_date", "enrolled_at", "marketing_ok")
SUPPORT_HEADER = ("ticket_id", "requester_email", "requester_name", "subject", "status", "priority",
                  "created_at")
EMAIL_HEADER = ("email", "event", "campaign_id", "timestamp")
TRUTH_HEADER = ("source", "source_record_id", "person_id")
WEB_DAYS = tuple(REFERENCE_DATE - timedelta(days=6 - i) for i in range(7))

_ALNUM = string.ascii_letters + string.digits
_WRITE_BUFFER = 1 << 20  # fewer system calls for files of hundreds of megabytes
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_QUOTE = json.encoder.encode_basestring_ascii  # the C string encoder behind json.dumps


def _json_string(value: str | None) -> str:
    return "null" if value is None else _QUOTE(value)


class SeededRandom(random.Random):
    """``random.Random`` with float-based integer draws.

    The stock ``randint``/``randrange``/``choice`` spend most of their time on argument handling; at
    tens of millions of calls that alone costs minutes. Derived from ``random()``, these stay seeded and
    stable across Python versions. ``randrange`` takes no step.
    """

    def randint(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + int(self.random() * (b - a + 1))

    def randrange(self, start: int, stop: int | None = None) -> int:  # type: ignore[override]
        if stop is None:
            start, stop = 0, start
        return start + int(self.random() * (stop - start))

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.random() * len(seq))]


class Weighted:
    """A weighted choice prepared once, because the same draws repeat millions of times."""

    __slots__ = ("values", "cumulative", "total")

    def __init__(self, values: Sequence[Any], weights: Sequence[float]) -> None:
        self.values = tuple(values)
        self.cumulative = list(itertools.accumulate(weights))
        self.total = self.cumulative[-1]

    @classmethod
    def zipf(cls, values: Sequence[Any], exponent: float) -> Weighted:
        """Rank r (1-based) weighs 1 / (r + 1) ** exponent: a few very common values, a long tail."""
        return cls(values, [1.0 / (rank + 1) ** exponent for rank in range(1, len(values) + 1)])

    def draw(self, rng: random.Random) -> Any:
        return self.values[bisect.bisect(self.cumulative, rng.random() * self.total)]


MALE_NAMES = Weighted.zipf(MALE_FIRST_NAMES, 0.75)
FEMALE_NAMES = Weighted.zipf(FEMALE_FIRST_NAMES, 0.75)
SURNAMES = Weighted.zipf(LAST_NAMES, 0.75)
STREETS = Weighted.zipf(STREET_NAMES, 0.3)
STREET_TYPE_CHOICE = Weighted(STREET_TYPES, STREET_TYPE_WEIGHTS)
CITY_CHOICE = Weighted(range(len(CITIES)), [city.weight for city in CITIES])
FREE_MAIL_CHOICE = Weighted(FREE_MAIL_DOMAINS, FREE_MAIL_WEIGHTS)
PHONE_STYLE = Weighted(range(5), (30, 15, 30, 10, 15))
HOUSEHOLD_SIZE = Weighted((2, 3, 4), (55, 25, 20))
COUNTRY_SPELLING = Weighted(("US", "USA", "United States", ""), (50, 25, 17, 8))
OPT_IN = Weighted(("true", "false", ""), (45, 40, 15))
SHOP_TAGS = Weighted(("", "vip", "newsletter", "vip,newsletter", "wholesale", "newsletter,returns"),
                     (62, 8, 18, 6, 2, 4))
LINE_ITEM_COUNT = Weighted((1, 2, 3, 4), (50, 30, 14, 6))
ORDERS_PER_CUSTOMER = Weighted(range(9), (12, 16, 17, 15, 12, 9, 7, 6, 6))
MARKETING_OK = Weighted(("Y", "N", ""), (45, 35, 20))
TICKETS_PER_REQUESTER = Weighted((1, 2, 3), (60, 28, 12))
TICKET_STATUS = Weighted(("open", "pending", "solved", "closed"), (3, 5, 22, 70))
TICKET_PRIORITY = Weighted(("low", "normal", "high", "urgent"), (25, 55, 15, 5))
DEVICES_PER_BROWSER = Weighted((1, 2, 3), (60, 30, 10))
SESSIONS_PER_DEVICE = Weighted((1, 2, 3), (60, 30, 10))
PRODUCTS_PER_SESSION = Weighted((0, 1, 2), (35, 45, 20))


# --------------------------------------------------------------------------------------------------
# The true people
# --------------------------------------------------------------------------------------------------


class Address(NamedTuple):
    number: int
    street: str
    street_type: str
    unit: str
    city: int  # index into CITIES


@dataclass(slots=True)
class Person:
    """A real customer; every person-bearing source record is a distorted view of one of these."""

    pid: str
    first: str
    middle: str
    last: str
    dob: date
    email: str
    mobile: str
    home: Address
    landline: str | None = None
    email2: str | None = None
    old_email: str | None = None
    old_home: Address | None = None
    household: int | None = None
    shop_id: int | None = None
    shop_email: str | None = None


_DOB_MIN = date(1940, 1, 1).toordinal()
_DOB_MAX = date(2006, 12, 31).toordinal()


def _clip_dob(ordinal: int) -> date:
    return date.fromordinal(min(max(ordinal, _DOB_MIN), _DOB_MAX))


def _mailbox(email: str) -> str:
    """The mailbox an address delivers to: Gmail ignores dots, so jane.doe@ and janedoe@ are one person's."""
    local, _, domain = email.partition("@")
    return f"{local.replace('.', '')}@{domain}" if domain == "gmail.com" else email


@functools.cache
def _email_token(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


class _PeopleBuilder:
    """Draws people household by household, because shared addresses and phones come from there."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.people: list[Person] = []
        self.used_emails: set[str] = set()
        self.used_phones: set[str] = set()
        self.households = 0

    def first_name(self, female: bool) -> str:
        if female:
            return FEMALE_NAMES.draw(self.rng)
        return MALE_NAMES.draw(self.rng)

    def last_name(self) -> str:
        return SURNAMES.draw(self.rng)

    def address(self, city: int | None = None) -> Address:
        rng = self.rng
        roll = rng.random()
        number = rng.randint(1, 999) if roll < 0.5 else rng.randint(1000, 9999) if roll < 0.95 else (
            rng.randint(10000, 29999))
        unit = ""
        if rng.random() < 0.18:
            style = rng.randrange(4)
            if style == 0:
                unit = f"Apt {rng.randint(1, 20)}{rng.choice('ABCDEF')}"
            elif style == 1:
                unit = f"Apt {rng.randint(101, 1520)}"
            elif style == 2:
                unit = f"Unit {rng.randint(1, 40)}"
            else:
                unit = f"#{rng.randint(1, 30)}"
        if city is None:
            city = CITY_CHOICE.draw(rng)
        street = STREETS.draw(rng)
        street_type = STREET_TYPE_CHOICE.draw(rng)
        return Address(number, street, street_type, unit, city)

    def phone(self, area_codes: Sequence[str]) -> str:
        rng = self.rng
        while True:
            exchange = rng.randint(200, 999)
            if exchange % 100 == 11:  # N11 codes are service numbers, never exchanges
                continue
            number = f"{rng.choice(area_codes)}{exchange}{rng.randint(0, 9999):04d}"
            if number not in self.used_phones:
                self.used_phones.add(number)
                return number

    def email(self, first: str, last: str, middle: str, dob: date, *, work: bool | None = None) -> str:
        rng = self.rng
        f, last_token = _email_token(first), _email_token(last)
        if work is None:
            work = rng.random() < COMPANY_MAIL_SHARE
        if work:
            domain = rng.choice(COMPANY_DOMAINS)
            local = f"{f}.{last_token}" if rng.random() < 0.7 else f"{f[0]}{last_token}"
        else:
            domain = FREE_MAIL_CHOICE.draw(rng)
            pattern = rng.randrange(10)
            if pattern < 3:
                local = f"{f}.{last_token}"
            elif pattern == 3:
                local = f"{f}{last_token}"
            elif pattern == 4:
                local = f"{f[0]}{last_token}{rng.randint(10, 99)}"
            elif pattern == 5:
                local = f"{f}.{last_token}{rng.randint(1, 99)}"
            elif pattern == 6:
                local = f"{f}_{last_token}"
            elif pattern == 7:
                local = f"{f}{dob.year}" if rng.random() < 0.5 else f"{f}{dob.year % 100:02d}"
            elif pattern == 8:
                local = f"{last_token}.{f}" if rng.random() < 0.5 else f"{f[0]}.{last_token}"
            elif middle:
                local = f"{f}.{middle.lower()}.{last_token}"
            else:
                local = f"{f}{last_token}{rng.randint(1, 9)}"
        email = f"{local}@{domain}"
        tries = 0
        while _mailbox(email) in self.used_emails:
            tries += 1
            # A common name's thousand numbered mailboxes at one domain fill up only among millions of people
            # (a thousand failed draws in a row): then draw from ten times as many each thousand more.
            email = f"{local}{rng.randint(1, 999 * 10 ** min(tries // 1000, 6))}@{domain}"
        self.used_emails.add(_mailbox(email))
        return email

    def add_unit(self, size: int, twins: bool) -> None:
        """Adds a single person or a household sharing address and landline (twins share the DOB too)."""
        rng = self.rng
        home = self.address()
        city = CITIES[home.city]
        landline = self.phone(city.area_codes) if size > 1 or rng.random() < 0.15 else None
        old_home = None
        if rng.random() < MOVER_RATE:
            old_home = self.address(home.city if rng.random() < 0.5 else None)
        household = None
        if size > 1:
            self.households += 1
            household = self.households
        family_name = self.last_name()
        anchor = rng.randint(_DOB_MIN, _DOB_MAX)
        twin_first = ""
        for member in range(size):
            female = rng.random() < 0.5
            first = self.first_name(female)
            last = family_name
            if twins and member < 2:
                dob = date.fromordinal(anchor)
                while first == twin_first:
                    first = self.first_name(female)
                twin_first = first
            elif twins:  # a parent living with adult twins, or an older sibling
                parent = anchor - rng.randint(20 * 365, 38 * 365)
                dob = _clip_dob(parent if parent >= _DOB_MIN else anchor - rng.randint(700, 2500))
            elif member == 0:
                dob = date.fromordinal(anchor)
            elif member == 1:
                dob = _clip_dob(anchor + rng.randint(-6 * 365, 6 * 365))
                if rng.random() < 0.15:
                    last = self.last_name()
            else:
                child = anchor + rng.randint(20 * 365, 35 * 365)
                dob = _clip_dob(child if child <= _DOB_MAX else anchor + rng.randint(-10 * 365, 10 * 365))
                if rng.random() < 0.1:
                    last = self.last_name()
            middle = rng.choice(MIDDLE_INITIALS) if rng.random() < 0.65 else ""
            mobile_codes = city.area_codes if rng.random() < 0.7 else ALL_AREA_CODES
            person = Person(
                pid=f"P{len(self.people) + 1:07d}",
                first=first,
                middle=middle,
                last=last,
                dob=dob,
                email=self.email(first, last, middle, dob),
                mobile=self.phone(mobile_codes),
                home=home,
                landline=landline,
                old_home=old_home,
                household=household,
            )
            if rng.random() < SECOND_EMAIL_RATE:
                person.email2 = self.email(first, last, middle, dob, work=rng.random() < 0.5)
            if old_home is not None and rng.random() < 0.4:
                person.old_email = self.email(first, last, middle, dob, work=rng.random() < 0.3)
            self.people.append(person)


def build_people(rng: random.Random, count: int) -> list[Person]:
    """Draws the true population, the first thing ``generate`` does with its generator.

    Public so that notebooks can look at the people behind the files:
    ``build_people(SeededRandom(seed), count)`` returns exactly the people of ``generate(count, seed, ...)``.
    """
    builder = _PeopleBuilder(rng)
    while len(builder.people) < count:
        remaining = count - len(builder.people)
        roll = rng.random()
        if roll < TWIN_UNIT_RATE and remaining >= 2:
            builder.add_unit(min(remaining, 3 if rng.random() < 0.4 else 2), twins=True)
        elif roll < TWIN_UNIT_RATE + HOUSEHOLD_UNIT_RATE and remaining >= 2:
            builder.add_unit(min(remaining, HOUSEHOLD_SIZE.draw(rng)), twins=False)
        else:
            builder.add_unit(1, twins=False)
    return builder.people


# --------------------------------------------------------------------------------------------------
# Formatting and mess
# --------------------------------------------------------------------------------------------------


# Timestamps are formatted from lookup tables: strftime on every row was a large share of the run time.
_CLOCK = tuple(f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}" for second in range(86400))
_MILLIS_Z = tuple(f".{ms:03d}Z" for ms in range(1000))
_UNIX_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@functools.cache
def _date_part(day: int) -> str:
    """ISO date of a day number counted from 1970-01-01."""
    return date.fromordinal(_UNIX_EPOCH_ORDINAL + day).isoformat()


def _iso_z(ts: int) -> str:
    day, second = divmod(ts, 86400)
    return f"{_date_part(day)}T{_CLOCK[second]}Z"


def _local_datetime(ts: int, utc_offset_hours: int, separator: str = "T") -> str:
    day, second = divmod(ts + utc_offset_hours * 3600, 86400)
    return f"{_date_part(day)}{separator}{_CLOCK[second]}"


@functools.lru_cache(maxsize=64)
def _us_eastern_dst(year: int) -> tuple[int, int]:
    """UTC bounds of daylight saving time in New York: 2nd Sunday of March to 1st Sunday of November."""
    march = date(year, 3, 1)
    start = march + timedelta(days=(6 - march.weekday()) % 7 + 7)
    november = date(year, 11, 1)
    end = november + timedelta(days=(6 - november.weekday()) % 7)
    return (calendar.timegm((start.year, 3, start.day, 7, 0, 0)),
            calendar.timegm((end.year, 11, end.day, 6, 0, 0)))


def _iso_eastern(ts: int) -> str:
    """Store-local time with offset, the way Shopify writes timestamps."""
    # The year estimate can be off around New Year, when daylight saving time never applies anyway.
    start, end = _us_eastern_dst(1970 + ts // 31_556_952)
    if start <= ts < end:
        return _local_datetime(ts, -4) + "-04:00"
    return _local_datetime(ts, -5) + "-05:00"


def _ts(day: date) -> int:
    return calendar.timegm((day.year, day.month, day.day, 0, 0, 0))


REFERENCE_END_TS = _ts(REFERENCE_DATE) + 86399


def _format_phone(digits: str, style: int) -> str:
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    if style == 0:
        return f"({area}) {exchange}-{line}"
    if style == 1:
        return f"{area}.{exchange}.{line}"
    if style == 2:
        return f"{area}-{exchange}-{line}"
    if style == 3:
        return f"+1 {area} {exchange} {line}"
    return digits


def _typo(rng: random.Random, text: str) -> str:
    """One keystroke error away from the original, never touching the first character."""
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.random()
    if kind < 0.3:
        return text[:i] + text[i + 1:]
    if kind < 0.55:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind < 0.8:
        return text[:i] + text[i] + text[i:]
    return text[:i] + rng.choice("aeiounrst") + text[i + 1:]


def _title_case_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return ".".join(part.capitalize() for part in local.split(".")) + "@" + domain.capitalize()


def _gmail_variant(rng: random.Random, email: str) -> str:
    """Gmail ignores dots and +tags, so people write the same mailbox several ways."""
    local, _, domain = email.partition("@")
    roll = rng.random()
    if "." in local and roll < 0.4:
        local = local.replace(".", "")
    elif "." not in local and roll < 0.6 and len(local) > 3:
        cut = rng.randrange(1, len(local) - 1)
        local = local[:cut] + "." + local[cut:]
    else:
        local = f"{local}+{rng.choice(('shop', 'store', 'promo', 'deals', 'orders'))}"
    return f"{local}@{domain}"


class _Mess:
    """The damage manual entry and careless exports do to values, at per-source rates."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def name(self, name: str, typo_rate: float = 0.03) -> str:
        rng = self.rng
        if rng.random() < typo_rate:
            name = _typo(rng, name)
        roll = rng.random()
        if roll < 0.10:
            return name.upper()
        if roll < 0.13:
            return name.lower()
        if roll < 0.15:
            return f" {name}" if roll < 0.14 else f"{name}  "
        return name

    def first_name(self, person: Person, nickname_rate: float) -> str:
        nicknames = NICKNAMES.get(person.first)
        if nicknames and self.rng.random() < nickname_rate:
            return self.name(self.rng.choice(nicknames))
        return self.name(person.first)

    def email(self, email: str, missing: float = 0.05, junk: float = 0.01) -> str:
        rng = self.rng
        if rng.random() < missing:
            return ""
        roll = rng.random()
        if roll < junk:
            return rng.choice(JUNK_EMAILS)
        if roll < junk + 0.002:
            return self.invalid_email(email)
        if roll < 0.05:
            return _title_case_email(email)
        if roll < 0.08 and email.endswith("@gmail.com"):
            return _gmail_variant(rng, email)
        if roll < 0.11:
            local, _, domain = email.partition("@")
            return f"{_typo(rng, local)}@{domain}"
        if roll < 0.12:
            return f" {email}" if roll < 0.115 else f"{email} "
        return email

    def invalid_email(self, email: str) -> str:
        local, _, domain = email.partition("@")
        return self.rng.choice((f"{local}@", f"{local}@@{domain}", "not an email", f"{local} at {domain}"))

    def phone(self, digits: str, missing: float = 0.1, junk: float = 0.01) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < missing:
            return ""
        if roll < missing + junk:
            return rng.choice(JUNK_PHONES)
        return _format_phone(digits, PHONE_STYLE.draw(rng))

    def street(self, home: Address, with_unit: bool = True) -> str:
        rng = self.rng
        street = _typo(rng, home.street) if rng.random() < 0.03 else home.street
        roll = rng.random()
        street_type = home.street_type
        if roll < 0.25:
            street_type = STREET_ABBREVIATIONS[street_type]
        elif roll < 0.30:
            street_type = STREET_ABBREVIATIONS[street_type] + "."
        line = f"{home.number} {street} {street_type}"
        if with_unit and home.unit:
            line = f"{line}{rng.choice((' ', ', '))}{home.unit}"
        if rng.random() < 0.08:
            line = line.upper()
        elif rng.random() < 0.02:
            line = line.replace(" ", "  ", 1)
        return line

    def zip_code(self, code: str, missing: float = 0.05) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < missing:
            return ""
        if roll < missing + 0.05:
            return f"{code}-{rng.randint(1000, 9999)}"
        return code

    def impossible_date(self, year: int, style: str) -> str:
        month, day = self.rng.choice(((2, 30), (13, 45), (4, 31), (0, 12)))
        if style == "us":
            return f"{month:02d}/{day:02d}/{year}"
        return f"{year}{month:02d}{day:02d}"

    def timestamp_between(self, start: int, end: int) -> int:
        return self.rng.randint(start, max(start, end))


class _Truth:
    """Streams ground-truth rows; every person-bearing record is registered as it is written."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.writer = csv.writer(handle, lineterminator="\n")
        self.writer.writerow(TRUTH_HEADER)
        self.rows = 0

    def add(self, source: str, record_id: str | int, person_id: str) -> None:
        """Generated ids never need CSV quoting; e-mail values as written might, so they go via csv."""
        if source == "email_engagement":
            self.writer.writerow((source, record_id, person_id))
        else:
            self.handle.write(f"{source},{record_id},{person_id}\n")
        self.rows += 1


def _open_text(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8", newline="", buffering=_WRITE_BUFFER)


def _sample(rng: random.Random, people: list[Person], share: float) -> list[Person]:
    """Membership per source, in a shuffled order so that files do not reveal who lives together."""
    chosen = [person for person in people if rng.random() < share]
    rng.shuffle(chosen)
    return chosen


# --------------------------------------------------------------------------------------------------
# CRM
# --------------------------------------------------------------------------------------------------


class _CsvFile:
    """A CSV file opened in binary mode, so that one line can carry a byte that is not valid UTF-8."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.binary = path.open("wb", buffering=_WRITE_BUFFER)
        self.text = io.TextIOWrapper(self.binary, encoding="utf-8", newline="")
        self.writer = csv.writer(self.text, lineterminator="\n")
        self.rows = 0

    def row(self, fields: Sequence[Any]) -> None:
        self.writer.writerow(fields)
        self.rows += 1

    def raw(self, line: bytes) -> None:
        self.text.flush()
        self.binary.write(line)
        self.rows += 1

    def close(self) -> None:
        self.text.close()


class _CrmWriter:
    """Renders CRM contacts; each ContactId enters the ground truth the moment it is issued."""

    JAN_START = _ts(date(2019, 3, 1))
    JAN_END = _ts(date(2025, 1, 14)) + 86399
    JUN_START = _ts(date(2025, 1, 20))
    JUN_END = _ts(date(2025, 6, 27)) + 86399

    def __init__(self, rng: random.Random, mess: _Mess, truth: _Truth) -> None:
        self.rng = rng
        self.mess = mess
        self.truth = truth
        self.used_ids: set[str] = set()

    def contact_id(self, person: Person) -> str:
        rng = self.rng
        while True:
            cid = "0035g00000" + "".join(rng.choices(_ALNUM, k=8))
            if cid not in self.used_ids:
                self.used_ids.add(cid)
                self.truth.add("crm_contacts", cid, person.pid)
                return cid

    def fields(self, person: Person, cid: str, home: Address, email: str, modified: int,
               duplicate: bool = False) -> list[str]:
        rng, mess = self.rng, self.mess
        city = CITIES[home.city]
        first = mess.first_name(person, 0.5 if duplicate else 0.05)
        if rng.random() < 0.02:
            first = ""
        last = mess.name(person.last) if rng.random() >= 0.02 else ""
        number = person.landline if person.landline and rng.random() < 0.2 else person.mobile
        street = mess.street(home) if rng.random() >= 0.07 else ""
        city_name = city.name if rng.random() >= 0.05 else ""
        if city_name and rng.random() < 0.05:
            city_name = city_name.upper()
        roll = rng.random()
        state = city.state if roll >= 0.08 else STATE_NAMES[city.state] if roll >= 0.03 else ""
        country = COUNTRY_SPELLING.draw(rng)
        dob = person.dob
        roll = rng.random()
        if roll < 0.10:
            birth = ""
        elif roll < 0.25:
            birth = dob.isoformat()
        elif roll < 0.253:
            birth = mess.impossible_date(dob.year, "us")
        else:
            birth = f"{dob.month:02d}/{dob.day:02d}/{dob.year}"
        return [
            cid, first, last, mess.email(email), mess.phone(number, missing=0.12), street, city_name, state,
            mess.zip_code(city.zip), country, birth, OPT_IN.draw(rng),
            _iso_z(modified),
        ]

    def broken_line(self, kind: str, person: Person) -> bytes:
        """The three kinds of damage seen in real CRM exports; each still belongs to a real person."""
        cid = self.contact_id(person)
        modified = self.mess.timestamp_between(self.JUN_START, self.JUN_END)
        fields = self.fields(person, cid, person.home, person.email, modified)
        fields = [value.replace('"', "").replace(",", " ") for value in fields]
        if kind == "open_quote":
            fields[1] = '"' + (fields[1] or person.first)
            return (",".join(fields) + "\n").encode("utf-8")
        if kind == "extra_fields":
            # An unquoted comma inside a value plus a stray trailing delimiter: 15 fields, not 13.
            home = person.home
            if home.unit:
                fields[5] = f"{home.number} {home.street} {home.street_type},{home.unit}"
            else:
                city = CITIES[home.city]
                fields[6] = f"{city.name},{STATE_NAMES[city.state]}"
            return (",".join(fields) + ",\n").encode("utf-8")
        fields[2] = person.last.replace("e", "\u00e9", 1) if "e" in person.last else person.last + "\u00e9"
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(fields)
        return buffer.getvalue().encode("latin-1")


def _write_crm(rng: random.Random, mess: _Mess, people: list[Person], out_dir: Path, truth: _Truth,
               counts: dict[str, int]) -> None:
    crm_people = _sample(rng, people, CRM_SHARE)
    writer = _CrmWriter(rng, mess, truth)
    # Broken lines go before the June rows at these positions; the estimate stays below the real
    # June volume (~13% of CRM people) so that normal rows follow each of them.
    estimate = max(3, int(len(crm_people) * 0.10))
    targets = sorted(rng.sample(range(estimate), 3))
    kinds = ["open_quote", "extra_fields", "latin1"]
    rng.shuffle(kinds)
    accented = [person for person in people if person.last in ("Perez", "Mendez")]
    accented = accented or [person for person in people if "e" in person.last] or people
    broken = [(kind, rng.choice(accented) if kind == "latin1" else rng.choice(people)) for kind in kinds]

    jan = _CsvFile(out_dir / "crm" / "contacts_2025-01.csv")
    jun = _CsvFile(out_dir / "crm" / "contacts_2025-06.csv")
    try:
        jan.row(CRM_HEADER)
        jun.row(CRM_HEADER)
        normal_june_rows = 0

        def june_row(fields: list[str]) -> None:
            nonlocal normal_june_rows
            if broken and normal_june_rows >= targets[0]:
                targets.pop(0)
                kind, person = broken.pop(0)
                jun.raw(writer.broken_line(kind, person))
            jun.row(fields)
            normal_june_rows += 1

        for person in crm_people:
            for copy in range(2 if rng.random() < 0.02 else 1):
                duplicate = copy == 1
                cid = writer.contact_id(person)
                if rng.random() < 0.09:  # created after the January export
                    modified = mess.timestamp_between(writer.JUN_START, writer.JUN_END)
                    june_row(writer.fields(person, cid, person.home, person.email, modified, duplicate))
                    continue
                stale = person.old_home is not None and rng.random() < 0.6
                home = person.old_home if stale and person.old_home else person.home
                email = person.email
                if stale and person.old_email and rng.random() < 0.7:
                    email = person.old_email
                elif person.email2 and rng.random() < 0.3:
                    email = person.email2
                modified = mess.timestamp_between(writer.JAN_START, writer.JAN_END)
                jan.row(writer.fields(person, cid, home, email, modified, duplicate))
                if (stale and rng.random() < 0.5) or rng.random() < 0.025:
                    new_email = person.email
                    if not stale and person.email2 and email != person.email2:
                        new_email = person.email2
                    modified = mess.timestamp_between(writer.JUN_START, writer.JUN_END)
                    june_row(writer.fields(person, cid, person.home, new_email, modified, duplicate))
        for kind, person in broken:  # only reached for tiny populations
            jun.raw(writer.broken_line(kind, person))
    finally:
        jan.close()
        jun.close()
    counts["crm/contacts_2025-01.csv"] = jan.rows - 1
    counts["crm/contacts_2025-06.csv"] = jun.rows - 1


# --------------------------------------------------------------------------------------------------
# Shop customers and orders
# --------------------------------------------------------------------------------------------------


def _shop_email(rng: random.Random, mess: _Mess, person: Person) -> str | None:
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.07 and person.email2:
        email = person.email2
    elif roll < 0.12 and person.old_email:
        email = person.old_email
    else:
        email = person.email
    roll = rng.random()
    if roll < 0.30 and email.endswith("@gmail.com"):
        email = _gmail_variant(rng, email)
    if rng.random() < 0.08:
        email = _title_case_email(email)
    return mess.email(email, missing=0.0, junk=0.01) or None


def _write_shop_customers(rng: random.Random, mess: _Mess, people: list[Person], out_dir: Path,
                          truth: _Truth, counts: dict[str, int]) -> list[tuple[Person, int]]:
    """Writes customers in id order, ids growing with signup time as a real shop assigns them."""
    customers = _sample(rng, people, SHOP_SHARE)
    start, end = _ts(date(2019, 1, 1)), _ts(date(2025, 6, 25))
    signups = sorted(rng.randint(start, end) for _ in customers)
    broken_at = len(customers) // 2
    path = out_dir / "shop" / "customers.jsonl"
    rows = 0
    created_list: list[tuple[Person, int]] = []
    with _open_text(path) as handle:
        customer_id = SHOP_CUSTOMER_ID_START
        for index, (person, created) in enumerate(zip(customers, signups, strict=True)):
            customer_id += rng.randint(3, 40)
            person.shop_id = customer_id
            email = _shop_email(rng, mess, person)
            person.shop_email = email
            truth.add("shop_customers", customer_id, person.pid)
            created_list.append((person, created))
            home = person.home
            if person.old_home is not None and rng.random() < 0.15:
                home = person.old_home
            address = "null"
            if rng.random() >= 0.15:
                city = CITIES[home.city]
                unit = home.unit or (None if rng.random() < 0.5 else "")
                address = (
                    f'{{"address1":{_QUOTE(mess.street(home, with_unit=False))},'
                    f'"address2":{_json_string(unit)},"city":{_QUOTE(city.name)},'
                    f'"province_code":"{city.state}","zip":"{mess.zip_code(city.zip, missing=0.01)}",'
                    f'"country_code":"US"}}'
                )
            phone = None
            if rng.random() < 0.6:
                use_landline = person.landline is not None and rng.random() < 0.1
                phone = f"+1{person.landline if use_landline else person.mobile}"
            first = mess.first_name(person, 0.08) if rng.random() >= 0.03 else None
            marketing = "true" if rng.random() < 0.45 else "false"
            updated = mess.timestamp_between(created, REFERENCE_END_TS - 86400)
            line = (
                f'{{"id":{customer_id},"email":{_json_string(email)},"first_name":{_json_string(first)},'
                f'"last_name":{_QUOTE(mess.name(person.last))},"phone":{_json_string(phone)},'
                f'"accepts_marketing":{marketing},"created_at":"{_iso_eastern(created)}",'
                f'"updated_at":"{_iso_eastern(updated)}","default_address":{address},'
                f'"tags":"{SHOP_TAGS.draw(rng)}"}}'
            )
            if index == broken_at:
                # A write cut short, then an empty line: the id survives but the object does not parse.
                handle.write(line[: max(len(line) * 3 // 5, 40)] + "\n\n")
            else:
                handle.write(line + "\n")
            rows += 1
    counts["shop/customers.jsonl"] = rows
    return created_list


ORDER_ITEM_JSON = tuple(
    tuple(f'{{"sku":"{sku}","quantity":{quantity},"price":"{cents // 100}.{cents % 100:02d}"}}'
          for quantity in (1, 2, 3))
    for sku, _, cents in PRODUCTS
)


def _line_items(rng: random.Random) -> tuple[str, int]:
    """Serialized line items and their total in cents; item JSON is prepared once per product."""
    items, total = [], 0
    for _ in range(LINE_ITEM_COUNT.draw(rng)):
        product = rng.randrange(len(PRODUCTS))
        quantity = 1 if rng.random() < 0.8 else rng.randint(2, 3)
        total += PRODUCTS[product][2] * quantity
        items.append(ORDER_ITEM_JSON[product][quantity - 1])
    return ",".join(items), total


def _guest_email(rng: random.Random, mess: _Mess, person: Person) -> str:
    email = person.email2 if person.email2 and rng.random() < 0.2 else person.email
    if email.endswith("@gmail.com") and rng.random() < 0.2:
        email = _gmail_variant(rng, email)
    return mess.email(email, missing=0.0, junk=0.005)


def _write_orders(rng: random.Random, mess: _Mess, people: list[Person],
                  customers: list[tuple[Person, int]], out_dir: Path, truth: _Truth,
                  counts: dict[str, int]) -> None:
    # A few orders whose amounts or timestamps cannot be trusted. Their positions are drawn below the
    # number of customers, which the order count (~3.5 per customer) practically always exceeds.
    anomalies = [("total_price", "-12.00"), ("total_price", "abc"), ("created_at", "not a date"),
                 ("created_at", "2025-13-45T99:00:00Z")]
    rng.shuffle(anomalies)
    targets = sorted(rng.sample(range(max(len(customers), len(anomalies))), len(anomalies)))
    order_id = SHOP_ORDER_ID_START
    rows = 0

    def write_order(handle: IO[str], person: Person, customer_id: int | None, email: str | None,
                    created: int) -> None:
        nonlocal order_id, rows
        order_id += rng.randint(1, 12)
        items, total = _line_items(rng)
        created_at, total_price = _iso_eastern(created), f"{total // 100}.{total % 100:02d}"
        if targets and rows == targets[0]:
            targets.pop(0)
            field, value = anomalies.pop(0)
            if field == "total_price":
                total_price = value
            else:
                created_at = value
        customer = f'{{"id":{customer_id}}}' if customer_id is not None else "null"
        status = "refunded" if rng.random() < 0.05 else "paid"
        # Assembled by hand: orders are the largest JSON file and json.dumps dominated the run time.
        handle.write(
            f'{{"id":{order_id},"created_at":"{created_at}","total_price":"{total_price}","currency":"USD",'
            f'"customer":{customer},"email":{_json_string(email)},"line_items":[{items}],'
            f'"financial_status":"{status}"}}\n'
        )
        truth.add("shop_orders", order_id, person.pid)
        rows += 1

    def guest_order(handle: IO[str]) -> None:
        person = rng.choice(people)
        if person.shop_id is not None and rng.random() < 0.6:
            person = rng.choice(people)  # guests are mostly people without an account
        created = rng.randint(_ts(date(2022, 1, 1)), REFERENCE_END_TS - 3600)
        write_order(handle, person, None, _guest_email(rng, mess, person), created)

    with _open_text(out_dir / "shop" / "orders.jsonl") as handle:
        for person, created in customers:
            for _ in range(ORDERS_PER_CUSTOMER.draw(rng)):
                email = person.shop_email if rng.random() < 0.95 else person.email
                placed = rng.randint(created, REFERENCE_END_TS - 3600)
                write_order(handle, person, person.shop_id, email, placed)
                if rng.random() < 0.1765:  # ~15% of all orders are guest checkouts
                    guest_order(handle)
        while anomalies:  # only reached for tiny populations
            targets[0] = rows
            guest_order(handle)
    counts["shop/orders.jsonl"] = rows


# --------------------------------------------------------------------------------------------------
# Point of sale, support, web, e-mail
# --------------------------------------------------------------------------------------------------


def _pos_name(rng: random.Random, person: Person) -> str:
    first = person.first
    nicknames = NICKNAMES.get(first)
    if nicknames and rng.random() < 0.25:
        first = rng.choice(nicknames)
    last = person.last
    if rng.random() < 0.03:
        last = _typo(rng, last)
    elif rng.random() < 0.02:
        first = _typo(rng, first)
    middle = person.middle
    style = rng.randrange(10)
    if style < 2:
        name = f"{last.upper()}, {first.upper()}"
    elif style < 5:
        name = f"{first} {middle}. {last}" if middle else f"{first} {last}"
    elif style < 6:
        name = f"{first} {last}".lower()
    elif style < 8:
        name = f"{last}, {first} {middle}." if middle else f"{last}, {first}"
    else:
        name = f"{first} {last}"
    if rng.random() < 0.03:
        name = f" {name.replace(' ', '  ', 1)} "
    return name


def _write_pos(rng: random.Random, mess: _Mess, people: list[Person], out_dir: Path, truth: _Truth,
               counts: dict[str, int]) -> None:
    members = _sample(rng, people, POS_SHARE)
    used: set[int] = set()
    start = _ts(date(2016, 5, 1))
    with _open_text(out_dir / "pos" / "loyalty_members.csv") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(POS_HEADER)
        for person in members:
            card = rng.randrange(10**11, 10**12)
            while card in used:
                card = rng.randrange(10**11, 10**12)
            used.add(card)
            truth.add("pos_loyalty", card, person.pid)
            number = person.landline if person.landline and rng.random() < 0.6 else person.mobile
            home = person.old_home if person.old_home is not None and rng.random() < 0.85 else person.home
            postal = mess.zip_code(CITIES[home.city].zip, missing=0.06)
            if postal.startswith("0") and rng.random() < 0.3:
                postal = postal.lstrip("0")  # spreadsheet round trips eat leading zeros
            dob = person.dob
            roll = rng.random()
            if roll < 0.2:
                birth = ""
            elif roll < 0.4:
                birth = f"{dob.day:02d}.{dob.month:02d}.{dob.year}"
            elif roll < 0.403:
                birth = mess.impossible_date(dob.year, "compact")
            else:
                birth = f"{dob.year}{dob.month:02d}{dob.day:02d}"
            enrolled = _local_datetime(rng.randint(start, REFERENCE_END_TS), -5, " ")
            writer.writerow((card, _pos_name(rng, person), mess.phone(number, missing=0.1), postal,
                             birth, enrolled, MARKETING_OK.draw(rng)))
    counts["pos/loyalty_members.csv"] = len(members)


def _requester_name(rng: random.Random, mess: _Mess, person: Person) -> str:
    first = mess.first_name(person, 0.1).strip()
    last = mess.name(person.last).strip()
    style = rng.randrange(20)
    if style < 9:
        return f"{first} {last}"
    if style < 12:
        return first
    if style < 14:
        return f"{first[:1]}. {last}"
    if style < 15:
        return f"{last} {first}"
    if style < 17:
        return f"{first} {last}".lower()
    if style < 18:
        return f"{first} {person.middle} {last}" if person.middle else f"{first} {last}"
    return ""


def _write_support(rng: random.Random, mess: _Mess, people: list[Person], out_dir: Path, truth: _Truth,
                   counts: dict[str, int]) -> None:
    requesters = _sample(rng, people, SUPPORT_SHARE)
    start = _ts(date(2024, 1, 1))
    ticket = 0
    with _open_text(out_dir / "support" / "tickets.csv") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SUPPORT_HEADER)
        for person in requesters:
            for _ in range(TICKETS_PER_REQUESTER.draw(rng)):
                ticket += 1
                ticket_id = f"T-{ticket:06d}"
                truth.add("support_tickets", ticket_id, person.pid)
                roll = rng.random()
                email = person.email
                if roll < 0.15 and person.email2:
                    email = person.email2
                elif roll < 0.3 and person.old_email:
                    email = person.old_email
                created = rng.randint(start, REFERENCE_END_TS)
                age_days = (REFERENCE_END_TS - created) // 86400
                if age_days < 3:
                    status = rng.choice(("open", "open", "pending", "solved"))
                else:
                    status = TICKET_STATUS.draw(rng)
                writer.writerow((
                    ticket_id,
                    mess.email(email, missing=0.02, junk=0.005),
                    _requester_name(rng, mess, person),
                    rng.choice(SUPPORT_SUBJECTS),
                    status,
                    TICKET_PRIORITY.draw(rng),
                    _iso_z(created),
                ))
    counts["support/tickets.csv"] = ticket


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID from the seeded generator, so reruns reproduce the same ids."""
    text = f"{rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _ip(rng: random.Random) -> str:
    return f"{rng.choice((24, 47, 66, 68, 71, 73, 76, 98, 99, 107, 108, 172, 174))}.{rng.randint(0, 255)}." \
           f"{rng.randint(0, 255)}.{rng.randint(1, 254)}"


class _WebWriter:
    """Segment-style events, one file per day, with a few short sessions per device.

    Web events are the bulk of the output, so each line is assembled from JSON fragments that are
    serialized once (per product, per device) instead of encoding a fresh dict for every event.
    """

    SITE = "https://shop.example.com"

    def __init__(self, rng: random.Random, out_dir: Path) -> None:
        self.rng = rng
        self.paths = [out_dir / "web" / f"events_{day.isoformat()}.jsonl" for day in WEB_DAYS]
        self.handles = [_open_text(path) for path in self.paths]
        self.rows = [0] * len(self.handles)
        self.day_prefixes = [f"{day.isoformat()}T" for day in WEB_DAYS]
        self.landing_pages = [("page", self._page("Home", "/"))] + [
            ("page", self._page("Category", f"/collections/{category}")) for category in CATEGORIES
        ]
        self.product_events = [self._product_events(*product) for product in PRODUCTS]
        self.user_agents = [_QUOTE(agent) for agent in USER_AGENTS]

    def _page(self, name: str, path: str) -> str:
        return f'"name":{_DUMPS(name)},"properties":{_DUMPS({"url": self.SITE + path, "path": path})}'

    def _product_events(self, sku: str, product_id: str, cents: int) -> list[tuple[str, str]]:
        path = f"/products/{PRODUCT_SLUGS[int(product_id) % len(PRODUCT_SLUGS)]}-{product_id}"
        viewed = {"product_id": product_id, "sku": sku, "price": cents / 100, "url": self.SITE + path}
        value = {"value": cents / 100, "currency": "USD"}
        return [
            ("page", self._page("Product", path)),
            ("track", f'"event":"Product Viewed","properties":{_DUMPS(viewed)}'),
            ("track", f'"event":"Product Added","properties":{_DUMPS(dict(viewed, quantity=1))}'),
            ("track", f'"event":"Checkout Started","properties":{_DUMPS(value)}'),
            ("track", f'"event":"Order Completed","properties":{_DUMPS(dict(value, products=[product_id]))}'),
        ]

    def close(self) -> None:
        for handle in self.handles:
            handle.close()

    def _session(self, identify: Person | None, logged_in: bool) -> list[tuple[str, str]]:
        """The (type, body) pairs of one visit: a landing page, a few products, sometimes a purchase."""
        rng = self.rng
        events = [rng.choice(self.landing_pages)]
        if identify is not None:
            email = identify.shop_email if logged_in and identify.shop_email else identify.email
            traits = {
                "email": email.strip().lower() if rng.random() < 0.8 else email,
                "firstName": identify.first if rng.random() < 0.9 else "",
                "lastName": identify.last if rng.random() < 0.85 else "",
            }
            events.append(("identify", f'"traits":{_DUMPS(traits)}'))
        for _ in range(PRODUCTS_PER_SESSION.draw(rng)):
            product = rng.choice(self.product_events)
            events.extend(product[:2])
            if rng.random() < 0.25:
                events.append(product[2])
                if rng.random() < 0.4:
                    events.append(product[3])
                    if rng.random() < 0.7:
                        events.append(product[4])
        return events

    def device(self, anonymous_id: str, ip: str, identity: tuple[Person, bool] | None) -> None:
        """Writes one device's week; ``identity`` is the person who signs in (True) or up (False) on it."""
        rng = self.rng
        context = f'"context":{{"ip":"{ip}","userAgent":{rng.choice(self.user_agents)}}}}}\n'
        head = f'","anonymousId":"{anonymous_id}","userId":'
        sessions = SESSIONS_PER_DEVICE.draw(rng)
        days = sorted(rng.randrange(7) for _ in range(sessions))
        identify_session = rng.randrange(sessions) if identity is not None else -1
        user_id = "null"
        for session, day in enumerate(days):
            person, logged_in = identity if session == identify_session and identity else (None, False)
            events = self._session(person, logged_in)
            # Sessions start by 23:00 so that all their events stay inside the day's file.
            millis = rng.randint(6 * 3600_000, 23 * 3600_000)
            prefix, lines = self.day_prefixes[day], []
            for kind, body in events:
                millis += rng.randint(4_000, 90_999)
                if kind == "identify" and logged_in and person is not None and person.shop_id is not None:
                    user_id = f'"{person.shop_id}"'
                second, ms = divmod(millis, 1000)
                lines.append(
                    f'{{"type":"{kind}","messageId":"{_uuid4(rng)}{head}{user_id},'
                    f'"timestamp":"{prefix}{_CLOCK[second]}{_MILLIS_Z[ms]}",{body},{context}'
                )
            self.handles[day].write("".join(lines))
            self.rows[day] += len(lines)


def _write_web(rng: random.Random, mess: _Mess, people: list[Person], out_dir: Path, truth: _Truth,
               counts: dict[str, int]) -> None:
    browsers = _sample(rng, people, WEB_SHARE)
    home_ips: dict[int, str] = {}
    visitors = 0
    web = _WebWriter(rng, out_dir)
    try:
        for person in browsers:
            identifies = rng.random() < 0.5
            if person.household is not None:
                home_ip = home_ips.setdefault(person.household, _ip(rng))
            else:
                home_ip = _ip(rng)
            for device in range(DEVICES_PER_BROWSER.draw(rng)):
                anonymous_id = _uuid4(rng)
                truth.add("web_events", anonymous_id, person.pid)
                identity = None
                if identifies and (device == 0 or rng.random() < 0.5):
                    identity = (person, person.shop_id is not None and rng.random() < 0.85)
                web.device(anonymous_id, home_ip if rng.random() < 0.7 else _ip(rng), identity)
                # Visitors who never identify make up ~30% of all anonymous ids.
                if rng.random() < 0.4286:
                    visitors += 1
                    anonymous_id = _uuid4(rng)
                    truth.add("web_events", anonymous_id, f"V{visitors:07d}")
                    web.device(anonymous_id, _ip(rng), None)
    finally:
        web.close()
    for path, rows in zip(web.paths, web.rows, strict=True):
        counts[path.relative_to(out_dir).as_posix()] = rows


def _csv_field(value: str) -> str:
    if any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _write_email(rng: random.Random, mess: _Mess, people: list[Person], out_dir: Path, truth: _Truth,
                 counts: dict[str, int]) -> None:
    recipients = _sample(rng, people, EMAIL_SHARE)
    campaigns = sorted(((_ts(date.fromisoformat(day)) + 14 * 3600, campaign) for campaign, day in CAMPAIGNS))
    seen: set[str] = set()
    rows = 0
    with _open_text(out_dir / "email" / "engagement.csv") as handle:
        handle.write(",".join(EMAIL_HEADER) + "\n")
        for person in recipients:
            addresses: list[tuple[str, bool]] = []
            if person.old_email and rng.random() < 0.5:
                addresses.append((person.old_email, True))
            else:
                email = person.email
                roll = rng.random()
                if roll < 0.03:
                    email = _title_case_email(email)
                elif roll < 0.04:
                    local, _, domain = email.partition("@")
                    addresses.append((f"{_typo(rng, local)}@{domain}", True))
                    email = ""
                if email:
                    addresses.append((email, False))
            if person.email2 and rng.random() < 0.4:
                addresses.append((person.email2, False))
            for address, bounces in addresses:
                if address in seen:
                    continue
                seen.add(address)
                truth.add("email_engagement", address, person.pid)
                field = _csv_field(address)
                # One line per event, assembled directly: this file has millions of rows.
                lines = []
                for index in sorted(rng.sample(range(len(campaigns)), rng.randint(1, 5))):
                    sent, campaign = campaigns[index]
                    at = sent + rng.randint(0, 5400)
                    if bounces or rng.random() < 0.005:
                        lines.append(f"{field},bounce,{campaign},{_iso_z(at)}\n")
                        break  # the ESP suppresses an address after a hard bounce
                    lines.append(f"{field},delivered,{campaign},{_iso_z(at)}\n")
                    if rng.random() < 0.35:
                        at += rng.randint(60, 3 * 86400)
                        lines.append(f"{field},open,{campaign},{_iso_z(at)}\n")
                        if rng.random() < 0.3:
                            lines.append(f"{field},click,{campaign},{_iso_z(at + rng.randint(2, 600))}\n")
                        if rng.random() < 0.03:
                            at += rng.randint(5, 900)
                            lines.append(f"{field},unsubscribe,{campaign},{_iso_z(at)}\n")
                            break
                handle.write("".join(lines))
                rows += len(lines)
    counts["email/engagement.csv"] = rows


# --------------------------------------------------------------------------------------------------
# Hard cases: shared family mailboxes, mistyped e-mails, requesters known by a first name only
# --------------------------------------------------------------------------------------------------

HARD_CASE_SHARE = 0.003  # people added per person of the population, in each of the three cases
HARD_CASE_SEED_OFFSET = 7919  # their own random stream: the population's records stay as they were
HARD_CASES_HEADER = ("source", "source_record_id", "person_id", "case")
DOMAIN_SLIPS = {
    "gmail.com": ("gmail.cmo", "gmial.com", "gmail.co", "gmai.com"),
    "yahoo.com": ("yaho.com", "yahooo.com", "yahoo.cm"),
    "outlook.com": ("outlook.cm", "outlok.com", "outlook.con"),
    "hotmail.com": ("hotmial.com", "hotmail.co", "hotmai.com"),
    "aol.com": ("aol.cm", "aol.con"),
    "icloud.com": ("iclod.com", "icloud.cm"),
}


def _slipped_email(rng: random.Random, email: str) -> str:
    """The address with one keying slip: a misspelt domain, or a letter dropped or swapped in the local part."""
    local, _, domain = email.partition("@")
    if domain in DOMAIN_SLIPS and rng.random() < 0.6:
        return f"{local}@{rng.choice(DOMAIN_SLIPS[domain])}"
    letters = [i for i in range(1, len(local) - 1) if local[i].isalpha()]
    if not letters:
        return f"{local}@{rng.choice(DOMAIN_SLIPS['gmail.com'])}"
    i = rng.choice(letters)
    if rng.random() < 0.6 or not local[i + 1].isalpha():
        return f"{local[:i]}{local[i + 1:]}@{domain}"
    return f"{local[:i]}{local[i + 1]}{local[i]}{local[i + 2:]}@{domain}"


def _signature(rng: random.Random, first: str, last: str) -> str:
    """How a person signs a support ticket from a shared mailbox: often a first name alone or a nickname,
    sometimes with a slip in it, or surname first with an initial ("Carpenter J.")."""
    nicknames = NICKNAMES.get(first)
    name = rng.choice(nicknames) if nicknames and rng.random() < 0.4 else first
    roll = rng.random()
    if roll < 0.15:
        name = _typo(rng, name)
    style = rng.random()
    if style < 0.45:
        return name
    if style < 0.6:
        return f"{last} {first[0]}."
    return f"{name} {last}"


class _HardCases:
    """Writes the three hard cases as a CRM file of their own (each person's contact, and the contacts a
    help desk made from their requests: a name as signed and an e-mail), and lists their records with the
    case they belong to, so their precision and recall can be scored apart."""

    def __init__(self, seed: int, population: list[Person], out_dir: Path, truth: _Truth, cases_path: Path) -> None:
        self.rng = SeededRandom(seed + HARD_CASE_SEED_OFFSET)
        self.mess = _Mess(self.rng)
        self.builder = _PeopleBuilder(self.rng)
        for person in population:  # new people must not take an address or number someone already has
            emails = (person.email, person.email2, person.old_email, person.shop_email)
            self.builder.used_emails.update(_mailbox(e) for e in emails if e)
            self.builder.used_phones.update(n for n in (person.mobile, person.landline) if n)
        self.truth = truth
        self.out_dir = out_dir
        self.cases_path = cases_path
        self.next_pid = 0

    def person(self, first: str, last: str, email: str | None = None) -> Person:
        rng, builder = self.rng, self.builder
        self.next_pid += 1
        dob = _clip_dob(rng.randint(_DOB_MIN, _DOB_MAX))
        middle = rng.choice(MIDDLE_INITIALS) if rng.random() < 0.5 else ""
        email = email or builder.email(first, last, middle, dob, work=False)
        city = CITIES[CITY_CHOICE.draw(rng)]
        return Person(pid=f"H{self.next_pid:07d}", first=first, middle=middle, last=last, dob=dob, email=email,
                      mobile=builder.phone(city.area_codes), home=builder.address())

    def write(self, people: int) -> dict[str, int]:
        rng = self.rng
        crm = _CsvFile(self.out_dir / "crm" / "contacts_hard_cases.csv")
        writer = _CrmWriter(rng, self.mess, self.truth)
        crm.row(CRM_HEADER)
        per_case = max(2, round(people * HARD_CASE_SHARE))
        with _open_text(self.cases_path) as handle:
            cases = csv.writer(handle, lineterminator="\n")
            cases.writerow(HARD_CASES_HEADER)

            def contact(person: Person, email: str, case: str) -> None:
                cid = writer.contact_id(person)
                modified = self.mess.timestamp_between(writer.JAN_START, writer.JAN_END)
                fields = writer.fields(person, cid, person.home, email, modified)
                fields[3] = email  # the address as the case needs it, without the usual damage
                crm.row(fields)
                cases.writerow(("crm_contacts", cid, person.pid, case))

            def requester(person: Person, email: str, name: str, case: str) -> None:
                # A contact the help desk created for a ticket: the name as signed, split at its first
                # space ("Carpenter J." gives first name Carpenter), the e-mail it came from, nothing else.
                first, _, last = name.partition(" ")
                cid = writer.contact_id(person)
                modified = self.mess.timestamp_between(writer.JUN_START, writer.JUN_END)
                crm.row((cid, first, last, email, "", "", "", "", "", "", "", "", _iso_z(modified)))
                cases.writerow(("crm_contacts", cid, person.pid, case))

            # Family mailboxes: two or three people of one surname share an address, each with a CRM
            # contact and a few requests signed in whatever way they sign.
            families = 0
            while families * 2.5 < per_case:
                families += 1
                last = self.builder.last_name()
                token = _email_token(last)
                domain = FREE_MAIL_CHOICE.draw(rng)
                box = f"{rng.choice(('the', ''))}{token}{rng.choice(('family', 's', 'home'))}{families}@{domain}"
                used: set[str] = set()
                for _ in range(rng.choice((2, 2, 3))):
                    first = self.builder.first_name(rng.random() < 0.5)
                    while first in used:
                        first = self.builder.first_name(rng.random() < 0.5)
                    used.add(first)
                    member = self.person(first, last, box)
                    contact(member, box, "family_mailbox")
                    for _ in range(rng.choice((1, 2, 3, 4))):
                        requester(member, box, _signature(rng, first, last), "family_mailbox")
            # Mistyped e-mails: a CRM contact, and requests signed with a first name from an address with
            # one keying slip in it.
            for _ in range(per_case):
                member = self.person(self.builder.first_name(rng.random() < 0.5), self.builder.last_name())
                contact(member, member.email, "mistyped_email")
                for _ in range(rng.choice((1, 2))):
                    requester(member, _slipped_email(rng, member.email), member.first, "mistyped_email")
            # Requesters known by a first name only, from their own address.
            for _ in range(per_case):
                member = self.person(self.builder.first_name(rng.random() < 0.5), self.builder.last_name())
                contact(member, member.email, "first_name_only")
                for _ in range(rng.choice((1, 2, 3))):
                    name = self.mess.first_name(member, 0.3).strip()
                    requester(member, member.email, name, "first_name_only")
        crm.close()
        return {"crm/contacts_hard_cases.csv": crm.rows - 1}


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def hard_cases_path(truth_path: Path) -> Path:
    """Where the records of the hard cases are listed with their case: beside the ground truth."""
    return Path(truth_path).with_name(Path(truth_path).stem + "_hard_cases.csv")


def generate(people: int, seed: int, out_dir: Path, truth_path: Path) -> dict[str, int]:
    """Writes all landing files and the ground truth; the counts let callers and tests check volumes.

    Keys are file paths relative to ``out_dir`` (POSIX style) plus ``"ground_truth"``. Counts are
    data lines, so they include the deliberately broken lines but not headers or empty lines.
    """
    if people < 1:
        raise ValueError("people must be at least 1")
    out_dir, truth_path = Path(out_dir), Path(truth_path)
    rng = SeededRandom(seed)
    mess = _Mess(rng)
    population = build_people(rng, people)
    # The population lives until the end; freezing it spares the garbage collector from rescanning
    # millions of objects every time the writers below allocate.
    gc.freeze()
    counts: dict[str, int] = {}
    try:
        with _open_text(truth_path) as truth_handle:
            truth = _Truth(truth_handle)
            _write_crm(rng, mess, population, out_dir, truth, counts)
            customers = _write_shop_customers(rng, mess, population, out_dir, truth, counts)
            _write_orders(rng, mess, population, customers, out_dir, truth, counts)
            _write_pos(rng, mess, population, out_dir, truth, counts)
            _write_support(rng, mess, population, out_dir, truth, counts)
            _write_web(rng, mess, population, out_dir, truth, counts)
            _write_email(rng, mess, population, out_dir, truth, counts)
            cases = _HardCases(seed, population, out_dir, truth, hard_cases_path(truth_path))
            counts.update(cases.write(people))
    finally:
        gc.unfreeze()
    counts["ground_truth"] = truth.rows
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.generate",
        description="Generate messy demo landing files for seven source systems plus their ground truth.",
    )
    parser.add_argument("--people", type=int, default=10_000, help="number of true people (default 10000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--out", type=Path, default=Path("data/landing"), help="landing folder")
    parser.add_argument("--truth", type=Path, default=Path("data/ground_truth.csv"), help="ground-truth CSV")
    args = parser.parse_args(argv)
    if args.people < 1:
        parser.error("--people must be at least 1")
    started = time.perf_counter()
    counts = generate(args.people, args.seed, args.out, args.truth)
    elapsed = time.perf_counter() - started
    width = max(len(name) for name in counts)
    print(f"{args.people} people, seed {args.seed} -> {args.out} (truth: {args.truth})")
    for name, rows in counts.items():
        print(f"  {name:<{width}}  {rows:>10,}")
    print(f"  {'total':<{width}}  {sum(counts.values()):>10,}  in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
