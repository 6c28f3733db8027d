"""The schemas users write expressions against, and the load-time check of those expressions.

Segment conditions and trait filters are SQL expressions (DuckDB dialect). SQL is what data engineers
already write, and DuckDB's binder is a complete checker: each expression is bound against an empty
table with the exact schema, so an unknown column or a type mismatch fails when the configuration
loads, with the segment or trait named, not half-way through a run. Binding says nothing about what an
expression reaches (a file, another table), so the allow-list of resources/conditions.py comes first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resources.conditions import ConditionError, check_condition, json_path_sql, sandbox
from resources.sql import Sql, SqlError
from resources.tables import ACTIVITY_TABLES, AMOUNT_TYPE, LINEAGE_COLUMNS, MONEY_TOTAL_TYPE, Table

if TYPE_CHECKING:
    from resources.config import CDPConfig, TraitConfig


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the file and the offending key."""


# The only public columns that say when a run happened rather than what the data holds: everything else
# in schema `cdp` is a function of the landing files and the configuration, identical between runs.
RUN_STAMP_COLUMNS: dict[str, tuple[str, ...]] = {
    "cdp.golden_profiles": ("profile_built_at",),
    "cdp.quarantine": ("quarantined_at",),
    "cdp.customer_id_history": ("run_id", "changed_at"),
    "cdp.consent_history": ("recorded_at",),
}

# Columns of `cdp.golden_profiles` that do not depend on the configuration.
PROFILE_COLUMNS: dict[str, str] = {
    "customer_id": "VARCHAR",
    "first_name": "VARCHAR",
    "middle_name": "VARCHAR",
    "last_name": "VARCHAR",
    "email": "VARCHAR",
    "phone": "VARCHAR",
    "address_line1": "VARCHAR",
    "address_line2": "VARCHAR",
    "city": "VARCHAR",
    "region": "VARCHAR",
    "postal_code": "VARCHAR",
    "country": "VARCHAR",
    "date_of_birth": "DATE",
    "emails": "VARCHAR[]",
    "phones": "VARCHAR[]",
    "addresses": "VARCHAR[]",
    "sources": "VARCHAR[]",
    "record_count": "BIGINT",
    "first_seen_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "order_count": "BIGINT",
    "lifetime_revenue": MONEY_TOTAL_TYPE,
    "average_order_value": MONEY_TOTAL_TYPE,
    "first_order_at": "TIMESTAMP",
    "last_order_at": "TIMESTAMP",
    "days_since_last_order": "BIGINT",
    "rfm_recency": "INTEGER",
    "rfm_frequency": "INTEGER",
    "rfm_monetary": "INTEGER",
    "rfm_score": "VARCHAR",
    "event_count": "BIGINT",
    "last_seen_at": "TIMESTAMP",
    "traits_as_of": "TIMESTAMP",
    "profile_built_at": "TIMESTAMP",
}

# Columns of the cleaned activity tables that traits aggregate and their conditions read: the tables'
# declared columns but their lineage.
ACTIVITY_COLUMNS: dict[str, dict[str, str]] = {
    role: {column: kind for column, kind in table.columns.items() if column not in LINEAGE_COLUMNS}
    for role, table in ACTIVITY_TABLES.items()
}
_NUMERIC = {"DOUBLE", "BIGINT", "INTEGER", AMOUNT_TYPE}
# The activity columns holding JSON, read by dotted path (`properties.category`), as text.
JSON_COLUMNS: dict[str, tuple[str, ...]] = {
    role: tuple(column for column, kind in columns.items() if kind == "JSON")
    for role, columns in ACTIVITY_COLUMNS.items()
}


def json_column_path(role: str, column: str) -> tuple[str, list[str]] | None:
    """(JSON column, keys) when a trait's `column` is a dotted path into a JSON column of its table."""
    root, dot, rest = column.partition(".")
    if not dot or root not in JSON_COLUMNS[role] or not all(rest.split(".")):
        return None
    return root, rest.split(".")


def trait_column_sql(trait: TraitConfig) -> str | None:
    """SQL for the value a trait aggregates: its column, or the text at a JSON path, read as a number
    (NULL where it is not one) when the trait sums or averages it."""
    if not trait.column:
        return None
    path = json_column_path(trait.source, trait.column)
    if path is None:
        return f'"{trait.column}"'
    text = json_path_sql(*path)
    return f"try_cast({text} as DOUBLE)" if trait.aggregate in ("sum", "avg") else text


def _aggregated_numeric_type(column_type: str) -> str:
    """The type `sum` and `avg` give over a column: exact money over an amount, DOUBLE otherwise."""
    return MONEY_TOTAL_TYPE if column_type == AMOUNT_TYPE else "DOUBLE"


def trait_type(trait: TraitConfig) -> str:
    """The DuckDB type of a trait's profile column."""
    if trait.aggregate in ("count", "count_distinct"):
        return "BIGINT"
    if json_column_path(trait.source, trait.column or "") is not None:
        column_type = "DOUBLE" if trait.aggregate in ("sum", "avg") else "VARCHAR"
    else:
        column_type = ACTIVITY_COLUMNS[trait.source][trait.column or ""]
    if trait.aggregate in ("sum", "avg"):
        return _aggregated_numeric_type(column_type)
    return f"{column_type}[]" if trait.aggregate == "unique_list" else column_type


def profile_columns(config: CDPConfig, untyped: frozenset[str] = frozenset()) -> dict[str, str]:
    """The full golden-profile schema: fixed columns, configured traits, one BOOLEAN per consent purpose, one
    VARCHAR per person attribute of the sources' own.
    The traits named in `untyped` (whose column does not exist) are VARCHAR, so that the configuration
    check can go on to the segments that read them."""
    traits = {t.name: "VARCHAR" if t.name in untyped else trait_type(t) for t in config.profiles.traits}
    consent = {f"consent_{p}": "BOOLEAN" for p in config.consent_purposes}
    attributes = {a: "VARCHAR" for a in config.person_attributes}
    return {**PROFILE_COLUMNS, **traits, **consent, **attributes}


def _empty_table(conn: Sql, name: str, columns: dict[str, str]) -> None:
    """A table with the schema and one row of NULLs: binding checks names and types, and evaluating the
    row makes DuckDB cast constants, so `lifetime_revenue > 'lots'` fails here rather than in a run."""
    conn.execute(Table(name, columns).create_sql())
    conn.execute(f"insert into {name} default values")


def _bind(
    conn: Sql, table: str, expression: str, columns: dict[str, str], columns_of: str, json_columns: tuple[str, ...] = ()
) -> str | None:
    """None if the expression passes the allow-list (resources/conditions.py) and binds as a filter on the
    table, else why not; what is bound is the SQL that will run, regenerated from the checked tree."""
    try:
        checked = check_condition(expression, columns, columns_of, json_columns)
    except ConditionError as exc:
        return str(exc)
    try:
        conn.rows(f"select count(*) from {table} where ({checked})")
        [(_, kind)] = conn.column_types(f"select ({checked}) as condition from {table}")
    except SqlError as exc:
        return str(exc).split("\n")[0]
    # DuckDB casts any filter to BOOLEAN, which a row of NULLs survives; a value of the data would not
    # (`where: email` fails on the first address), and an integer selecting non-zero rows is no condition.
    if kind != "BOOLEAN":
        return f"the condition gives a {kind} value, not true or false; compare it (`> 0`, `= 'x'`, `is not null`)"
    return None


def expression_problems(config: CDPConfig) -> list[str]:
    """Traits, segments and destination fields checked against the schemas: one `key: why` line for each
    that does not fit, all of them at once."""
    problems: list[str] = []

    def fail(key: str, message: str) -> None:
        problems.append(f"{key}: {message}")

    untyped: set[str] = set()
    conn = sandbox()  # binding runs each condition once, on a row of NULLs
    try:
        for table, columns in ACTIVITY_COLUMNS.items():
            _empty_table(conn, table, columns)
        for i, trait in enumerate(config.profiles.traits):
            key = f"profiles.traits[{i}] ({trait.name})"
            columns = ACTIVITY_COLUMNS[trait.source]
            if trait.name in PROFILE_COLUMNS or trait.name.startswith("consent_"):
                fail(f"{key}.name", f"'{trait.name}' is already a golden-profile column; choose another name")
            elif trait.name in config.person_attributes:
                fail(f"{key}.name", f"'{trait.name}' is also a person attribute a source maps; choose another name")
            json_columns = JSON_COLUMNS[trait.source]
            path = json_column_path(trait.source, trait.column or "")
            if trait.column and trait.column not in columns and path is None:
                paths = f" or a path into {', '.join(c + '.<key>' for c in json_columns)}" if json_columns else ""
                untyped.add(trait.name)
                fail(
                    f"{key}.column",
                    f"unknown column '{trait.column}' of {trait.source}; use {', '.join(columns)}{paths}",
                )
            elif trait.aggregate in ("sum", "avg") and path is None and columns[trait.column or ""] not in _NUMERIC:
                fail(f"{key}.aggregate", f"'{trait.aggregate}' needs a numeric column, '{trait.column}' is not")
            whose = f"the {trait.source} table's"
            if trait.where and (error := _bind(conn, trait.source, trait.where, columns, whose, json_columns)):
                fail(f"{key}.where", f"{error}. Columns of {trait.source}: {', '.join(columns)}")

        for i, source in enumerate(config.sources):
            for name in source.attributes:
                if name in PROFILE_COLUMNS or name.startswith("consent_"):
                    fail(
                        f"sources[{i}] ({source.name}).attributes.{name}",
                        f"'{name}' is already a golden-profile column; map the field as it, or choose another name",
                    )
        columns = profile_columns(config, frozenset(untyped))
        for i, destination in enumerate(config.destinations):
            used = destination.fields if destination.type == "file" else list(destination.fields.values())
            if destination.type != "file":
                used = [*used, destination.primary_key]
            unknown = [f for f in used if f not in columns]
            if unknown:
                fail(
                    f"destinations[{i}] ({destination.name}).fields",
                    f"unknown profile column(s) {unknown}. Columns you can use: {', '.join(columns)}",
                )
        _empty_table(conn, "golden_profiles", columns)
        for i, segment in enumerate(config.segments):
            if error := _bind(conn, "golden_profiles", segment.where, columns, "the profile's"):
                fail(
                    f"segments[{i}] ({segment.name}).where",
                    f"{error}. Columns you can use: {', '.join(columns)}",
                )
        return problems
    finally:
        conn.close()
