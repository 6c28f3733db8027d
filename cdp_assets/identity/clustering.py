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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import jellyfish

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

    Equal names, nicknames of one another (Bob, Robert), an initial and a first/last swap always can.
    Close spellings can only when one of them is rare next to the other: a typo makes a rare spelling
    ("Jeen" beside "Jen", "Jammes" beside "James"), while Mark and Mary, or John and Joan, are both
    common names and, at one address, two people.
    """

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self._judged: dict[tuple[tuple[str, str | None], tuple[str, str | None]], bool] = {}

    def compatible(self, left: tuple[str, str | None], right: tuple[str, str | None]) -> bool:
        if left[0] == right[0]:  # most pairs asked about; answered before building a key
            return True
        # The judgement is symmetric and the same name pairs recur across thousands of values: remember it.
        key = (left, right) if (left[0], left[1] or "") <= (right[0], right[1] or "") else (right, left)
        judged = self._judged.get(key)
        if judged is None:
            judged = self._judged[key] = self._compatible(*key)
        return judged

    def _compatible(self, left: tuple[str, str | None], right: tuple[str, str | None]) -> bool:
        first_l, last_l = left
        first_r, last_r = right  # never equal to first_l: compatible() answers that case
        if (len(first_l) == 1 or len(first_r) == 1) and first_l[0] == first_r[0]:
            return True
        if (
            last_l
            and last_r
            and (
                jellyfish.jaro_winkler_similarity(first_l, last_r) >= 0.92
                and jellyfish.jaro_winkler_similarity(last_l, first_r) >= 0.92
            )
        ):
            return True
        variants_l, variants_r = name_variants(first_l), name_variants(first_r)
        if variants_l[0] == variants_r[0]:
            return True
        if max(jellyfish.jaro_winkler_similarity(a, b) for a in variants_l for b in variants_r) < 0.85:
            return False
        rarer, commoner = sorted((self.counts.get(first_l, 1), self.counts.get(first_r, 1)))
        return rarer <= max(2, commoner // 10)

    def people(self, names: list[tuple[str, str | None]]) -> int:
        """How many people a set of (first, last) names needs at least: groups of compatible names."""
        return count_groups(names, self.compatible, key=lambda name: (name[0], name[1] or ""))


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
    """Both hold first names, none of which could be the other's (see FirstNames)."""
    if not a.names or not b.names:
        return False
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
