"""Comparison vectors: how closely two person records agree, field by field, as small integer levels.

A comparison is a list of levels, highest first, each made from a small library of level kinds
(`null_level`, `exact_match_level`, `jaro_winkler_level`, `one_edit_level`, ...) in the manner of
Splink's comparison-level library. Each kind produces its SQL condition and a label; the CASE that maps
a pair to a level, the labels in `identity.model`, the levels that count as person evidence, the level
term frequencies adjust and a strong conflict are all read from these objects, so adding a comparison
is one entry in COMPARISONS below (and its name in resources/config/identity.py).

Levels are numbered from the bottom: the final "different" level is 0, each level above it one more; a
missing value on either side is -1, which is no evidence either way. They are computed in DuckDB SQL,
where a 9-field vector over millions of pairs takes seconds. First and last names are compared after
undoing a first/last swap ("Smith John"), and first names also agree through nicknames (Bob, Robert).
Dates of birth agree partly on a day/month transposition or a single mistyped digit.
"""

import re
from dataclasses import dataclass, field

from cdp_assets.identity.clustering import Conflict, birth_dates_differ, first_names_differ


@dataclass(frozen=True)
class Level:
    """One comparison level: the SQL condition that puts a pair there, and its label.

    Conditions read `l.<column>` and `r.<column>` of the matching records, or the right record's names after
    undoing a swap (`rf`, `rl`, `rcanon`)."""

    condition: str
    label: str
    agrees: bool = False  # the field agrees here, closely or exactly: person evidence
    no_evidence: bool = False  # level -1
    tf_column: str | None = None  # an exact level weighed by how common the value is
    as_different: bool = False  # an early exit to the comparison's "different" level (no label of its own)


@dataclass(frozen=True)
class Given:
    """Levels observed under a condition of their own (a city where the postal codes agree), forming a
    level group: m and u are distributions within the group, so the condition's evidence counts once."""

    condition: str
    levels: tuple[Level, ...]
    suffix: str  # appended to the labels of the levels inside


def _right(left: str, right: str | None) -> tuple[str, str]:
    return f"l.{left}", right or f"r.{left}"


def null_level(column: str, right: str | None = None, also: str | None = None) -> Level:
    """-1 where either side is missing (or `also` holds): no evidence either way."""
    a, b = _right(column, right)
    condition = f"{a} is null or {b} is null" + (f" or {also}" if also else "")
    return Level(condition, "missing", no_evidence=True)


def scripts_differ(a: str, b: str) -> str:
    """True where one of two folded names is written in Latin letters and the other in another script only
    (Ольга and Olga, 伟 and Wei): their letters cannot be compared, so the names are no evidence either way,
    as a missing one is (a transliteration is one of several: Olga, Ol'ga; Wei, Wai). Two equal names are
    tested first, without a pattern: on the 1M-record benchmark's 8.95M candidate pairs the patterns alone
    took the comparison vectors from 6.5 s to 7.9 s, and 7.0 s once equal names skip them (same vectors)."""
    return f"({a} <> {b} and regexp_matches({a}, '[a-z]') <> regexp_matches({b}, '[a-z]'))"


def no_evidence_level(condition: str) -> Level:
    """-1 where `condition` holds: the field says nothing another one has not said already."""
    return Level(condition, "no further evidence", no_evidence=True)


def exact_match_level(
    column: str, right: str | None = None, label: str = "exact", term_frequency: bool = False
) -> Level:
    a, b = _right(column, right)
    return Level(f"{a} = {b}", label, agrees=True, tf_column=column if term_frequency else None)


def nickname_level(column: str, right: str) -> Level:
    """The formal forms of the two names agree (Bob, Robert)."""
    return Level(f"l.{column} = {right}", "nickname of each other", agrees=True)


def jaro_winkler_level(column: str, threshold: float, right: str | None = None, agrees: bool = True) -> Level:
    # The similarity is written into the WHEN that uses it rather than computed for every pair: a WHEN is
    # evaluated only for the rows no earlier one took, and most pairs stop at "exact".
    a, b = _right(column, right)
    return Level(f"jaro_winkler_similarity({a}, {b}) >= {threshold}", f"jaro-winkler >= {threshold}", agrees=agrees)


def initial_level(column: str, right: str | None = None) -> Level:
    """One side is a single letter, the other's first."""
    a, b = _right(column, right)
    return Level(
        f"((length({a}) = 1 or length({b}) = 1) and substr({a}, 1, 1) = substr({b}, 1, 1))", "initial", agrees=True
    )


def one_edit(a: str, b: str) -> str:
    """A test that a and b are one keying slip apart: one character changed, added or dropped, or two
    neighbours swapped (6794161 / 6794611, the slip check digits exist to catch). The Hamming distance
    decides where the lengths are equal (one pass over the strings), the costlier distances run only
    where it cannot (a swap is two mismatches; a length differing by one), and no distance at all where
    lengths differ by more."""
    return (
        f"(case when length({a}) = length({b}) then"
        f" case when hamming({a}, {b}) <= 1 then true"
        f" when hamming({a}, {b}) = 2 then damerau_levenshtein({a}, {b}) = 1 else false end"
        f" when abs(length({a}) - length({b})) = 1 then levenshtein({a}, {b}) <= 1 else false end)"
    )


def one_edit_level(column: str, label: str, agrees: bool = True) -> Level:
    return Level(one_edit(f"l.{column}", f"r.{column}"), label, agrees=agrees)


def _same_non_letters(a: str, b: str) -> str:
    """True where a and b hold the same digits and separators in the same order: what they differ in is
    letters only. The letters go a run at a time (`[a-z]+`): the same text as one letter at a time, but a
    replacement per run rather than per letter, four times faster on the users of e-mail addresses."""
    return f"regexp_replace({a}, '[a-z]+', '', 'g') = regexp_replace({b}, '[a-z]+', '', 'g')"


def email_slip_level() -> Level:
    """One keying slip apart: the same user (dots and +tag aside) at another domain one slip away
    (outlook.cm, yaho.com, gmail.cmo), or two neighbouring characters swapped in a user of five or more
    at the same domain, letters (laura1969 / laura1996 are two birth years: two people). Namesakes'
    addresses rarely differ this way, so this is strong evidence."""
    other_domain = (
        "l.email_local_key = r.email_local_key and l.email_domain <> r.email_domain"
        f" and {one_edit('l.email_domain', 'r.email_domain')}"
    )
    swapped = (
        "l.email_domain = r.email_domain and length(l.email_local) = length(r.email_local)"
        " and length(l.email_local) >= 5 and hamming(l.email_local, r.email_local) = 2"
        " and damerau_levenshtein(l.email_local, r.email_local) = 1"
        f" and {_same_non_letters('l.email_local', 'r.email_local')}"
    )
    return Level(f"(({other_domain}) or ({swapped}))", "one keying slip apart", agrees=True)


def _letters(name: str) -> str:
    """A name as it appears in an address: its letters only (mary ann, o'brien -> maryann, obrien)."""
    return f"nullif(regexp_replace({name}, '[^a-z]', '', 'g'), '')"


def _edit_after(a: str, b: str, prefix: str) -> str:
    """True where a and b both start with `prefix` (an empty prefix: the start) and are one character
    apart right after it: a character put there in one of them, or another character there. NULL, not
    false, where `prefix` is NULL: a condition for `_none_of`, where NULL does not hold."""
    n = f"length({prefix})"
    ra, rb = f"substr({a}, {n} + 1)", f"substr({b}, {n} + 1)"
    return (
        f"starts_with({a}, {prefix}) and starts_with({b}, {prefix}) and (substr({ra}, 2) = substr({rb}, 2)"
        f" or substr({ra}, 2) = {rb} or {ra} = substr({rb}, 2))"
    )


def _none_of(conditions: list[str]) -> str:
    """True where none of `conditions` holds (NULL counts as not holding), written as a CASE: DuckDB tests
    each WHEN only on the rows the ones before it left, and each one's ANDs lazily too, where `not (c1 or
    c2 ...)` computes every operand for every row. Put the cheap and likely conditions first."""
    return "(case " + " ".join(f"when {c} then false" for c in conditions) + " else true end)"


def email_user_letter_level() -> Level:
    """A letter more, less or another in the user at the same domain (mary82 / mry82, jennifer.castillo /
    jennifer.castilo): a slip as often as not, but also one way namesakes' addresses differ, so it is a
    level of its own that the model weighs apart from the slips above. Where the difference is how two
    people's addresses differ it is no evidence: another initial (jmedina / smedina), a middle initial
    after the first name or the initial (nathan.miller / nathan.w.miller, jsmith / jasmith), another digit
    or separator (jsmith72 / jsmith73, thomas_harris / thomas.harris), or names that differ where the
    address does (andrew.johnston / andrew.johnson: the address adds nothing to the surnames' comparison)."""
    a, b = "l.email_local_key", "r.email_local_key"
    firsts = [_letters(f"{side}.first_name") for side in ("l", "r")]
    last = f"coalesce({_letters('l.last_name')}, {_letters('r.last_name')})"
    after_initial = " or ".join(f"starts_with(substr({x}, {k}), {last})" for x in (a, b) for k in (2, 3))
    other_person = _none_of(
        [
            "l.last_name <> r.last_name",
            "l.first_name <> r.first_name and l.first_canon is distinct from r.first_canon",
            _edit_after(a, b, "''"),
            *(_edit_after(a, b, first) for first in firsts),
            f"({after_initial}) and {_edit_after(a, b, f'left({a}, 1)')}",
        ]
    )
    # One flat AND, cheapest tests first: as a WHEN condition DuckDB tests each operand only on the pairs
    # the ones before it left, so the regular expressions and the other-person tests run only on the few
    # pairs one edit apart. (Nested in a CASE's THEN, the AND computed every operand for every pair at one
    # domain: three times the cost of the whole comparison at a million records.)
    condition = (
        f"(l.email_domain = r.email_domain and {a} <> {b} and least(length({a}), length({b})) >= 5"
        f" and {one_edit(a, b)} and {_same_non_letters(a, b)} and {other_person})"
    )
    return Level(condition, "a letter more, less or another in the user", agrees=True)


def transposed_date_level(column: str) -> Level:
    """Same year, day and month swapped (03/04 keyed as 04/03)."""
    a, b = _right(column, None)
    return Level(
        f"year({a}) = year({b}) and month({a}) = day({b}) and day({a}) = month({b})",
        "day and month transposed",
        agrees=True,
    )


def any_of(label: str, *levels: Level) -> Level:
    """One level reached by any of several conditions; it agrees if any of them does."""
    return Level(" or ".join(level.condition for level in levels), label, agrees=any(level.agrees for level in levels))


def different_if(condition: str) -> Level:
    """Straight to the "different" level where `condition` holds, before the levels below are tried."""
    return Level(condition, "", as_different=True)


def else_level(label: str = "different") -> Level:
    return Level("true", label)


@dataclass(frozen=True)
class Comparison:
    """A comparison's levels, highest first and ending in an `else_level`, and what it stands for."""

    name: str
    levels: tuple[Level | Given, ...]
    # Evidence that stops a probabilistic link between two customers, if the comparison declares one
    # (see clustering.ConstrainedUnion); which ones apply is configured (identity.matching.strong_conflicts).
    conflict: Conflict | None = None
    # (level number, level, the Given it sits in): every level in CASE order, numbered once.
    flat: tuple[tuple[int, Level, Given | None], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Numbered from the bottom: the final else is 0, each level above one more. A Given's levels are
        # numbered likewise above those below it; an early exit to "different" takes its block's else.
        flat: list[tuple[int, Level, Given | None]] = []
        below = 0
        for item in reversed(self.levels):
            if isinstance(item, Given):
                base = below
                for level in reversed(item.levels):
                    flat.append((base if level.as_different else below, level, item))
                    below += 0 if level.as_different else 1
            elif item.no_evidence:
                flat.append((-1, item, None))
            elif item.as_different:
                flat.append((0, item, None))
            else:
                flat.append((below, item, None))
                below += 1
        object.__setattr__(self, "flat", tuple(reversed(flat)))

    @property
    def labels(self) -> dict[int, str]:
        return {
            number: level.label + (given.suffix if given else "")
            for number, level, given in self.flat
            if number >= 0 and not level.as_different
        }

    @property
    def top(self) -> int:
        return max(self.labels)

    @property
    def agreeing(self) -> tuple[int, ...]:
        """The levels at which the field agrees, closely or exactly (person_evidence_sql)."""
        return tuple(n for n, level, _ in self.flat if level.agrees and n >= 0)

    @property
    def tf_column(self) -> str | None:
        columns = [level.tf_column for _, level, _ in self.flat if level.tf_column]
        return columns[0] if columns else None

    @property
    def exact_level(self) -> int:
        """The level whose weight term frequency adjusts; the top one where none is adjusted."""
        tf = [n for n, level, _ in self.flat if level.tf_column]
        return tf[0] if tf else self.top

    @property
    def level_groups(self) -> tuple[tuple[int, ...], ...]:
        groups: dict[int, list[int]] = {}
        for number, level, given in self.flat:
            if number >= 0 and not level.as_different:
                groups.setdefault(id(given) if given else 0, []).append(number)
        if len(groups) == 1:
            return (tuple(sorted(self.labels)),)
        return tuple(sorted(tuple(sorted(g)) for g in groups.values()))

    @property
    def sql(self) -> str:
        """The CASE mapping a pair to its level; a Given's levels are a CASE inside its condition's WHEN."""
        parts: list[str] = []
        inside: Given | None = None
        for number, level, given in self.flat:
            if given is not inside:
                if inside is not None:
                    parts.append("end")
                if given is not None:
                    parts.append(f"when {given.condition} then case")
                inside = given
            parts.append(f"else {number}" if level.condition == "true" else f"when {level.condition} then {number}")
        if inside is not None:
            parts.append("end")
        return "case " + "\n    ".join(parts) + " end"


COMPARISONS: dict[str, Comparison] = {
    c.name: c
    for c in [
        Comparison(
            "first_name",
            (
                null_level("first_name", "rf", also=scripts_differ("l.first_name", "rf")),
                exact_match_level("first_name", "rf", term_frequency=True),
                nickname_level("first_canon", "rcanon"),
                jaro_winkler_level("first_name", 0.92, "rf"),
                any_of(
                    "jaro-winkler >= 0.8 or initial",
                    jaro_winkler_level("first_name", 0.8, "rf"),
                    initial_level("first_name", "rf"),
                ),
                else_level(),
            ),
            conflict=first_names_differ,
        ),
        Comparison(
            "last_name",
            (
                null_level("last_name", "rl", also=scripts_differ("l.last_name", "rl")),
                exact_match_level("last_name", "rl", term_frequency=True),
                jaro_winkler_level("last_name", 0.92, "rl"),
                jaro_winkler_level("last_name", 0.8, "rl", agrees=False),
                else_level(),
            ),
        ),
        Comparison(
            "date_of_birth",
            (
                null_level("date_of_birth"),
                exact_match_level("date_of_birth"),
                transposed_date_level("date_of_birth"),
                one_edit_level("dob_text", "one digit off or two swapped"),
                else_level(),
            ),
            conflict=birth_dates_differ,
        ),
        # No similarity level: local parts are mostly built from the name (john.smith, jsmith72), so two
        # John Smiths' addresses look alike and such a level would count the name a second time. One keying
        # slip is narrower: the same user at a misspelt domain, or two letters swapped at the same domain;
        # a letter more, less or another in the user is weaker still, and weighed on its own.
        # A value shared by several people and linked within each of them (identity.shared_identifiers) is
        # no evidence here: the deterministic layer has already joined the records it could tell apart.
        Comparison(
            "email",
            (
                null_level("email", also="l.email = r.email and l.email_split"),
                exact_match_level("email"),
                email_slip_level(),
                email_user_letter_level(),
                else_level(),
            ),
        ),
        Comparison(
            "phone",
            (
                null_level("phone"),
                exact_match_level("phone"),
                one_edit_level("phone", "one digit off or two swapped", agrees=False),
                else_level(),
            ),
        ),
        Comparison(
            "address",
            (
                null_level("address"),
                exact_match_level("address", label="exact (abbreviations normalised)"),
                jaro_winkler_level("address", 0.88),
                else_level(),
            ),
        ),
        Comparison(
            "postal_code",
            (
                null_level("postal_code"),
                # The same street address already says where the records are.
                no_evidence_level("l.postal_code = r.postal_code and l.address = r.address"),
                exact_match_level("postal_code", term_frequency=True),
                one_edit_level("postal_code", "one character off or two swapped", agrees=False),
                else_level(),
            ),
        ),
        Comparison(
            "city",
            (
                null_level("city", also="l.address = r.address"),
                Given(
                    "l.postal_code = r.postal_code",
                    (exact_match_level("city"), jaro_winkler_level("city", 0.88), else_level()),
                    ", postal code agrees",
                ),
                exact_match_level("city", term_frequency=True),
                jaro_winkler_level("city", 0.88),
                else_level(),
            ),
        ),
        Comparison(
            "identifier",
            (
                # Ids one source gave its own records (S5820, S5821 for a couple signing up in turn) differ
                # by design: that says nothing, and one character apart is no keying slip.
                null_level(
                    "identifier",
                    also="l.identifier_type <> r.identifier_type or l.identifier_owner = r.identifier_owner",
                ),
                exact_match_level("identifier", label="same value"),
                # Values of a few characters are too short for "one character off" to mean a typo.
                different_if("length(l.identifier) - length(l.identifier_type) <= 5"),
                one_edit_level("identifier", "one character off or two swapped"),
                else_level("different values of one type"),
            ),
        ),
    ]
}


def person_evidence_sql(names: list[str]) -> str:
    """True where at least one of `names` agrees: the pair rests on more than what a household shares."""
    if not names:
        return "true"
    return "(" + " or ".join(f"{n} in {COMPARISONS[n].agreeing!r}".replace(",)", ")") for n in names) + ")"


# Undo a first/last swap on the right-hand record: its names then line up with the left one's.
# A CASE, because DuckDB evaluates every operand of an AND in a select list but each WHEN only for the
# rows no earlier WHEN took: most candidate pairs share a first or a last name and stop at the first.
# First letters are `substr(s, 1, 1)`: portable, and as cheap as DuckDB's `s[1]`, where `left(s, 1)` makes
# the million-pair u sample a fifth slower.
# The swapped first name may be a nickname of the other's ("Hill", "Tony" beside Anthony Hill): its formal
# form (`last_canon`, the right record's last name read as a first name) then agrees with the other's.
SWAP_SQL = """case when l.first_name is null or l.last_name is null or r.first_name is null
                    or r.last_name is null or l.first_name = r.first_name or l.last_name = r.last_name then false
               when substr(l.last_name, 1, 1) <> substr(r.first_name, 1, 1) then false
               when substr(l.first_name, 1, 1) <> substr(r.last_name, 1, 1)
                    and l.first_canon <> r.last_canon then false
               else jaro_winkler_similarity(l.last_name, r.first_name) >= 0.92
                    and (l.first_canon = r.last_canon
                         or jaro_winkler_similarity(l.first_name, r.last_name) >= 0.92) end"""


# The matching records' columns the comparisons read.
COMPARED_COLUMNS = (
    "first_name",
    "first_canon",
    "last_canon",
    "last_name",
    "date_of_birth",
    "dob_text",
    "email",
    "email_local",
    "email_local_key",
    "email_domain",
    "email_split",
    "phone",
    "address",
    "postal_code",
    "city",
    "identifier",
    "identifier_type",
    "identifier_owner",
)


def _flat(sql: str) -> str:
    """`l.city` -> `l_city`: the comparisons read flat columns of one joined row."""
    return re.sub(r"\b([lr])\.(\w+)", r"\1_\2", sql)


def vector_sql(records: str, pairs_table: str, names: list[str], carry: tuple[str, ...] = ()) -> str:
    """SELECT of one row per pair in `pairs_table(l, r, ...)` of the matching `records` (both tables the
    caller's): its node ids, whether the right record's names were swapped, the `carry` columns of the
    pairs table, and one level column per comparison."""
    levels = ",\n            ".join(f"({_flat(COMPARISONS[n].sql)})::tinyint as {n}" for n in names)
    carried = "".join(f", p.{c}" for c in carry)
    outer = "".join(f", {c}" for c in carry)
    columns = "".join(f", lm.{c} as l_{c}, rm.{c} as r_{c}" for c in COMPARED_COLUMNS)
    return f"""
        with joined as (
            select p.l as l_node, p.r as r_node{carried}{columns}
            from {pairs_table} p
            join {records} lm on lm.node_id = p.l
            join {records} rm on rm.node_id = p.r
        ),
        swapped as (select joined.*, {_flat(SWAP_SQL)} as swapped from joined),
        aligned as (
            select swapped.*, case when swapped then r_last_name else r_first_name end as rf,
                   case when swapped then r_first_name else r_last_name end as rl,
                   case when swapped then r_last_canon else r_first_canon end as rcanon
            from swapped
        )
        select l_node as l, r_node as r, swapped{outer},
            {levels}
        from aligned
    """
