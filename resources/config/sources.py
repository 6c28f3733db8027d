"""Sources: which files to read, in what format, and how their fields map onto canonical fields."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from resources.config.base import _NAME_RE, _Strict

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
EVENT_FIELDS: tuple[str, ...] = ("occurred_at", "event", "amount", "currency", "status", "group_id")
# Canonical event fields kept as JSON (a nested object, not text): what a trait reads with a dotted path
# such as `properties.category`. Only events have them.
JSON_FIELDS: tuple[str, ...] = ("properties", "context", "traits")
# Fields only an events source maps.
EVENT_ONLY_FIELDS: frozenset[str] = frozenset({"group_id", *JSON_FIELDS})
DATE_FIELDS: frozenset[str] = frozenset({"date_of_birth"})
TIMESTAMP_FIELDS: frozenset[str] = frozenset({"updated_at", "occurred_at"})


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


class SegmentOptions(_Strict):
    """How the identifiers of Segment-format events are typed.

    Segment's `anonymousId` names a browser or device and `userId` the id the business gives a signed-in
    user; the identity stage links records sharing a value of one type, so each needs the type the same
    id has in the other sources (a shop's customer id typed `shop_customer_id` in its orders).
    """

    user_id_type: str = "user_id"
    anonymous_id_type: str = "anonymous_id"

    @field_validator("user_id_type", "anonymous_id_type")
    @classmethod
    def _type_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("identifier type must be lower_snake_case, e.g. 'anonymous_id'")
        return value


# The folder, under the landing folder, the collector writes each Segment-format source's files to.
COLLECTOR_FOLDER = "collector"
# Keys a Segment-format source does not take: the format fixes them.
_SEGMENT_FIXED = ("glob", "role", "record_id", "event_id", "fields")


def _spec(value: Any) -> Any:
    """A mapping value in normal form, so a fixed key written out in full compares equal to its shorthand."""
    if isinstance(value, dict) and not {"path", "value", "formats"} >= set(value):
        return {k: _spec(v) for k, v in value.items()}
    return FieldSpec.model_validate(value) if isinstance(value, str | dict) else value


def segment_source_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A `format: segment` source as the generic mapping it stands for.

    Events of one browser share an anonymousId, so the record is the anonymousId, else the userId; the
    event id is Segment's messageId (cleaning keeps one event per messageId, since SDKs and the collector
    deliver at least once). Identifiers: anonymousId and userId by their configured types; an alias's
    previousId is an earlier anonymousId or userId, so it is read as both; e-mail and phone traits (which
    cleaning reads only from calls about a person: a group call's traits describe the account).
    """
    options = SegmentOptions.model_validate(data.get("segment") or {})
    anonymous, user = options.anonymous_id_type, options.user_id_type
    derived: dict[str, Any] = {
        "glob": f"{COLLECTOR_FOLDER}/{data.get('name')}/*.jsonl",
        "role": "events",
        "record_id": {"path": ["anonymousId", "userId"]},
        "event_id": "messageId",
        "fields": {
            "occurred_at": "timestamp",
            "event": {"path": ["event", "type"]},
            "group_id": "groupId",
            "properties": "properties",
            "context": "context",
            "traits": "traits",
        },
    }
    # A configuration written back out in full (model_dump) names the fixed keys with the same values.
    fixed = [key for key in _SEGMENT_FIXED if key in data and _spec(data[key]) != _spec(derived[key])]
    if fixed:
        raise ValueError(f"{', '.join(fixed)}: fixed by format 'segment'; remove {'it' if len(fixed) == 1 else 'them'}")
    identifiers = [
        {"path": "anonymousId", "type": anonymous},
        {"path": "userId", "type": user},
        {"path": "previousId", "type": anonymous},
        {"path": "previousId", "type": user},
        {"path": "traits.email", "type": "email"},
        {"path": "traits.phone", "type": "phone"},
        {"path": "context.traits.email", "type": "email"},
        {"path": "context.traits.phone", "type": "phone"},
    ]
    given = [dict(i) if isinstance(i, dict) else i for i in data.get("identifiers") or []]
    unique = {(i.get("path"), i.get("type")): i for i in [*identifiers, *given] if isinstance(i, dict)}
    extra = [i for i in given if not isinstance(i, dict)]  # left for the model to refuse by name
    return {**data, **derived, "identifiers": [*unique.values(), *extra]}


class SourceConfig(_Strict):
    """One system that drops files into the landing folder, or sends events to the collector (`segment`)."""

    name: str
    format: Literal["csv", "jsonl", "parquet", "segment"]
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
    segment: SegmentOptions | None = Field(
        None, description="For format 'segment' only: the identifier types of userId and anonymousId."
    )

    @model_validator(mode="before")
    @classmethod
    def _segment_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "segment":
            return {**segment_source_defaults(data), "segment": data.get("segment") or {}}
        if isinstance(data, dict) and data.get("segment") is not None:
            raise ValueError("segment: only a source with format 'segment' takes these options")
        return data

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
        allowed = PERSON_FIELDS if self.role == "person" else EVENT_FIELDS + JSON_FIELDS
        if self.role == "transactions":
            allowed = tuple(f for f in allowed if f not in EVENT_ONLY_FIELDS)
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
            if name in JSON_FIELDS and spec.path is None:
                raise ValueError(f"fields.{name}: a JSON field is read from a 'path', not a constant 'value'")
            if spec.formats and name not in DATE_FIELDS | TIMESTAMP_FIELDS:
                raise ValueError(f"fields.{name}: 'formats' only applies to date and timestamp fields")
        return self

    def read_paths(self) -> list[str]:
        """Every source path the mapping reads; a CSV or Parquet file must have all their top-level columns."""
        specs = [self.record_id, self.event_id, *self.fields.values(), *self.consent.values()]
        paths = [p for spec in specs if spec is not None and spec.path for p in spec.path]
        return [*paths, *(i.path for i in self.identifiers)]
