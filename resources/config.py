"""The platform's one YAML configuration file: its schema, validation and loading.

Everything a user changes without touching code lives here: the warehouse, the landing folder, the
sources and how their fields map onto canonical person and event fields, identity rules, segments and
destinations. The file is validated when the Dagster definitions load, so a typo fails fast with the
offending key named instead of surfacing as a wrong number three stages later.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from resources.schema import ConfigError, validate_expressions

CONFIG_ENV_VAR = "CDP_CONFIG"
DEFAULT_CONFIG_NAME = "cdp.yaml"

# Canonical fields a person source may map. Names are the column names of `clean.person_records`.
PERSON_FIELDS: tuple[str, ...] = (
    "full_name",
    "first_name",
    "middle_name",
    "last_name",
    "email",
    "phone",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "date_of_birth",
    "updated_at",
)
# Canonical fields an event or transaction source may map.
EVENT_FIELDS: tuple[str, ...] = ("occurred_at", "event", "amount", "currency", "status")
DATE_FIELDS: frozenset[str] = frozenset({"date_of_birth"})
TIMESTAMP_FIELDS: frozenset[str] = frozenset({"updated_at", "occurred_at"})

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Values that identify nobody. They are blocked from linking records, whatever the identifier type.
DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    r"^[0\-\s]*$",
    r"^-1$",
    r"^(null|none|nil|n/?a|unknown|anonymous)$",
)
DEFAULT_BLOCKED_EMAILS: tuple[str, ...] = (
    "test@test.com",
    "test@example.com",
    "noemail@noemail.com",
    "none@none.com",
    "no@email.com",
    "na@na.com",
)
DEFAULT_BLOCKED_EMAIL_PATTERNS: tuple[str, ...] = (r"^(no-?e?mail|noreply|no-reply|donotreply|none|test)@",)
DEFAULT_BLOCKED_PHONES: tuple[str, ...] = ("+11234567890", "+15555555555", "+10000000000")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """Where a canonical field comes from in a source record.

    `path` is a column name (CSV, Parquet) or a dotted path into a JSON record (`default_address.city`);
    a list means "the first of these that is not empty". `value` is a constant instead of a path.
    `formats` are `strptime` formats for dates and timestamps, tried in order.
    """

    path: list[str] | None = None
    value: str | None = None
    formats: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"path": [data]}
        if isinstance(data, dict) and isinstance(data.get("path"), str):
            return {**data, "path": [data["path"]]}
        return data

    @model_validator(mode="after")
    def _one_of_path_or_value(self) -> FieldSpec:
        if (self.path is None) == (self.value is None):
            raise ValueError("give exactly one of 'path' (where to read it) or 'value' (a constant)")
        if self.path is not None and not all(p.strip() for p in self.path):
            raise ValueError("'path' entries must not be empty")
        return self


class IdentifierSpec(_Strict):
    """A source field that identifies a person, and the identifier type it belongs to.

    Values of the same type link records across sources: an order's `customer.id` and a web event's
    `userId` both typed `shop_customer_id` tie the order and the browsing session to one customer.
    """

    path: str
    type: str

    @field_validator("type")
    @classmethod
    def _type_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("identifier type must be lower_snake_case, e.g. 'email' or 'crm_contact_id'")
        return value


class CsvOptions(_Strict):
    delimiter: str = ","
    quote: str = '"'
    encoding: Literal["utf-8", "latin-1", "cp1252"] = "utf-8"

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be a single character")
        return value


class SourceConfig(_Strict):
    """One system that drops files into the landing folder."""

    name: str
    format: Literal["csv", "jsonl", "parquet"]
    glob: str = Field(description="Files of this source, relative to the landing folder, e.g. crm/*.csv")
    role: Literal["person", "events", "transactions"]
    trust: int = Field(50, ge=0, le=100, description="Higher wins when sources disagree on a person field.")
    record_id: FieldSpec | None = Field(
        None,
        description=(
            "The record's id in its source system. For person sources, the contact/customer id; for "
            "events, the id that ties events to one browsing identity (Segment's anonymousId, then userId); "
            "for transactions, the order id. Without one, a row is identified by its file and line, so "
            "versions of one record in later files cannot be told apart from new records."
        ),
    )
    event_id: FieldSpec | None = Field(
        None, description="Unique id of each event (e.g. messageId); defaults to file and row number."
    )
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    consent: dict[str, FieldSpec] = Field(
        default_factory=dict, description="Consent purpose -> field holding a yes/no statement."
    )
    identifiers: list[IdentifierSpec] = Field(default_factory=list)
    default_country: str = Field("US", description="ISO country used to read phone numbers without +code.")
    csv: CsvOptions = CsvOptions()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("source name must be lower_snake_case (letters, digits, _), e.g. 'crm_contacts'")
        return value

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError("must be a two-letter ISO country code such as 'US' or 'GB'")
        return value

    @field_validator("consent")
    @classmethod
    def _purposes(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for purpose in value:
            if not _NAME_RE.match(purpose):
                raise ValueError(f"consent purpose '{purpose}' must be lower_snake_case, e.g. 'email_marketing'")
        return value

    @model_validator(mode="after")
    def _fields_fit_role(self) -> SourceConfig:
        allowed = PERSON_FIELDS if self.role == "person" else EVENT_FIELDS
        unknown = sorted(set(self.fields) - set(allowed))
        if unknown:
            raise ValueError(
                f"fields {unknown} are not canonical fields of a '{self.role}' source; allowed: {', '.join(allowed)}"
            )
        if self.role != "person" and self.consent:
            raise ValueError("'consent' is only read from person sources")
        if self.role != "person" and "occurred_at" not in self.fields:
            raise ValueError(f"a '{self.role}' source must map 'occurred_at' (when it happened)")
        if self.role == "transactions" and "amount" not in self.fields:
            raise ValueError("a 'transactions' source must map 'amount'")
        for name, spec in self.fields.items():
            if spec.formats and name not in DATE_FIELDS | TIMESTAMP_FIELDS:
                raise ValueError(f"fields.{name}: 'formats' only applies to date and timestamp fields")
        return self

    def read_paths(self) -> list[str]:
        """Every source path the mapping reads; a CSV or Parquet file must have all their top-level columns."""
        specs = [self.record_id, self.event_id, *self.fields.values(), *self.consent.values()]
        paths = [p for spec in specs if spec is not None and spec.path for p in spec.path]
        return [*paths, *(i.path for i in self.identifiers)]


class IdentifierTypeConfig(_Strict):
    """How values of one identifier type are normalised, and which ones may not link records."""

    normalize: Literal["email", "phone", "id"] = "id"
    blocked_values: list[str] = Field(default_factory=list)
    blocked_patterns: list[str] = Field(default_factory=list)
    max_people_per_value: int | None = Field(
        None,
        ge=1,
        description=(
            "A value whose person records look like more people than this (different dates of birth, or "
            "first names that are not variants of one another) links nobody: a household landline or a "
            "family e-mail must not merge the family. Unset: no limit."
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
        with duckdb.connect() as engine:
            for pattern in value:
                try:
                    engine.execute("select regexp_matches('', ?)", [pattern])
                except duckdb.Error as exc:
                    raise ValueError(f"'{pattern}' is not a valid RE2 regular expression: {exc}") from exc
        return value


def _default_identifier_types() -> dict[str, IdentifierTypeConfig]:
    return {
        "email": IdentifierTypeConfig(
            normalize="email",
            blocked_values=list(DEFAULT_BLOCKED_EMAILS),
            blocked_patterns=list(DEFAULT_BLOCKED_EMAIL_PATTERNS),
            max_people_per_value=1,
        ),
        "phone": IdentifierTypeConfig(
            normalize="phone", blocked_values=list(DEFAULT_BLOCKED_PHONES), max_people_per_value=1
        ),
    }


# Columns of `match_records` a blocking rule may name; see cdp_assets/identity/matching/features.py.
BLOCKING_FEATURES: tuple[str, ...] = (
    "first_name",
    "last_name",
    "name_pair",
    "first_name_canon",
    "first_name_soundex",
    "first_initial",
    "last_name_soundex",
    "date_of_birth",
    "birth_year",
    "email",
    "email_local",
    "phone",
    "address",
    "postal_code",
    "city",
    "identifier",
)
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
            "(pairs joined by a shared identifier, as the model measures m) disagree on the field at most this "
            "often. Where typos or re-keyed values make the field unreliable, it stays ordinary evidence."
        ),
    )
    max_em_iterations: int = Field(40, ge=1)
    u_sample_pairs: int = Field(
        1_000_000, ge=1000, description="Random record pairs compared to learn how often strangers agree."
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


class SegmentConfig(_Strict):
    """A named group of profiles: a SQL boolean expression over the columns of `cdp.golden_profiles`."""

    name: str
    description: str = ""
    where: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("segment name must be lower_snake_case, e.g. 'high_value'")
        return value


class _DestinationBase(_Strict):
    name: str
    segment: str | None = Field(None, description="Segment whose members are synced; omit to sync every profile.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("destination name must be lower_snake_case, e.g. 'vip_export'")
        return value


class FileDestinationConfig(_DestinationBase):
    """Writes a segment's members to a CSV or Parquet file per run."""

    type: Literal["file"]
    format: Literal["csv", "parquet"] = "csv"
    path: str = Field("exports", description="Folder for the files, relative to the configuration file.")
    fields: list[str] = Field(default_factory=lambda: ["customer_id", "email", "first_name", "last_name"])


class AuthConfig(_Strict):
    """A secret header read from the environment at run time: never written in the file, never logged."""

    env: str = Field(description="Environment variable holding the token.")
    header: str = "Authorization"
    scheme: str | None = Field("Bearer", description="Prefix before the token, e.g. Bearer; null for none.")


class RetryConfig(_Strict):
    max_attempts: int = Field(6, ge=1, le=20)
    base_delay_seconds: float = Field(0.5, ge=0)
    max_delay_seconds: float = Field(30.0, ge=0)
    timeout_seconds: float = Field(10.0, gt=0, description="Per request.")


class _SyncedDestination(_DestinationBase):
    """What every row-level destination shares: what it receives, how, and how hard it retries."""

    fields: dict[str, str] = Field(
        default_factory=lambda: {"email": "email", "first_name": "first_name", "last_name": "last_name"},
        description="Destination field -> golden-profile column.",
    )
    primary_key: str = Field("customer_id", description="Golden-profile column identifying a row.")
    mode: Literal["insert", "update", "upsert", "mirror", "delete"] = "upsert"
    purpose: str | None = Field(None, description="Consent purpose a profile must have granted to be sent.")
    batch_size: int = Field(500, ge=1, le=100_000)
    rate_limit_per_second: float | None = Field(None, gt=0)
    dry_run: bool = Field(False, description="Report what would be sent, send nothing.")
    retry: RetryConfig = RetryConfig()
    auth: AuthConfig | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _list_means_same_names(cls, value: Any) -> Any:
        return {f: f for f in value} if isinstance(value, list) else value


class WebhookDestinationConfig(_SyncedDestination):
    """JSON batches of audience events (entered, exited, updated) posted to one URL."""

    type: Literal["webhook"]
    url: str


class RestDestinationConfig(_SyncedDestination):
    """A bulk upsert/delete API, the shape of e-mail and CRM tools' batch endpoints."""

    type: Literal["rest"]
    upsert_url: str
    delete_url: str | None = None
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    records_key: str = "records"
    ids_key: str = "ids"
    id_field: str = "id"


class HashedAudienceDestinationConfig(_SyncedDestination):
    """An ad-platform audience: members identified only by SHA-256 of normalised e-mail and phone."""

    type: Literal["hashed_audience"]
    url: str
    fields: dict[str, str] = Field(
        default_factory=lambda: {"email_sha256": "email", "phone_sha256": "phone"},
        description="Destination field -> profile column; fields ending in _sha256 are hashed.",
    )
    gmail_dots: bool = Field(False, description="Remove dots from Gmail local parts before hashing (Google).")
    phone_plus: bool = Field(True, description="Hash phones with the leading + (Google); false for Meta.")
    default_region: str = "US"


class PostgresDestinationConfig(_SyncedDestination):
    """Rows upserted (or mirrored) into a table of a PostgreSQL database: reverse ETL to an application."""

    type: Literal["postgres"]
    dsn_env: str = Field(description="Environment variable holding the connection string.")
    table: str
    db_schema: str = Field("public", alias="schema")
    key_column: str = "id"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


RowDestinationConfig = (
    WebhookDestinationConfig | RestDestinationConfig | HashedAudienceDestinationConfig | PostgresDestinationConfig
)
DestinationConfig = Annotated[
    FileDestinationConfig
    | WebhookDestinationConfig
    | RestDestinationConfig
    | HashedAudienceDestinationConfig
    | PostgresDestinationConfig,
    Field(discriminator="type"),
]


SURVIVORSHIP_ATTRIBUTES = ("name", "email", "phone", "address", "date_of_birth")
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week|month|year)s?\s*$", re.IGNORECASE)


class SurvivorshipRule(_Strict):
    """How one profile attribute is chosen among a customer's records.

    Every rule considers only records that have the attribute; ties fall through to source priority,
    then the most recent update, then the most recent load, then source name and record id, so the
    same data always gives the same profile.
    """

    rule: Literal["source_priority", "most_recent", "most_frequent", "longest", "first_seen", "non_null"]
    sources: list[str] | None = Field(
        None, description="Source order for this attribute (first wins); sources not listed rank after, by trust."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        return {"rule": data} if isinstance(data, str) else data


class SurvivorshipConfig(_Strict):
    default: SurvivorshipRule = SurvivorshipRule(rule="source_priority")
    attributes: dict[str, SurvivorshipRule] = Field(default_factory=dict)

    @field_validator("attributes")
    @classmethod
    def _known(cls, value: dict[str, SurvivorshipRule]) -> dict[str, SurvivorshipRule]:
        unknown = sorted(set(value) - set(SURVIVORSHIP_ATTRIBUTES))
        if unknown:
            raise ValueError(f"unknown attribute(s) {unknown}; choose from {', '.join(SURVIVORSHIP_ATTRIBUTES)}")
        return value

    def rule_for(self, attribute: str) -> SurvivorshipRule:
        return self.attributes.get(attribute, self.default)


class TraitConfig(_Strict):
    """A computed trait: an aggregate over a customer's events or transactions, optionally filtered and windowed."""

    name: str
    description: str = ""
    source: Literal["events", "transactions"] = Field(alias="from")
    aggregate: Literal[
        "count", "count_distinct", "sum", "avg", "min", "max", "first", "last", "most_frequent", "unique_list"
    ]
    column: str | None = None
    where: str | None = None
    window: str | None = Field(None, description="e.g. '90 days': only rows in that span before the as-of time.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("trait name must be lower_snake_case, e.g. 'orders_last_90_days'")
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None and not _WINDOW_RE.match(value):
            raise ValueError("window must look like '90 days', '12 hours', '6 months' or '1 year'")
        return value

    @model_validator(mode="after")
    def _column_needed(self) -> TraitConfig:
        if self.aggregate != "count" and not self.column:
            raise ValueError(f"aggregate '{self.aggregate}' needs a 'column'")
        return self

    def window_interval(self) -> str | None:
        """The window as a DuckDB interval literal, e.g. `INTERVAL 90 DAY`."""
        if self.window is None:
            return None
        match = _WINDOW_RE.match(self.window)
        assert match is not None
        return f"interval {int(match.group(1))} {match.group(2).lower()}"


class ProfilesConfig(_Strict):
    as_of: str = Field(
        "now",
        description=(
            "The time windows and 'days since' traits are measured from: 'now', 'latest_activity' (the newest "
            "event or transaction, for replayed or historical data) or an ISO timestamp."
        ),
    )
    survivorship: SurvivorshipConfig = SurvivorshipConfig()
    traits: list[TraitConfig] = Field(default_factory=list)

    @field_validator("as_of")
    @classmethod
    def _as_of(cls, value: str) -> str:
        if value in ("now", "latest_activity"):
            return value
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be 'now', 'latest_activity' or an ISO timestamp like 2025-06-30T00:00:00") from None
        return value


class WarehouseConfig(_Strict):
    path: str = "data/warehouse.duckdb"
    memory_limit: str | None = Field(None, description="DuckDB memory_limit, e.g. '4GB'; DuckDB's default if unset.")
    threads: int | None = Field(None, ge=1)
    read_snapshot: str | None = Field(
        None,
        description="The read-only copy of the public tables BI tools open; default: beside the warehouse, "
        "named <warehouse>_read.duckdb.",
    )
    lock_timeout_seconds: int = Field(
        300, ge=0, description="How long a run waits for another run, or a process holding the warehouse, to let go."
    )

    @field_validator("read_snapshot")
    @classmethod
    def _snapshot_is_a_duckdb_file(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".duckdb"):
            raise ValueError(f"'{value}' is not a .duckdb file name; readers open it with DuckDB")
        return value


class LandingConfig(_Strict):
    path: str = "data/landing"
    settle_seconds: int = Field(10, ge=0, description="The sensor loads a file once it has not changed for this long.")


class CDPConfig(_Strict):
    """The whole configuration file."""

    warehouse: WarehouseConfig = WarehouseConfig()
    landing: LandingConfig = LandingConfig()
    identity: IdentityConfig = IdentityConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    sources: list[SourceConfig]
    segments: list[SegmentConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    base_dir: Path = Field(Path("."), exclude=True, description="Folder relative paths resolve against.")

    @model_validator(mode="after")
    def _cross_references(self) -> CDPConfig:
        if self.warehouse.read_snapshot and self.read_snapshot_path == self.warehouse_path:
            raise ValueError("warehouse.read_snapshot: must be another file than warehouse.path")
        _unique([s.name for s in self.sources], "sources")
        _unique([s.name for s in self.segments], "segments")
        _unique([d.name for d in self.destinations], "destinations")
        if not self.sources:
            raise ValueError("sources: declare at least one source")
        if not any(s.role == "person" for s in self.sources):
            raise ValueError("sources: at least one source must have role 'person'")
        _unique([t.name for t in self.profiles.traits], "profiles.traits")
        source_names = {s.name for s in self.sources}
        for attribute, rule in self.profiles.survivorship.attributes.items():
            unknown = sorted(set(rule.sources or []) - source_names)
            if unknown:
                raise ValueError(f"profiles.survivorship.attributes.{attribute}.sources: unknown source(s) {unknown}")
        segment_names = {s.name for s in self.segments}
        for i, dest in enumerate(self.destinations):
            if dest.segment is not None and dest.segment not in segment_names:
                raise ValueError(
                    f"destinations[{i}] ({dest.name}).segment: unknown segment '{dest.segment}'; "
                    f"declared segments: {sorted(segment_names) or 'none'}"
                )
            if dest.type == "file" and dest.segment is None:
                raise ValueError(f"destinations[{i}] ({dest.name}).segment: a file destination needs a segment")
            purpose = getattr(dest, "purpose", None)
            if purpose is not None and purpose not in self.consent_purposes:
                raise ValueError(
                    f"destinations[{i}] ({dest.name}).purpose: no source states consent for '{purpose}'; "
                    f"known purposes: {self.consent_purposes or 'none'}"
                )
        return self

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the file's own folder unless absolute."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate).resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.warehouse.path)

    @property
    def read_snapshot_path(self) -> Path:
        """The published read-only copy of the public tables: configured, or `<warehouse>_read.duckdb` beside it."""
        if self.warehouse.read_snapshot:
            return self.resolve(self.warehouse.read_snapshot)
        warehouse = self.warehouse_path
        return warehouse.with_name(f"{warehouse.stem}_read.duckdb")

    @property
    def landing_path(self) -> Path:
        return self.resolve(self.landing.path)

    def sources_with_role(self, role: str) -> list[SourceConfig]:
        return [s for s in self.sources if s.role == role]

    @property
    def consent_purposes(self) -> list[str]:
        return sorted({p for s in self.sources for p in s.consent})


def _unique(names: list[str], key: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{key}: the name '{name}' is used twice")
        seen.add(name)


def default_config_path() -> Path:
    """`$CDP_CONFIG`, else `cdp.yaml` in the working directory, else the one beside the code."""
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR]).expanduser().resolve()
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    if local.exists():
        return local.resolve()
    return (Path(__file__).resolve().parents[1] / DEFAULT_CONFIG_NAME).resolve()


def load_config(path: str | os.PathLike[str] | None = None) -> CDPConfig:
    """Read and validate the configuration; raise ConfigError naming the file and the bad key."""
    config_path = Path(path).resolve() if path is not None else default_config_path()
    if not config_path.exists():
        raise ConfigError(f"{config_path}: configuration file not found (set {CONFIG_ENV_VAR} to point at one)")
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: expected a mapping at the top level, found {type(raw).__name__}")
    try:
        config = CDPConfig.model_validate({**raw, "base_dir": config_path.parent})
    except ValidationError as exc:
        raise ConfigError(f"{config_path}: invalid configuration\n{_describe(exc, raw)}") from None
    validate_expressions(config, config_path)
    return config


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    """Pydantic's errors rewritten as `sources[2] (crm_contacts).format: ...` so the key is obvious."""
    lines = []
    for error in exc.errors():
        parts: list[str] = []
        node: Any = raw
        for loc in error["loc"]:
            if isinstance(loc, int):
                label = f"[{loc}]"
                node = node[loc] if isinstance(node, list) and loc < len(node) else None
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
                parts.append(label)
            elif loc in ("function-after[_one_of_path_or_value(), FieldSpec]", "file"):
                continue
            else:
                parts.append(("." if parts else "") + str(loc))
                node = node.get(loc) if isinstance(node, dict) else None
        message = error["msg"].removeprefix("Value error, ")
        # Cross-reference errors are raised at the top level and already start with the key they concern.
        lines.append(f"  {''.join(parts)}: {message}" if parts else f"  {message}")
    return "\n".join(lines)
