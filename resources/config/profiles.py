"""Profiles: survivorship rules, traits and the time windows are measured from."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from resources.config.base import _NAME_RE, DURATION_RE, _Strict

SURVIVORSHIP_ATTRIBUTES = ("name", "email", "phone", "address", "date_of_birth")


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
        if value is not None and not DURATION_RE.match(value):
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
        match = DURATION_RE.match(self.window)
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
    excluded_order_statuses: list[str] = Field(
        ["refunded", "cancelled", "canceled", "voided", "void", "failed", "declined", "chargeback"],
        description=(
            "Transactions whose status is one of these (any case) are not orders: order_count, lifetime_revenue, "
            "average_order_value, first_order_at, last_order_at, days_since_last_order and the RFM scores leave "
            "them out. Traits you declare over transactions see every row; filter them with `where`."
        ),
    )
    full_recompute_share: float = Field(
        0.3,
        gt=0,
        le=1,
        description=(
            "Above this share of customers affected by a run's changes, the run recomputes every profile "
            "instead of only theirs (1: only when everyone is affected). It decides the cost, never the result."
        ),
    )

    @field_validator("excluded_order_statuses")
    @classmethod
    def _statuses_as_compared(cls, value: list[str]) -> list[str]:
        """Compared with the status lower-cased and trimmed, as cleaning leaves it written."""
        return sorted({status.strip().lower() for status in value if status.strip()})

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of_written_unquoted(cls, value: object) -> object:
        """YAML reads an unquoted `2025-06-30T00:00:00` (or `2025-06-30`) as a timestamp (a date), not the
        text the documentation shows: taken as that time, not refused as "not a string"."""
        if isinstance(value, date):
            return value.isoformat()
        return value

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
