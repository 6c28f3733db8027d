"""Identity: identifier types, blocked values, the matching settings and their vocabulary."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from resources.config.base import _Strict
from resources.identifiers import DEFAULT_NORMALISER, NORMALISERS
from resources.sql import Sql, SqlError

# The normalisers an identifier type may name: resources/identifiers.py declares them.
NormaliserName = Literal[tuple(NORMALISERS)]  # type: ignore[valid-type]


class IdentifierTypeConfig(_Strict):
    """How values of one identifier type are normalised, and which ones may not link records."""

    normalize: NormaliserName = DEFAULT_NORMALISER
    blocked_values: list[str] = Field(default_factory=list)
    blocked_patterns: list[str] = Field(default_factory=list)
    max_people_per_value: int | None = Field(
        None,
        ge=1,
        description=(
            "A value whose person records look like more people than this (different dates of birth, or "
            "first names that are not variants of one another) does not link them together: a household "
            "landline or a family e-mail must not merge the family (see max_people_linked_within). Unset: "
            "no limit."
        ),
    )
    max_people_linked_within: int = Field(
        4,
        ge=0,
        description=(
            "A value shared by more people than max_people_per_value, but by at most this many, still links "
            "the records within each person it is shared by (told apart by first names and birth dates; a "
            "record that could be several of them gets no link from it). A value shared by more people "
            "links nobody. 0: a shared value always links nobody."
        ),
    )

    priority: int = Field(
        0,
        description=(
            "Where two identifier types disagree about who is who (see max_per_profile), links over the "
            "type with the higher priority are made first and win."
        ),
    )
    max_per_profile: int | None = Field(
        None,
        ge=1,
        description=(
            "At most this many distinct values of the type in one customer. Declare it for an id that is "
            "unique per person in a trusted source (a national id, an employee number): two records with "
            "different values are then different people, and no link may merge them. Unset: a customer may "
            "hold several values, so duplicates inside one source (two CRM contacts sharing an e-mail) merge."
        ),
    )

    @field_validator("blocked_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        # Checked by the engine that runs them: DuckDB's RE2 refuses some of what Python's `re` accepts
        # (look-arounds, back-references), and would otherwise fail mid-run.
        engine = Sql.in_memory()
        try:
            for pattern in value:
                try:
                    engine.execute("select regexp_matches('', ?)", [pattern])
                except SqlError as exc:
                    raise ValueError(f"'{pattern}' is not a valid RE2 regular expression: {exc}") from exc
        finally:
            engine.close()
        return value

    @field_validator("blocked_values")
    @classmethod
    def _phones_with_their_country(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # A listed phone is compared in E.164, read as a US number unless it gives its country code: a
        # national number of another country ("030 12345678") would stay as written and match no cleaned
        # number, so the value it was listed to block would go on linking people. Refused, not guessed.
        if info.data.get("normalize") != "phone":
            return value
        for listed in value:
            international = listed.strip().startswith(("+", "00"))
            if not international and NORMALISERS["phone"].match_key(listed) is None:
                raise ValueError(
                    f"'{listed}' is no US phone number and gives no country code; listed phones are compared "
                    "in E.164 and read as US numbers unless written with their country code (+49 30 12345678)"
                )
        return value


def _default_identifier_types() -> dict[str, IdentifierTypeConfig]:
    """One built-in type per normaliser that declares one, with the normaliser's junk lists and limit."""
    return {
        n.name: IdentifierTypeConfig(
            normalize=n.name,
            blocked_values=list(n.blocked_values),
            blocked_patterns=list(n.blocked_patterns),
            max_people_per_value=n.max_people_per_value,
        )
        for n in NORMALISERS.values()
        if n.default_type
    }


# The identity stage's vocabulary, declared once: the validator below accepts exactly these names, and
# the engine implements each (a test keeps them in step).
#
# Blocking features: columns of `match_records` a blocking rule may name (their SQL is in
# cdp_assets/identity/matching/features.py), each with the comparisons it forces to agree: pairs a rule
# finds say nothing about those, so the model leaves them out when it learns from the rule's pairs.
BLOCKING_FEATURES: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name",),
    "last_name": ("last_name",),
    "name_pair": ("first_name", "last_name"),
    "first_name_canon": ("first_name",),
    "first_name_soundex": ("first_name",),
    "first_initial": (),  # an initial in common leaves the first names free to differ
    "last_name_soundex": ("last_name",),
    "date_of_birth": ("date_of_birth",),
    "birth_year": ("date_of_birth",),
    "email": ("email",),
    "email_local": ("email",),
    "email_local_key": ("email",),
    "email_one_slip": ("email",),  # its values are distinct per record (a deletion neighbourhood)
    "phone": ("phone",),
    "address": ("address",),
    "postal_code": ("postal_code",),
    "city": ("city",),
    "identifier": ("identifier",),
}
# Blocking features holding several values, a record being in the block of each.
LIST_FEATURES: frozenset[str] = frozenset({"email_one_slip"})
# Comparisons: their levels are in cdp_assets/identity/matching/comparisons.py.
COMPARISONS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "date_of_birth",
    "email",
    "phone",
    "address",
    "postal_code",
    "city",
    "identifier",
)
# Comparisons that declare a strong conflict, in the order they are checked (the first that objects is
# the reason a link is refused).
STRONG_CONFLICTS: tuple[str, ...] = ("date_of_birth", "first_name")
PERSON_EVIDENCE: tuple[str, ...] = ("first_name", "date_of_birth", "email", "identifier")
DEFAULT_BLOCKING_RULES: tuple[tuple[str, ...], ...] = (
    ("name_pair", "postal_code"),
    ("name_pair", "birth_year"),
    ("first_name_canon", "last_name", "postal_code"),
    ("last_name", "postal_code", "birth_year"),
    ("first_name_soundex", "last_name", "postal_code"),
    ("last_name", "date_of_birth"),
    ("first_name", "date_of_birth"),
    ("date_of_birth", "postal_code"),
    ("first_name_soundex", "last_name_soundex", "birth_year"),
    ("phone",),
    ("address", "postal_code"),
)
# Safety nets for typos the rules above miss, affordable only on rare keys: blocks of at most 5 records.
DEFAULT_RARE_KEY_RULES: tuple[tuple[str, ...], ...] = (
    ("first_initial", "last_name", "postal_code"),
    ("first_initial", "date_of_birth"),
    ("last_name", "postal_code"),
    ("email_local_key",),  # a slip in the domain: records with a first name and an e-mail only meet here
    ("email_one_slip",),  # one slip anywhere in the address, where the user alone is too common a key
)
RARE_KEY_BLOCK_SIZE = 5


class BlockingRule(_Strict):
    """Candidate pairs: the person records equal (and not empty) on every feature listed."""

    features: list[str]
    max_block_size: int | None = Field(
        None,
        ge=2,
        description="This rule's own cap on block size, below matching.max_block_size: for coarse keys "
        "(an initial and a surname) that are worth comparing only where they are rare.",
    )


def _default_blocking_rules() -> list[BlockingRule]:
    return [BlockingRule(features=list(r)) for r in DEFAULT_BLOCKING_RULES] + [
        BlockingRule(features=list(r), max_block_size=RARE_KEY_BLOCK_SIZE) for r in DEFAULT_RARE_KEY_RULES
    ]


class MatchingConfig(_Strict):
    """The probabilistic layer: which record pairs are compared, and when a score links or asks for review."""

    enabled: bool = True
    blocking_rules: list[BlockingRule] = Field(
        default_factory=_default_blocking_rules,
        description=(
            "Each rule compares the person records that agree on every feature it lists (none empty): a list "
            "of features, or {features: [...], max_block_size: N} to give the rule its own block cap."
        ),
    )
    max_pairs_per_rule: int = Field(
        25_000_000,
        ge=1,
        description="A blocking rule that would produce more candidate pairs than this fails before any is made.",
    )
    max_block_size: int = Field(
        100,
        ge=2,
        description=(
            "A blocking key shared by more records than this is skipped by its rule (and reported): its n² "
            "pairs would cost more than they find. Pairs in it are still found by the other rules."
        ),
    )
    comparisons: list[str] = Field(default_factory=lambda: list(COMPARISONS))
    link_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description=(
            "Match probability at or above which a candidate pair is linked: by default a pair more likely "
            "one person than two. Raise it where a false merge costs more than a missed one."
        ),
    )
    review_threshold: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Pairs scoring at or above this but below link_threshold go to identity.review, unlinked.",
    )
    strong_conflicts: list[str] = Field(
        default_factory=lambda: list(STRONG_CONFLICTS),
        description="Evidence that stops a probabilistic link from merging two customers, whatever its score.",
    )
    person_evidence: list[str] = Field(
        default_factory=lambda: list(PERSON_EVIDENCE),
        description=(
            "A pair is linked automatically only when at least one of these comparisons agrees; a pair whose "
            "score rests on fields a household shares (surname, address, phone, postal code) goes to review. "
            "Empty: any score at or above link_threshold links."
        ),
    )
    conflict_max_disagreement: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "A strong conflict applies only where the data show it is strong: when the same person's records "
            "(pairs joined by a shared identifier, as the model measures m, and pairs under one shared e-mail or "
            "phone with one last name and postal code, before the deterministic layer judged them) disagree on "
            "the field at most this often. Where "
            "typos or re-keyed values make the field unreliable, it stays ordinary evidence."
        ),
    )
    max_em_iterations: int = Field(40, ge=1)
    u_sample_pairs: int = Field(
        1_000_000,
        ge=1000,
        description="Random record pairs compared to learn how often strangers agree; where the records have "
        "fewer ordered pairs than this, every pair is compared once instead, weighed as the draws would be.",
    )
    seed: int = 42

    @field_validator("blocking_rules", mode="before")
    @classmethod
    def _rules_as_mappings(cls, rules: object) -> object:
        if isinstance(rules, list):
            return [{"features": rule} if isinstance(rule, list | tuple) else rule for rule in rules]
        return rules

    @field_validator("blocking_rules")
    @classmethod
    def _known_features(cls, rules: list[BlockingRule]) -> list[BlockingRule]:
        for index, rule in enumerate(rules):
            if not rule.features:
                raise ValueError(f"blocking rule {index} is empty; list the features a pair must share")
            unknown = [f for f in rule.features if f not in BLOCKING_FEATURES]
            if unknown:
                raise ValueError(
                    f"blocking rule {index} names unknown feature(s) {unknown}; known: {', '.join(BLOCKING_FEATURES)}"
                )
        return rules

    @field_validator("comparisons", "person_evidence", "strong_conflicts")
    @classmethod
    def _known_names(cls, names: list[str], info: ValidationInfo) -> list[str]:
        conflicts = info.field_name == "strong_conflicts"
        what, known = ("strong conflict", STRONG_CONFLICTS) if conflicts else ("comparison", COMPARISONS)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown {what}(s) {unknown}; known: {', '.join(known)}")
        return names

    def block_rules(self) -> list[tuple[list[str], int]]:
        """Each blocking rule's features and the block size it skips keys above."""
        return [
            (r.features, min(r.max_block_size or self.max_block_size, self.max_block_size)) for r in self.blocking_rules
        ]

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> MatchingConfig:
        if self.review_threshold > self.link_threshold:
            raise ValueError("review_threshold must not be above link_threshold")
        return self


class IdentityConfig(_Strict):
    identifier_types: dict[str, IdentifierTypeConfig] = Field(default_factory=_default_identifier_types)
    matching: MatchingConfig = MatchingConfig()
    overrides: str | None = Field(
        None,
        description=(
            "CSV file of manual identity overrides (must_link, cannot_link, unmerge; each with an author and "
            "a reason), relative to cdp.yaml. Keep it in version control; see docs/configuration.md."
        ),
    )
    max_cluster_person_records: int = Field(
        25,
        ge=1,
        description="A cluster holding more person records than this fails the blocking size check.",
    )

    @model_validator(mode="after")
    def _keep_defaults(self) -> IdentityConfig:
        # A user who tunes a type adds to the built-in junk lists; dropping them silently would let
        # test@test.com merge thousands of records again.
        merged = _default_identifier_types()
        for name, spec in self.identifier_types.items():
            base = merged.get(name)
            if base is not None and base.normalize == spec.normalize:
                limit = (
                    spec.max_people_per_value
                    if "max_people_per_value" in spec.model_fields_set
                    else base.max_people_per_value
                )
                spec = spec.model_copy(
                    update={
                        "blocked_values": [*base.blocked_values, *spec.blocked_values],
                        "blocked_patterns": [*base.blocked_patterns, *spec.blocked_patterns],
                        "max_people_per_value": limit,
                    }
                )
            merged[name] = spec
        object.__setattr__(self, "identifier_types", merged)
        return self

    def type_config(self, type_name: str) -> IdentifierTypeConfig:
        return self.identifier_types.get(type_name, IdentifierTypeConfig())

    def profile_limits(self) -> dict[str, int]:
        """Identifier type -> the most distinct values one customer may hold, for types that set one."""
        return {t: s.max_per_profile for t, s in self.identifier_types.items() if s.max_per_profile}
