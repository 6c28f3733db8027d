"""Comparison vectors: how closely two person records agree, field by field, as small integer levels.

Each comparison maps a pair to a level (higher = closer agreement, -1 = a side is missing, which is no
evidence either way). Levels are computed in DuckDB SQL, where a 9-field vector over millions of pairs
takes seconds. First and last names are compared after undoing a first/last swap ("Smith John"), and
first names also agree through nicknames (Bob, Robert). Dates of birth agree partly on a day/month
transposition or a single mistyped digit.
"""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    name: str
    sql: str  # the level; `{sim}` stands for the similarity below, computed once per pair
    labels: dict[int, str]
    tf_column: str | None = None  # the exact level's weight is adjusted for how common the value is
    similarity: str = "null"
    agreeing: tuple[int, ...] = ()  # the levels at which the field agrees, closely or exactly (person_evidence_sql)
    # Levels observed under different conditions, e.g. a city compared where the postal codes agree and
    # where they do not. m and u are distributions within each group, so a level's weight is conditional
    # on its group's condition and the evidence the condition stands for is not counted twice.
    groups: tuple[tuple[int, ...], ...] = ()
    tf_level: int | None = None  # the level whose weight term frequency adjusts; the top one if unset

    @property
    def top(self) -> int:
        return max(self.labels)

    @property
    def level_groups(self) -> tuple[tuple[int, ...], ...]:
        return self.groups or (tuple(sorted(self.labels)),)

    @property
    def exact_level(self) -> int:
        return self.top if self.tf_level is None else self.tf_level


# `l` and `r` are rows of match_records; `rf`, `rl` and `rcanon` are r's first name, last name
# and formal first name after undoing a swap (see SWAP_SQL).
COMPARISONS: dict[str, Comparison] = {
    c.name: c
    for c in [
        Comparison(
            "first_name",
            """case when l.first_name is null or rf is null then -1
                    when l.first_name = rf then 4
                    when l.first_canon = rcanon then 3
                    when {sim} >= 0.92 then 2
                    when {sim} >= 0.8
                         or ((length(l.first_name) = 1 or length(rf) = 1) and l.first_name[1] = rf[1]) then 1
                    else 0 end""",
            {
                4: "exact",
                3: "nickname of each other",
                2: "jaro-winkler >= 0.92",
                1: "jaro-winkler >= 0.8 or initial",
                0: "different",
            },
            tf_column="first_name",
            similarity="jaro_winkler_similarity(l.first_name, rf)",
            agreeing=(4, 3, 2, 1),
        ),
        Comparison(
            "last_name",
            """case when l.last_name is null or rl is null then -1
                    when l.last_name = rl then 3
                    when {sim} >= 0.92 then 2
                    when {sim} >= 0.8 then 1
                    else 0 end""",
            {3: "exact", 2: "jaro-winkler >= 0.92", 1: "jaro-winkler >= 0.8", 0: "different"},
            tf_column="last_name",
            similarity="jaro_winkler_similarity(l.last_name, rl)",
            agreeing=(3, 2),
        ),
        Comparison(
            "date_of_birth",
            """case when l.date_of_birth is null or r.date_of_birth is null then -1
                    when l.date_of_birth = r.date_of_birth then 3
                    when year(l.date_of_birth) = year(r.date_of_birth)
                         and month(l.date_of_birth) = day(r.date_of_birth)
                         and day(l.date_of_birth) = month(r.date_of_birth) then 2
                    when {one_edit(l.dob_text, r.dob_text)} then 1
                    else 0 end""",
            {3: "exact", 2: "day and month transposed", 1: "one digit off or two swapped", 0: "different"},
            agreeing=(3, 2, 1),
        ),
        Comparison(
            "email",
            """case when l.email is null or r.email is null then -1
                    when l.email = r.email then 1
                    else 0 end""",
            # No fuzzy or local-part level: local parts are mostly built from the name (john.smith,
            # jsmith72), so two John Smiths' addresses look alike and such a level would count the name
            # a second time.
            {1: "exact", 0: "different"},
            agreeing=(1,),
        ),
        Comparison(
            "phone",
            """case when l.phone is null or r.phone is null then -1
                    when l.phone = r.phone then 2
                    when {one_edit(l.phone, r.phone)} then 1
                    else 0 end""",
            {2: "exact", 1: "one digit off or two swapped", 0: "different"},
            agreeing=(2,),
        ),
        Comparison(
            "address",
            """case when l.address is null or r.address is null then -1
                    when l.address = r.address then 2
                    when {sim} >= 0.88 then 1
                    else 0 end""",
            {2: "exact (abbreviations normalised)", 1: "jaro-winkler >= 0.88", 0: "different"},
            similarity="jaro_winkler_similarity(l.address, r.address)",
            agreeing=(2, 1),
        ),
        Comparison(
            "postal_code",
            """case when l.postal_code is null or r.postal_code is null then -1
                    when l.postal_code = r.postal_code and l.address = r.address then -1
                    when l.postal_code = r.postal_code then 2
                    when {one_edit(l.postal_code, r.postal_code)} then 1
                    else 0 end""",
            {2: "exact", 1: "one character off or two swapped", 0: "different"},
            tf_column="postal_code",
            agreeing=(2,),
        ),
        Comparison(
            "city",
            """case when l.city is null or r.city is null or l.address = r.address then -1
                    when l.postal_code = r.postal_code then
                        case when l.city = r.city then 5 when {sim} >= 0.88 then 4 else 3 end
                    when l.city = r.city then 2
                    when {sim} >= 0.88 then 1
                    else 0 end""",
            {
                5: "exact, postal code agrees",
                4: "jaro-winkler >= 0.88, postal code agrees",
                3: "different, postal code agrees",
                2: "exact",
                1: "jaro-winkler >= 0.88",
                0: "different",
            },
            tf_column="city",
            similarity="jaro_winkler_similarity(l.city, r.city)",
            agreeing=(5, 4, 2, 1),
            groups=((0, 1, 2), (3, 4, 5)),
            tf_level=2,
        ),
        Comparison(
            "identifier",
            # Values of a few characters are too short for "one character off" to mean a typo.
            """case when l.identifier is null or r.identifier is null
                         or l.identifier_type <> r.identifier_type then -1
                    when l.identifier = r.identifier then 2
                    when length(l.identifier) - length(l.identifier_type) <= 5 then 0
                    when {one_edit(l.identifier, r.identifier)} then 1
                    else 0 end""",
            {2: "same value", 1: "one character off or two swapped", 0: "different values of one type"},
            agreeing=(2, 1),
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
SWAP_SQL = """case when l.first_name is null or l.last_name is null or r.first_name is null
                    or r.last_name is null or l.first_name = r.first_name or l.last_name = r.last_name then false
               when l.first_name[1] <> r.last_name[1] or l.last_name[1] <> r.first_name[1] then false
               else jaro_winkler_similarity(l.first_name, r.last_name) >= 0.92
                    and jaro_winkler_similarity(l.last_name, r.first_name) >= 0.92 end"""


# The match_records columns the comparisons read.
COMPARED_COLUMNS = (
    "first_name",
    "first_canon",
    "last_name",
    "date_of_birth",
    "dob_text",
    "email",
    "email_local",
    "phone",
    "address",
    "postal_code",
    "city",
    "identifier",
    "identifier_type",
)


def _one_edit(sql: str) -> str:
    """`{one_edit(a, b)}` -> a test that a and b are one keying slip apart: one character changed, added or
    dropped, or two neighbours swapped (6794161 / 6794611, the slip check digits exist to catch). The
    Hamming distance decides where the lengths are equal (one pass over the strings), the costlier
    distances run only where it cannot (a swap is two mismatches; a length differing by one), and no
    distance at all where lengths differ by more."""
    return re.sub(
        r"\{one_edit\((\S+), (\S+)\)\}",
        r"(case when length(\1) = length(\2) then"
        r" case when hamming(\1, \2) <= 1 then true"
        r" when hamming(\1, \2) = 2 then damerau_levenshtein(\1, \2) = 1 else false end"
        r" when abs(length(\1) - length(\2)) = 1 then levenshtein(\1, \2) <= 1 else false end)",
        sql,
    )


def _flat(sql: str) -> str:
    """`l.city` -> `l_city`: the comparisons read flat columns of one joined row."""
    return re.sub(r"\b([lr])\.(\w+)", r"\1_\2", sql)


def vector_sql(pairs_table: str, names: list[str], carry: tuple[str, ...] = ()) -> str:
    """SELECT of one row per pair in `pairs_table(l, r, ...)`: its node ids, whether the right record's
    names were swapped, the `carry` columns of the pairs table, and one level column per comparison."""
    # A similarity is written into the WHENs that use it rather than computed for every pair: a WHEN is
    # evaluated only for the rows no earlier one took, and most pairs stop at "exact".
    levels = ",\n            ".join(
        f"({_flat(_one_edit(COMPARISONS[n].sql).replace('{sim}', COMPARISONS[n].similarity))})::tinyint as {n}"
        for n in names
    )
    carried = "".join(f", p.{c}" for c in carry)
    outer = "".join(f", {c}" for c in carry)
    columns = "".join(f", lm.{c} as l_{c}, rm.{c} as r_{c}" for c in COMPARED_COLUMNS)
    return f"""
        with joined as (
            select p.l as l_node, p.r as r_node{carried}{columns}
            from {pairs_table} p
            join match_records lm on lm.node_id = p.l
            join match_records rm on rm.node_id = p.r
        ),
        swapped as (select joined.*, {_flat(SWAP_SQL)} as swapped from joined),
        aligned as (
            select swapped.*, case when swapped then r_last_name else r_first_name end as rf,
                   case when swapped then r_first_name else r_last_name end as rl,
                   case when swapped then null else r_first_canon end as rcanon
            from swapped
        ),
        select l_node as l, r_node as r, swapped{outer},
            {levels}
        from aligned
    """
