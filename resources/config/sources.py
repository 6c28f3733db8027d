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
EVENT_FIELDS: tuple[str, ...] = ("occurred_at", "event", "amount", "currency", "status")
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
    retain: str | None = Field(
        None,
        description="How long rows are kept, e.g. '730 days': the daily retention run deletes older rows (by their "
        "own time: occurred_at, else updated_at, else when loaded) from the warehouse and the landing files.",
    )

    @field_validator("retain")
    @classmethod
    def _retain(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[1-9][0-9]* days?", value.strip()):
            raise ValueError(f"'{value}' is not a retention period; write it as '<n> days', e.g. '730 days'")
        return value

    @property
    def retain_days(self) -> int | None:
        return int(self.retain.split()[0]) if self.retain else None

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
