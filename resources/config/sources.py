"""Sources: which files to read, in what format, and how their fields map onto canonical fields.

A source may also be an HTTP API (`format: http`): the platform polls it on a schedule and lands its
pages as JSON-lines files under `<landing>/<source name>/`, so from the landing folder on it is read,
quarantined and replayed exactly like a source that drops files.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator, model_validator

from resources.config.base import (
    _NAME_RE,
    SECRET_NAME_RE,
    AuthConfig,
    HttpUrl,
    RetryConfig,
    TimeZoneName,
    _Strict,
    check_cron,
    check_span,
    span,
)
from resources.sql import Sql, SqlError

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
# Timestamp formats that are no strptime pattern: seconds or milliseconds since 1970-01-01 UTC, as APIs give
# times (Intercom, Stripe), with the milliseconds each counts.
UNIX_TIME_FORMATS: dict[str, int] = {"unix_seconds": 1000, "unix_milliseconds": 1}
# The files an http source's polls land, inside its folder of the landing folder.
API_PAGE_GLOB = "*.jsonl"

# The most characters a text value of a canonical field may have, so a runaway value (a whole file in one
# cell) cannot reach profiles and destinations. Cleaning applies them (cdp_assets/clean/rules.py); the
# collector refuses a Segment event whose ids are over the limits cleaning would quarantine them by.
TEXT_LIMIT = 200  # names, address lines, city, region, postal code, country, phone, event name, status, ...
TEXT_LIMITS = {"email": 254, "source_record_id": 256, "event_id": 256, "identifier": 256}


def text_limit(field: str) -> int:
    """The most characters a value of this canonical field may have."""
    return TEXT_LIMITS.get(field, TEXT_LIMIT)


# The control characters no legitimate text holds, as a character class: C0 controls (NUL included) other
# than tab, line feed and carriage return, DEL, and C1 controls. Cleaning's SQL (RE2, and Java's regex on
# Spark) and the collector (Python's re) read the one pattern: all three take `\xhh`. Cleaning quarantines
# a value holding one; the collector refuses an event whose ids hold one.
CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"

# An event or order dated more than this many days after its file was loaded is a wrong time (a device's
# clock, a placeholder like 2099-01-01), not activity to come: cleaning quarantines it, and the collector
# refuses an event dated so after it received it.
FUTURE_MARGIN_DAYS = 1

# Half of a UTF-16 surrogate pair, as a character class over the text Python's `json` reads: JSON may
# escape one with no other half (`"\ud800"`, a string cut inside an emoji), which `json` reads into a
# string no UTF-8 text can hold and DuckDB's JSON reader refuses, failing a whole file's load. The
# extract quarantines a JSON line holding one; the collector stores U+FFFD in its place, as a browser's
# UTF-8 encoder writes it.
UNPAIRED_SURROGATE = "[\ud800-\udfff]"


# The deepest a JSON record may nest its arrays and objects. Python's parser recurses once per level, so a
# line nested thousands deep (a few kilobytes of `[`) raised RecursionError and failed its source's whole
# extract, every run; and where it gave up depended on how deep the reading code already was. A record nested
# deeper is refused (a row of the extract's quarantine; a 400 from the collector) by this count alone.
MAX_JSON_NESTING = 100
_JSON_NESTING_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_nesting_exceeds(text: str, limit: int = MAX_JSON_NESTING) -> bool:
    """Whether the JSON `text` nests arrays and objects deeper than `limit` (brackets inside strings do not
    count). A text with no more brackets than the limit cannot, and is not scanned: the common case costs
    two counts."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for token in _JSON_NESTING_TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


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
        if self.path == []:
            # `{path: []}` reads nothing: cleaning would fail on the SQL it makes, naming no field.
            raise ValueError("'path' must name at least one field")
        if self.path is not None and not all(p.strip() for p in self.path):
            raise ValueError("'path' entries must not be empty")
        for fmt in self.formats or []:
            # 'DD/MM/YYYY' parses nothing, and the mistake would show only as every value refused after a run.
            if fmt not in UNIX_TIME_FORMATS and not re.search(r"%[a-zA-Z]", fmt):
                raise ValueError(
                    f"formats: '{fmt}' has no strptime directive; write it with % codes, e.g. '%d/%m/%Y' for "
                    "DD/MM/YYYY or '%Y-%m-%dT%H:%M:%S%z' for a timestamp with an offset"
                )
        return self


# No strptime reads Unix epoch seconds: say how to read them, rather than only that the code is unknown.
_EPOCH_HINT = " (for seconds since 1970, write the format unix_seconds; for milliseconds, unix_milliseconds)"


def _timestamp_format_problem(fmt: str) -> str | None:
    """Why DuckDB's strptime, which reads timestamps (`updated_at`, `occurred_at`), cannot use `fmt`, or None.

    Its codes are nearly Python's but not all of them; one it does not know would otherwise fail the
    cleaning run of every file of the source, with DuckDB's words and no field named."""
    engine = Sql.in_memory()
    try:
        engine.execute("select try_strptime('', ?)", [fmt])
    except SqlError as exc:
        reason = str(exc).splitlines()[0].split("Error: ", 1)[-1]
        return f"is not a format DuckDB's strptime reads: {reason}" + (_EPOCH_HINT if "%s" in fmt else "")
    finally:
        engine.close()
    return None


def _date_format_problem(fmt: str) -> str | None:
    """Why Python's strptime, which reads dates of birth, cannot use `fmt`, or None: a code it does not know
    would otherwise refuse every value as not a date."""
    try:
        datetime.strptime("", fmt)
    except ValueError as exc:
        if "does not match format" not in str(exc):
            return f"is not a format Python's strptime reads: {exc}" + (_EPOCH_HINT if "%s" in fmt else "")
    return None


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


# Header names that carry secrets: they belong in `auth`, read from the environment, not in the file.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"})


class PaginationConfig(_Strict):
    """How an API says where the next page is.

    `cursor`: an opaque cursor in the body (`cursor_path`), sent back as the `cursor_param` query
    parameter. `next_url`: the next page's URL in the body (`next_url_path`). `page`: numbered pages
    (`page_param` from `first_page`), ending at an empty page or, with `page_size`, a short one.
    `link_header`: the RFC 8288 (formerly 5988) `Link: <...>; rel="next"` response header, as GitHub and
    many others send. `none`: one request returns everything.
    """

    style: Literal["none", "cursor", "next_url", "page", "link_header"] = "none"
    cursor_path: str | None = Field(None, description="Dotted path of the next cursor in the body (style cursor).")
    cursor_param: str = Field("cursor", description="Query parameter that sends the cursor back (style cursor).")
    next_url_path: str | None = Field(None, description="Dotted path of the next page's URL (style next_url).")
    page_param: str = Field("page", description="Query parameter of the page number (style page).")
    first_page: int = Field(1, ge=0)
    page_size_param: str | None = Field(None, description="Query parameter of the page size, sent with page_size.")
    page_size: int | None = Field(None, ge=1, le=100_000)
    max_pages: int = Field(100_000, ge=1, description="A poll fails beyond this many pages (a pagination loop).")

    @model_validator(mode="after")
    def _style_has_what_it_needs(self) -> PaginationConfig:
        if self.style == "cursor" and not self.cursor_path:
            raise ValueError("style 'cursor' needs cursor_path: where the next cursor is in the body, e.g. meta.next")
        if self.style == "next_url" and not self.next_url_path:
            raise ValueError("style 'next_url' needs next_url_path: where the next URL is in the body, e.g. links.next")
        if self.page_size_param and self.page_size is None:
            raise ValueError("page_size_param needs page_size: the number of records to ask for per page")
        return self


class IncrementalConfig(_Strict):
    """Ask only for what changed since the last poll: the newest value of `field` among the records
    landed so far is sent as the `param` query parameter of the next poll's first request."""

    field: str = Field(description="Dotted path of a record's change time or version, e.g. updated_at.")
    param: str = Field("updated_since", description="Query parameter the API filters changed records by.")
    start: str | None = Field(None, description="Value sent on the first poll; none asks for everything.")
    sorted: bool = Field(
        False,
        description=(
            "The API returns records oldest first: the cursor is then saved after every landed file, so a poll "
            "that fails half-way resumes where it stopped. Otherwise it is saved once the whole poll has landed."
        ),
    )


def _no_secret_params(names: list[str]) -> None:
    """Refuse query parameters named like secrets (api_key, access_token): their values would sit in this
    file, and auth's query_param sends them from the environment instead."""
    for name in names:
        if SECRET_NAME_RE.search(name):
            raise ValueError(
                f"query parameter '{name}' carries a secret: declare it under auth (env: VARIABLE, "
                f"query_param: {name}) so the secret stays in the environment, not in this file"
            )


class HttpSourceConfig(_Strict):
    """Where and how an API source is polled."""

    url: HttpUrl
    records_key: str | None = Field(
        "data", description="Dotted path of the list of records in a page's body; null when the body is the list."
    )
    params: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Query parameters sent.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent (no secrets: use auth).")
    auth: AuthConfig | None = None
    pagination: PaginationConfig = PaginationConfig()
    incremental: IncrementalConfig | None = None
    rate_limit_per_second: float | None = Field(None, gt=0)
    retry: RetryConfig = RetryConfig()
    schedule: str | None = Field(
        "*/15 * * * *", description="Cron of the source's poll schedule (UTC); null to poll only when launched."
    )
    records_per_file: int = Field(10_000, ge=1, description="Records per landed JSON-lines file.")

    @field_validator("url")
    @classmethod
    def _no_secret_in_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if "@" in parts.netloc:
            raise ValueError("holds a user and password: a secret belongs under auth (env: VARIABLE), not in this file")
        _no_secret_params([name for name, _ in parse_qsl(parts.query, keep_blank_values=True)])
        return value

    @field_validator("params")
    @classmethod
    def _params_hold_no_secret(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        _no_secret_params(list(value))
        return value

    @field_validator("headers")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in _SECRET_HEADERS:
                raise ValueError(
                    f"header '{name}' carries a secret: declare it under auth (env: VARIABLE, header: {name}) "
                    "so the secret stays in the environment, not in this file"
                )
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return check_cron(value)


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
    if data.get("timezone") not in (None, "UTC"):
        # The collector stores every timestamp in UTC as it receives it, as Segment's API does (one without an
        # offset is taken as UTC there), so a zone here would change nothing: refused rather than ignored.
        raise ValueError(
            "timezone: the collector stores every timestamp in UTC, as Segment's API reads it (one sent without "
            "an offset is UTC); send timestamps with their offset instead"
        )
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


# The person fields that identify by themselves (see SourceConfig._contacts_identify), each its own
# built-in identifier type.
CONTACT_FIELDS = ("email", "phone")


def _field_paths(spec: Any) -> list[str]:
    """The paths a field mapping reads, as written in the configuration (`Email`, `{path: [a, b]}`)."""
    path = spec.get("path") if isinstance(spec, dict) else spec
    paths = [path] if isinstance(path, str) else path if isinstance(path, list) else []
    return [p for p in paths if isinstance(p, str) and p.strip()]


class SourceConfig(_Strict):
    """One system that drops files into the landing folder, an API the platform polls into it (`http`), or
    one that sends events to the collector (`segment`)."""

    name: str
    format: Literal["csv", "jsonl", "parquet", "http", "segment"]
    glob: str = Field(
        description="Files of this source, relative to the landing folder, e.g. crm/*.csv; for an http source "
        "always <name>/*.jsonl, where its pages land; for a segment source collector/<name>/*.jsonl."
    )
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
        default_factory=dict,
        description="Consent purpose -> field holding a yes/no statement: a person record's, dated by its "
        "updated_at, or an event's or order's (a consent banner's choice, a checkout's marketing box), dated by "
        "when it happened.",
    )
    attributes: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Person sources only: attributes of your own (a lifecycle stage, a loyalty tier) -> the field "
        "holding them; each becomes a text column of the golden profile.",
    )
    identifiers: list[IdentifierSpec] = Field(default_factory=list)
    default_country: str = Field("US", description="ISO country used to read phone numbers without +code.")
    timezone: TimeZoneName = Field(
        "UTC",
        description="IANA time zone of the source's timestamps written without an offset or zone "
        "('2025-06-29 23:30:00' from a Berlin shop: Europe/Berlin); a timestamp with one keeps it.",
    )
    decimal_separator: Literal[".", ","] | None = Field(
        None,
        description="How the source writes amounts: '.' (1,234.56) or ',' (1.234,56, as German or French "
        "systems do). Spaces and apostrophes group thousands either way; with '.', a comma groups them only "
        "before a decimal point. Unset: '.', except that an amount such as 1.234 (one to three digits, a point, "
        "three digits), which a decimal-comma system writes for 1234, is refused as ambiguous; setting '.' "
        "reads it as 1.234.",
    )
    csv: CsvOptions = CsvOptions()
    segment: SegmentOptions | None = Field(
        None, description="For format 'segment' only: the identifier types of userId and anonymousId."
    )
    http: HttpSourceConfig | None = None
    expected_every: str | None = Field(
        None,
        description="How often a file is expected, e.g. '1 day': a warning check marks the source stale when "
        "none has loaded for that long.",
    )
    retain: str | None = Field(
        None,
        description="How long rows are kept, e.g. '730 days': the daily retention run deletes older rows (by their "
        "own time: occurred_at, else updated_at, else when loaded) from the warehouse and the landing files.",
    )

    @model_validator(mode="before")
    @classmethod
    def _contacts_identify(cls, data: Any) -> Any:
        """A person source's mapped `email` and `phone` fields identify the person unless an identifier is
        declared on the same path: in every CDP one e-mail address is one person, and a user who maps the
        field expects it to link records (the sharing check still keeps a household's landline or a shared
        inbox from joining people). Declaring the path under another type keeps that type."""
        if not isinstance(data, dict) or data.get("role") != "person" or not isinstance(data.get("fields"), dict):
            return data
        given = data.get("identifiers")
        if given is not None and not isinstance(given, list):
            return data
        declared = {i.get("path") for i in given or [] if isinstance(i, dict)}
        added = [
            {"path": path, "type": field}
            for field in CONTACT_FIELDS
            for path in _field_paths(data["fields"].get(field))
            if path not in declared
        ]
        return {**data, "identifiers": [*(given or []), *added]} if added else data

    @model_validator(mode="before")
    @classmethod
    def _segment_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "segment":
            return {**segment_source_defaults(data), "segment": data.get("segment") or {}}
        if isinstance(data, dict) and data.get("segment") is not None:
            raise ValueError("segment: only a source with format 'segment' takes these options")
        return data

    @model_validator(mode="before")
    @classmethod
    def _http_lands_in_its_own_folder(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") == "http":
            if "glob" in data:
                raise ValueError("glob: an http source lands its pages in <landing>/<name>/; do not set glob")
            return {**data, "glob": f"{data.get('name')}/{API_PAGE_GLOB}"}
        return data

    @field_validator("glob")
    @classmethod
    def _inside_landing(cls, value: str) -> str:
        # An absolute pattern made the landing sensor's tick fail (Path.glob refuses one), stopping every
        # source's loads; a '..' read files the platform does not own (an erasure rewrites what it loaded).
        if value.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", value):
            raise ValueError(
                f"'{value}' must be a pattern inside the landing folder (landing.path), relative to it, "
                "e.g. 'crm/*.csv'; point landing.path at the folder instead"
            )
        return value

    @field_validator("expected_every")
    @classmethod
    def _expected_every(cls, value: str | None) -> str | None:
        return check_span(value)

    @property
    def expected_within(self) -> timedelta | None:
        """`expected_every` as a span of time."""
        return span(self.expected_every) if self.expected_every else None

    @field_validator("retain")
    @classmethod
    def _retain(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[1-9][0-9]* days?", value.strip()):
            raise ValueError(f"'{value}' is not a retention period; write it as '<n> days', e.g. '730 days'")
        return value

    @property
    def retain_days(self) -> int | None:
        """`retain` as a number of days."""
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
        if not re.fullmatch(r"[A-Za-z]{2}", value):
            raise ValueError("must be a two-letter ISO country code such as 'US' or 'GB'")
        return value.upper()

    @field_validator("consent")
    @classmethod
    def _purposes(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for purpose in value:
            if not _NAME_RE.match(purpose):
                raise ValueError(f"consent purpose '{purpose}' must be lower_snake_case, e.g. 'email_marketing'")
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name, spec in value.items():
            if not _NAME_RE.match(name):
                raise ValueError(f"attribute '{name}' must be lower_snake_case, e.g. 'lifecycle_stage'")
            if spec.formats:
                raise ValueError(f"{name}: 'formats' does not apply: an attribute is kept as the text the source wrote")
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
        if self.role != "person" and self.attributes:
            raise ValueError("'attributes' are only read from person sources (events keep theirs in properties)")
        if self.role != "person" and "occurred_at" not in self.fields:
            raise ValueError(f"a '{self.role}' source must map 'occurred_at' (when it happened)")
        if self.role == "transactions" and "amount" not in self.fields:
            raise ValueError("a 'transactions' source must map 'amount'")
        if (self.format == "http") != (self.http is not None):
            raise ValueError(
                "an http source needs an 'http' section (url, pagination, ...)"
                if self.format == "http"
                else f"'http' applies to format http only, not {self.format}"
            )
        if self.format != "csv" and self.csv != CsvOptions():
            # The other formats' readers never look at it: a latin-1 JSON-lines file stayed unreadable.
            raise ValueError(
                f"csv: its delimiter, quote and encoding apply to format csv only, not {self.format} "
                "(JSON lines are read as UTF-8, Parquet by its own schema)"
            )
        for name, spec in self.fields.items():
            if name in JSON_FIELDS and spec.path is None:
                raise ValueError(f"fields.{name}: a JSON field is read from a 'path', not a constant 'value'")
            if spec.formats and name not in DATE_FIELDS | TIMESTAMP_FIELDS:
                raise ValueError(f"fields.{name}: 'formats' only applies to date and timestamp fields")
            for fmt in spec.formats or []:
                if fmt in UNIX_TIME_FORMATS:
                    problem = None if name in TIMESTAMP_FIELDS else "is a Unix time, which only timestamps take"
                else:
                    problem = _timestamp_format_problem(fmt) if name in TIMESTAMP_FIELDS else _date_format_problem(fmt)
                if problem:
                    raise ValueError(f"fields.{name}: formats: '{fmt}' {problem}")
        return self

    def read_paths(self) -> list[str]:
        """Every source path the mapping reads; a CSV or Parquet file must have all their top-level columns."""
        specs = [
            self.record_id,
            self.event_id,
            *self.fields.values(),
            *self.consent.values(),
            *self.attributes.values(),
        ]
        paths = [p for spec in specs if spec is not None and spec.path for p in spec.path]
        return [*paths, *(i.path for i in self.identifiers)]
