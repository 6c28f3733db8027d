"""Clustering that does not chain: probabilistic links merge customers only where no strong evidence objects.

Connected components over scored links chain: A~B and B~C put A and C together even when A and C are
a mother and daughter sharing a surname, an address and a landline. Here links are applied one at a
time, strongest first, to customers rather than records, and a link is refused when the two customers
it would merge

- hold values a strong conflict objects to: the comparisons declare them (matching/comparisons.py),
  birth_dates_differ (dates of birth of which none could be a typo of another: equal, day/month
  transposed, or one digit apart) and first_names_differ (first names of which none could be another's,
  see FirstNames: equal, nicknames, an initial, a first/last swap, or a close spelling of which one is
  rare enough to be a typo), or
- would hold more values of an identifier type than its `max_per_profile`, or
- would hold more person records than `identity.max_cluster_person_records`.

The same limits, without the weak-evidence conflicts, split a deterministic component whose shared
identifiers would put more values of a `max_per_profile` type together than allowed: its record-to-
identifier links are replayed highest type priority first, and a link that would break a limit is not made.
"""

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import jellyfish

from cdp_assets.clean.rules import fold_accents, umlauts_dropped
from cdp_assets.identity.nicknames import name_variants

T = TypeVar("T")


@dataclass
class Customer:
    """What a growing customer holds that a merge could contradict."""

    person_records: int = 0
    birth_dates: set[str] = field(default_factory=set)
    names: set[tuple[str, str | None]] = field(default_factory=set)  # (first name, last name)
    limited: dict[str, set[str]] = field(default_factory=dict)

    def absorb(self, other: "Customer") -> None:
        self.person_records += other.person_records
        self.birth_dates |= other.birth_dates
        self.names |= other.names
        for id_type, values in other.limited.items():
            self.limited.setdefault(id_type, set()).update(values)


class FirstNames:
    """Whether two first names can be one person's, knowing how common each spelling is in the data.

    Equal names, nicknames of one another (Bob, Robert), an initial and a first/last swap (also with a
    nickname, or beside a record without a surname) always can.
    Close spellings can only when one of them is rare next to the other: a typo makes a rare spelling
    ("Jeen" beside "Jen", "Jammes" beside "James"), while Mark and Mary, or John and Joan, are both
    common names and, at one address, two people.
    """

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self._judged: dict[tuple[tuple[str, str | None], tuple[str, str | None]], bool] = {}

    def compatible(self, left: tuple[str, str | None], right: tuple[str, str | None]) -> bool:
        if left[0] == right[0]:  # most pairs asked about; answered before building a key
            # Except two surnames signed first with different initials: "Brown C." and "Brown K.", and a
            # father and son: "Morris Sr." and "Morris Jr."
            return not _different_initials(left[1], right[1]) and not _different_generations(left[1], right[1])
        # The judgement is symmetric and the same name pairs recur across thousands of values: remember it.
        key = (left, right) if (left[0], left[1] or "") <= (right[0], right[1] or "") else (right, left)
        judged = self._judged.get(key)
        if judged is None:
            judged = self._judged[key] = self._compatible(*key)
        return judged

    def _compatible(self, left: tuple[str, str | None], right: tuple[str, str | None]) -> bool:
        if _different_generations(left[1], right[1]):
            return False  # "Bill Morris Jr." is not "William Morris Sr.", whatever the first names say
        first_l, last_l = _letters(left[0]), _letters(left[1])
        first_r, last_r = _letters(right[0]), _letters(right[1])  # first names never equal as written
        if not first_l or not first_r:
            return True  # nothing but punctuation: no name to object with
        if _latin(first_l) != _latin(first_r):
            return True  # Ольга and Olga, 伟 and Wei: one name in two scripts, whose letters cannot be compared
        if first_l == first_r or ((len(first_l) == 1 or len(first_r) == 1) and first_l[0] == first_r[0]):
            return True
        if umlauts_dropped(first_l) == umlauts_dropped(first_r):  # Jürgen, Juergen and Jurgen
            return True
        variants_l, variants_r = name_variants(first_l), name_variants(first_r)
        # A first/last swap, one side possibly an initial: "Carpenter J." signed by James Carpenter, and
        # "Hill Tony" by Anthony Hill (the swapped first name a nickname of the other's).
        if last_l and last_r:
            if _same_or_initial(first_l, last_r) and _same_or_initial(last_l, first_r):
                return True
            if _same_or_initial(last_l, first_r) and variants_l[0] == name_variants(last_r)[0]:
                return True
            if _same_or_initial(first_l, last_r) and name_variants(last_l)[0] == variants_r[0]:
                return True
        # A swap beside a record without a surname: "Fischer Wolfgang" beside a "Wolfgang" whose surname
        # was a placeholder ('unknown') or left empty. The lone first name is the swapped record's surname
        # (or a nickname of it): a name that is one person's first name and the other's surname at once.
        elif last_r and len(first_l) > 1 and variants_l[0] == name_variants(last_r)[0]:
            return True
        elif last_l and len(first_r) > 1 and variants_r[0] == name_variants(last_l)[0]:
            return True
        if variants_l[0] == variants_r[0]:
            return True
        # A typo makes a rare spelling next to a common name.
        if _close(first_l, first_r) and _rare_beside(self.counts.get(left[0], 1), self.counts.get(right[0], 1)):
            return True
        # Close to another form of the other's name ("Mke" to Mike, so to Michael): each name is as common
        # as all its forms together, however the data spells it, so Tim (a Timothy) beside Tom (a Thomas)
        # is two people however rare either spelling is.
        return any(_close(a, b) for a in variants_l for b in variants_r) and _rare_beside(
            self._name_count(left[0]), self._name_count(right[0])
        )

    def _name_count(self, name: str) -> int:
        """How often the name appears in the data in any of its forms (all its nickname group's spellings)."""
        forms = name_variants(name)
        return max(self.counts.get(name, 1), sum(self.counts.get(form, 0) for form in forms))

    def people(self, names: list[tuple[str, str | None]]) -> int:
        """How many people a set of (first, last) names needs at least: groups of compatible names. Full
        names are placed first: a first name alone ("Jane") then meets every group it could belong to,
        including one a swapped signature ("Carpenter J.") started."""
        return count_groups(names, self.compatible, key=lambda name: (name[1] is None, name[0], name[1] or ""))


@functools.lru_cache(maxsize=1 << 18)
def _letters(name: str | None) -> str | None:
    """A name as compared: its letters only ("j." -> "j"), without accents (Sören and Soren are one
    spelling), None when it has none. Kept per distinct name: the sharing check asks about the same few
    thousand names hundreds of thousands of times (2.3 s of a 1M-record run before)."""
    if name is None:
        return None
    return "".join(ch for ch in fold_accents(name) if ch.isalpha()) or None


def _latin(letters: str) -> bool:
    """Whether a folded name is written in Latin letters (as folded, a-z), not in another script only."""
    return any("a" <= ch <= "z" or "A" <= ch <= "Z" for ch in letters)


def _different_initials(a: str | None, b: str | None) -> bool:
    """Both last names are initials ("c.", "k"), and not the same one."""
    if a is None or b is None or len(a) > 2 or len(b) > 2:
        return False
    a, b = _letters(a), _letters(b)
    return a is not None and b is not None and len(a) == 1 and len(b) == 1 and a != b


# A generational suffix ending a last name as a CRM's last-name field keeps it ("Morris Jr."), and the
# generation it names. II is usually written for a son named after his father, as Jr. is.
_GENERATIONS = {"sr": "senior", "senior": "senior", "jr": "junior", "junior": "junior", "ii": "junior"}
_GENERATIONS |= {"iii": "third", "iv": "fourth"}
_WORDS = re.compile(r"[^\W\d_]+")


@functools.lru_cache(maxsize=1 << 16)
def generation(last_name: str | None) -> str | None:
    """The generation a last name's suffix names ("Morris Jr." -> junior), None without one."""
    words = _WORDS.findall(last_name.lower()) if last_name else []
    return _GENERATIONS.get(words[-1]) if len(words) > 1 else None


def _different_generations(a: str | None, b: str | None) -> bool:
    """Both last names end in a generational suffix, naming different generations: a father and son."""
    if a is None or b is None or a == b:
        return False
    generation_a, generation_b = generation(a), generation(b)
    return generation_a is not None and generation_b is not None and generation_a != generation_b


def _close(a: str, b: str) -> bool:
    """Spellings close enough to be one name mistyped: Jaro-Winkler at least 0.85, or one keying slip
    apart (a changed, added, dropped or swapped letter) in names of four letters or more (Jan and Jen,
    Tim and Tom are one slip apart and different names), or a letter dropped from one of four or more
    (Rne for Rene, whose Jaro-Winkler is 0.825: a short name's one gap weighs heavily)."""
    if jellyfish.jaro_winkler_similarity(a, b) >= 0.85:
        return True
    shorter, longer = sorted((len(a), len(b)))
    slip_possible = shorter >= 4 or (longer >= 4 and shorter == longer - 1)
    return slip_possible and jellyfish.damerau_levenshtein_distance(a, b) <= 1


def _rare_beside(a: int, b: int) -> bool:
    """One of two counts is rare next to the other: at most a tenth of it, or seen at most twice."""
    rarer, commoner = sorted((a, b))
    return rarer <= max(2, commoner // 10)


def _same_or_initial(a: str, b: str) -> bool:
    """One name, or an initial of it, or a close spelling of it."""
    if len(a) == 1 or len(b) == 1:
        return a[0] == b[0]
    return jellyfish.jaro_winkler_similarity(a, b) >= 0.92


def birth_date_people(dates: list[str]) -> int:
    """How many people a set of YYYYMMDD birth dates needs at least: groups of possible typos of one date."""
    return count_groups(dates, birth_dates_compatible, key=str)


def count_groups(items: Sequence[T], compatible: Callable[[T, T], bool], key: Callable[[T], object]) -> int:
    """Items put in the first group holding one they are compatible with; how many groups that makes.

    Compatibility is not transitive (A~B and B~C, but not A~C), so the count depends on the order items
    are seen in: they are sorted by `key` first, or a list DuckDB built in whatever order its threads
    met the rows would block a shared e-mail in one run and not in the next."""
    groups: list[list[T]] = []
    for item in sorted(items, key=key):  # type: ignore[arg-type]
        for group in groups:
            if any(compatible(item, other) for other in group):
                group.append(item)
                break
        else:
            groups.append([item])
    return len(groups)


PersonRecord = tuple[str | None, str | None, str | None]
"""What a record says about who carries a shared value: (first name, last name, YYYYMMDD birth date)."""


def group_people(records: Sequence[PersonRecord], first_names: FirstNames) -> list[int | None]:
    """The person each record under a shared value looks like: a group number per record, or None where
    the record could be several of them (it fits more than one group) or says nothing (no first name, no
    birth date).

    A record fits a group when its first name can be one of the group's (see FirstNames: nicknames,
    typos, initials, a first/last swap) and its birth date could be a typo of every one the group holds
    (see birth_dates_compatible); a missing name or date objects to nothing. Records saying the most are
    placed first (name and birth date, then either), so a record with a name only meets the groups its
    better-described neighbours made. A record placed in one group that also fits another one, once all
    are placed, is taken out: it stays ambiguous."""

    def fits(record: PersonRecord, members: list[int]) -> bool:
        first, last, born = record
        if born and any(records[m][2] and not birth_dates_compatible(born, records[m][2]) for m in members):
            return False
        named = [records[m] for m in members if records[m][0]]
        return not first or not named or any(first_names.compatible((first, last), (o[0], o[1])) for o in named)

    order = sorted(
        (i for i, r in enumerate(records) if r[0] or r[2]),
        key=lambda i: (records[i][0] is None, records[i][2] is None, *(x or "" for x in records[i])),
    )
    groups: list[list[int]] = []
    placed: list[int | None] = [None] * len(records)
    for i in order:
        homes = [g for g, members in enumerate(groups) if fits(records[i], members)]
        if not homes:
            placed[i] = len(groups)
            groups.append([i])
        elif len(homes) == 1:
            placed[i] = homes[0]
            groups[homes[0]].append(i)
    ambiguous = [
        i
        for i, home in enumerate(placed)
        if home is not None and any(g != home and fits(records[i], members) for g, members in enumerate(groups))
    ]
    for i in ambiguous:
        placed[i] = None
    return placed


def birth_dates_compatible(left: str, right: str) -> bool:
    """Two YYYYMMDD dates that may be one date mistyped: equal, day/month transposed, or one digit apart."""
    if left == right:
        return True
    if left[:4] == right[:4] and left[4:6] == right[6:8] and left[6:8] == right[4:6]:
        return True
    return jellyfish.levenshtein_distance(left, right) <= 1


Conflict = Callable[[Customer, Customer, FirstNames], bool]
"""A strong conflict: True when two customers hold values that cannot be one person's."""


def birth_dates_differ(a: Customer, b: Customer, first_names: FirstNames) -> bool:
    """Both hold birth dates, none of which could be a typo of one the other holds."""
    if not a.birth_dates or not b.birth_dates:
        return False
    # A date both hold settles it without comparing every pair of dates (most links).
    return a.birth_dates.isdisjoint(b.birth_dates) and not any(
        birth_dates_compatible(x, y) for x in a.birth_dates for y in b.birth_dates
    )


def first_names_differ(a: Customer, b: Customer, first_names: FirstNames) -> bool:
    """Both hold first names, none of which could be the other's (see FirstNames), or both hold names
    with a generational suffix, naming different generations only: a customer whose records include an
    "Eric Morris Sr." is the father, whatever records without the suffix it also holds, and one with an
    "Eric Morris Jr." the son."""
    if not a.names or not b.names:
        return False
    generations_a = {g for _, last in a.names if (g := generation(last))}
    generations_b = {g for _, last in b.names if (g := generation(last))}
    if generations_a and generations_b and generations_a.isdisjoint(generations_b):
        return True
    return not any(first_names.compatible(x, y) for x in a.names for y in b.names)


class ConstrainedUnion:
    """Union-find over customers whose merges are refused when the merged customer would break a rule."""

    def __init__(
        self,
        customers: list[Customer],
        limits: dict[str, int],
        max_person_records: int,
        conflicts: Mapping[str, Conflict] | None = None,
        first_names: FirstNames | None = None,
    ) -> None:
        self.parent = list(range(len(customers)))
        self.customers = customers
        self.limits = limits
        self.max_person_records = max_person_records
        self.conflicts = dict(conflicts or {})  # checked in this order; the first that objects is the reason
        self.first_names = first_names or FirstNames({})

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def objection(self, a: Customer, b: Customer) -> str | None:
        """Why a and b may not merge, or None."""
        if a.person_records + b.person_records > self.max_person_records:
            return f"cluster size: over {self.max_person_records} person records"
        for id_type, limit in self.limits.items():
            values = a.limited.get(id_type, set()) | b.limited.get(id_type, set())
            if len(values) > limit:
                return f"{id_type}: {len(values)} values, max_per_profile {limit}"
        for name, differ in self.conflicts.items():
            if differ(a, b, self.first_names):
                return f"{name} differs"
        return None

    def merge(self, left: int, right: int) -> str:
        """Merge the customers holding `left` and `right`; returns 'linked', 'same customer' or the objection."""
        a, b = self.find(left), self.find(right)
        if a == b:
            return "same customer"
        objection = self.objection(self.customers[a], self.customers[b])
        if objection is not None:
            return "conflict: " + objection
        if self.customers[a].person_records < self.customers[b].person_records:
            a, b = b, a
        self.parent[b] = a
        self.customers[a].absorb(self.customers[b])
        return "linked"


def cluster_linked(
    rows: list[tuple],
    limits: dict[str, int],
    max_person_records: int,
    conflicts: Mapping[str, Conflict],
    first_names: FirstNames,
) -> list[tuple[str, str, str, str | None]]:
    """Apply one group's links, strongest first, to the customers they join (ConstrainedUnion).

    A group is a connected component of the graph whose nodes are customers and whose edges are links
    over the threshold: a merge in one group cannot change a decision in another, so each group is
    decided where its rows are (`Sql.map_groups`: on Spark's executors) and the result is the one
    applying every link in one global order gives. `rows` are text, (group, kind, customer, a, b, c):
    kind 'size' gives the customer's person records in a; 'born' a birth date (YYYYMMDD) in a; 'name' a
    first name in a and last name in b; 'limit' an identifier type in a and value in b; 'link' the link's
    other customer in a, its records in b (left) and c (right), and the customer is the left record's,
    ordered by the link's rank within the group (`rank`, the last column). Returns ('link', left record,
    right record, decision) for each link and ('root', customer, customer it joined, None) for each
    customer merged into another."""
    customers: dict[int, Customer] = {}
    links: list[tuple[int, int, int, str, str]] = []
    for _group, kind, customer, a, b, c, rank in rows:
        held = customers.setdefault(int(customer), Customer())
        if kind == "size":
            held.person_records = int(a)
        elif kind == "born":
            held.birth_dates.add(a)
        elif kind == "name":
            held.names.add((a, b))
        elif kind == "limit":
            held.limited.setdefault(a, set()).add(b)
        elif kind == "link":
            customers.setdefault(int(a), Customer())
            links.append((int(rank), int(customer), int(a), b, c))
    involved = sorted(customers)
    position = {component: i for i, component in enumerate(involved)}
    union = ConstrainedUnion([customers[c] for c in involved], limits, max_person_records, conflicts, first_names)
    decided: list[tuple[str, str, str, str | None]] = [
        ("link", left, right, union.merge(position[a], position[b])) for _rank, a, b, left, right in sorted(links)
    ]
    for component in involved:
        root = involved[union.find(position[component])]
        if root != component:
            decided.append(("root", str(component), str(root), None))
    return decided
