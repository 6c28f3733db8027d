"""Destinations: where segments are delivered, and how."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from resources.config.base import _NAME_RE, AuthConfig, EnvName, HttpUrl, RetryConfig, _Strict
from resources.identifiers import hashed_kind

# The PostgreSQL destination's column of each row's sync time, beside the key and the mapped fields.
SYNCED_AT_COLUMN = "_cdp_synced_at"
# PostgreSQL's longest name (NAMEDATALEN - 1): a longer one is cut, so two long names can become one.
POSTGRES_NAME_BYTES = 63


class _DestinationBase(_Strict):
    name: str
    segment: str | None = Field(None, description="Segment whose members are synced; omit to sync every profile.")
    required: list[str] = Field(
        default_factory=list,
        description="Fields a member must have a value in to be sent (an SMS tool's phone): those without one are "
        "counted, not sent, and leave the destination as members leaving the segment do.",
    )

    @model_validator(mode="after")
    def _required_are_fields(self) -> _DestinationBase:
        """A required field the destination does not receive could never be checked: a typo, named at load."""
        known = list(getattr(self, "fields", []))
        if unknown := [f for f in self.required if f not in known]:
            raise ValueError(f"required: {unknown} not among the destination's fields {known}")
        return self

    def required_columns(self) -> list[str]:
        """The golden-profile columns behind `required` (for a file, the fields are the columns)."""
        fields = getattr(self, "fields", [])
        return [fields[f] if isinstance(fields, dict) else f for f in self.required]

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
    purpose: str | None = Field(
        None, description="Consent purpose a profile must have granted to be in the file; without one, every member."
    )
    delimiter: Literal[",", ";", "\t", "|"] = Field(
        ",", description="A CSV file's separator: ';' is what Excel expects where the decimal separator is a comma."
    )
    byte_order_mark: bool = Field(
        False, description="Begin a CSV file with UTF-8's byte order mark, without which Excel reads Müller as MÃ¼ller."
    )
    keep_files: int | None = Field(
        None,
        ge=1,
        description="How many of the latest files to keep; older ones are deleted after each export, so copies of "
        "people who have since left the segment or withdrawn consent do not pile up. Unset: every file is kept.",
    )

    @model_validator(mode="after")
    def _csv_options_for_csv(self) -> FileDestinationConfig:
        if self.format != "csv" and (given := sorted({"delimiter", "byte_order_mark"} & self.model_fields_set)):
            raise ValueError(f"{', '.join(given)}: only for format csv; a {self.format} file has no separator or mark")
        return self


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

    @field_validator("auth")
    @classmethod
    def _header_only(cls, value: AuthConfig | None) -> AuthConfig | None:
        if value is not None and value.query_param:
            raise ValueError("query_param: a destination sends its token in a header (header, scheme), not in the URL")
        return value

    @field_validator("fields", mode="before")
    @classmethod
    def _list_means_same_names(cls, value: Any) -> Any:
        return {f: f for f in value} if isinstance(value, list) else value


# The field of a webhook's row naming the customer ids merged into its key that the destination still held
# (cdp_assets/syncs/state.py, plan_sync): the event names them as its previous keys, never as a field, and
# the destination's acknowledgement of the row is their removal too. No configured field may take the name.
MERGED_FROM = "merged_from"


class WebhookDestinationConfig(_SyncedDestination):
    """JSON batches of audience events (entered, exited, updated) posted to one URL."""

    type: Literal["webhook"]
    url: HttpUrl

    @field_validator("fields")
    @classmethod
    def _merged_from_is_the_events_own(cls, value: dict[str, str]) -> dict[str, str]:
        if MERGED_FROM in value:
            raise ValueError(
                f"{MERGED_FROM}: the name is the platform's own (the customer ids a merge folded into a row, sent as "
                "the event's previous_keys); name the field otherwise"
            )
        return value


class RestDestinationConfig(_SyncedDestination):
    """A bulk upsert/delete API, the shape of e-mail and CRM tools' batch endpoints."""

    type: Literal["rest"]
    upsert_url: HttpUrl
    delete_url: HttpUrl | None = None
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    records_key: str = "records"
    ids_key: str = "ids"
    id_field: str = "id"


class HashedAudienceDestinationConfig(_SyncedDestination):
    """An ad-platform audience: members identified only by SHA-256 of normalised e-mail and phone."""

    type: Literal["hashed_audience"]
    url: HttpUrl
    fields: dict[str, str] = Field(
        default_factory=lambda: {"email_sha256": "email", "phone_sha256": "phone"},
        description="Destination field -> profile column; fields ending in _sha256 are hashed.",
    )
    gmail_dots: bool = Field(False, description="Remove dots from Gmail local parts before hashing (Google).")
    phone_plus: bool = Field(True, description="Hash phones with the leading + (Google); false for Meta.")
    default_region: str = "US"

    @field_validator("fields")
    @classmethod
    def _hashed_fields_name_an_identifier(cls, value: dict[str, str]) -> dict[str, str]:
        for field, column in value.items():
            if field.endswith("_sha256") and hashed_kind(column) is None:
                raise ValueError(
                    f"{field}: a hashed field must map to an e-mail or phone column (email, phone), not '{column}'"
                )
        return value


class PostgresDestinationConfig(_SyncedDestination):
    """Rows upserted (or mirrored) into a table of a PostgreSQL database: reverse ETL to an application."""

    type: Literal["postgres"]
    dsn_env: EnvName = Field(description="Environment variable holding the connection string.")
    table: str
    db_schema: str = Field("public", alias="schema")
    key_column: str = "id"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("table", "db_schema", "key_column")
    @classmethod
    def _fits_postgres(cls, value: str) -> str:
        if not value or len(value.encode()) > POSTGRES_NAME_BYTES:
            raise ValueError(f"'{value}' must be 1 to {POSTGRES_NAME_BYTES} bytes: PostgreSQL cuts longer names")
        return value

    @model_validator(mode="after")
    def _columns_of_their_own(self) -> PostgresDestinationConfig:
        """The table's own columns are the key and the sync time; a field named like one would be dropped."""
        if self.key_column == SYNCED_AT_COLUMN:
            raise ValueError(f"key_column: '{SYNCED_AT_COLUMN}' is the column of each row's sync time")
        for field in self.fields:
            if field == self.key_column:
                raise ValueError(
                    f"fields: '{field}' is the key column (key_column), which holds the primary_key "
                    f"({self.primary_key}); give the field another name, or set key_column"
                )
            if field == SYNCED_AT_COLUMN:
                raise ValueError(
                    f"fields: '{field}' is the column of each row's sync time; give the field another name"
                )
            if len(field.encode()) > POSTGRES_NAME_BYTES:
                raise ValueError(
                    f"fields: '{field}' is longer than {POSTGRES_NAME_BYTES} bytes, which PostgreSQL cuts names to"
                )
        return self


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
