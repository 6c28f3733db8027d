"""Cleaned records: canonical person records, events and transactions, with every reject quarantined.

Raw rows are mapped onto canonical fields by the configuration, then cleaned by the rules in
`cleaning_rules`. The rules run in Python, once per distinct value (a million rows hold far fewer
distinct e-mails, names or dates), and DuckDB joins the results back. Where most distinct values are
simple (US phone numbers in the common layouts, plain ASCII address lines, plain e-mails), SQL decides
the values whose outcome is certain and the rule runs on the others (`register_map`'s shortcut).
Identifier values, and the person records' own contact fields (e-mail, phone), are cleaned by their
normaliser's rule, one map per normaliser built from its declaration in resources/identifiers.py. A
value that fails its rule is dropped from the record and quarantined with the reason; a row that
cannot be used at all (no record id, an event without a readable time) is quarantined whole. So for every source:
raw rows = cleaned rows + rows quarantined whole, and nothing vanishes.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence

import dagster as dg
import pandas as pd

from cdp_assets.clean import rules
from cdp_assets.extract.assets import ensure_raw_table
from cdp_assets.extract.fields import (
    extracted_sql,
    json_sql,
    number_sql,
    properties_sql,
    record_id_sql,
    shape_sql,
    types_sql,
    value_sql,
)
from cdp_assets.metadata import in_brief, markdown_table, masked_preview, redact_errors, table_metadata
from resources import tables
from resources.config import EVENT_FIELDS, PERSON_FIELDS, CDPConfig, FieldSpec, SourceConfig
from resources.config.sources import FUTURE_MARGIN_DAYS, JSON_FIELDS, UNIX_TIME_FORMATS
from resources.identifiers import FILLERS, NORMALISERS, IdentifierNormaliser
from resources.quality import start_importing_great_expectations
from resources.sql import Scratch, Sql
from resources.tables import ACTIVITY_TABLES
from resources.warehouse import sql_literal, utc_now

GROUP = "cleaned_records"
# Bump when a cleaning rule or the cleaned tables change.
CODE_VERSION = "21"
PERSON_RECORDS = dg.AssetKey(["clean", "person_records"])
# The Great Expectations suite on the person records (cdp_assets/clean/checks.py).
EXPECTATIONS_SUITE = dg.AssetCheckKey(PERSON_RECORDS, "great_expectations_suite")
EVENTS = dg.AssetKey(["clean", "events"])
TRANSACTIONS = dg.AssetKey(["clean", "transactions"])


def activity_assets(config: CDPConfig) -> list[dg.AssetKey]:
    """The cleaned activity tables this configuration has (events, transactions): a stage reading activity
    depends on those, and only those, that some source feeds."""
    return [key for role, key in (("events", EVENTS), ("transactions", TRANSACTIONS)) if config.sources_with_role(role)]


ROW_ACCOUNTING_CHECK = "rows_accounted_for"

# --------------------------------------------------------------------------- SQL building blocks


def path_label(spec: FieldSpec | None) -> str | None:
    """How a field is named in quarantine: the source's own column or path."""
    if spec is None:
        return None
    return spec.value if spec.path is None else " | ".join(spec.path)


# A timestamp that says which zone it is in: a time followed by Z, an offset (+02:00, -0500, +02) or a
# zone's name (UTC, Europe/Berlin), not by AM or PM.
_ZONED = r"(?i)[0-9]:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*(z|[+-][0-9]{2}(:?[0-9]{2})?|(?:[a-z_]+/)*[a-z_]{3,})\s*$"


def timestamp_sql(expr: str, formats: Sequence[str] | None, zone: str = "UTC") -> str:
    """Parse a timestamp to UTC: the declared formats first, then ISO 8601 with or without an offset. A
    timestamp without an offset or zone is a wall-clock time in `zone` (the source's `timezone`). A Unix
    time format (`UNIX_TIME_FORMATS`: seconds or milliseconds since 1970 UTC, as many APIs give times) is
    read as that instant, whatever the zone."""
    unix = [f for f in formats or [] if f in UNIX_TIME_FORMATS]
    formats = [f for f in formats or [] if f not in UNIX_TIME_FORMATS]
    iso = f"try_cast({expr} as timestamptz)"
    if zone != "UTC":
        wall_clock = f"timezone({sql_literal(zone)}, try_cast({expr} as timestamp))"
        iso = f"(case when regexp_matches({expr}, {sql_literal(_ZONED)}) then {iso} else {wall_clock} end)"
    if formats and zone == "UTC":
        fmts = "[" + ", ".join(sql_literal(f) for f in formats) + "]"
        iso = f"coalesce(try_strptime({expr}, {fmts})::timestamptz, {iso})"
    elif formats:
        parsed = [
            f"try_strptime({expr}, {sql_literal(f)})::timestamptz"
            if "%z" in f or "%Z" in f
            else f"timezone({sql_literal(zone)}, try_strptime({expr}, {sql_literal(f)}))"
            for f in formats
        ]
        iso = f"coalesce({', '.join(parsed)}, {iso})"
    if unix:
        # Milliseconds are whole in both units' range; epoch_ms gives the UTC time, made zoned as UTC.
        counted = [
            f"timezone('UTC', epoch_ms(round(try_cast({expr} as double) * {UNIX_TIME_FORMATS[f]})::bigint))"
            for f in unix
        ]
        number = f"regexp_full_match(trim({expr}), '-?[0-9]+([.][0-9]+)?')"
        iso = f"coalesce(case when {number} then coalesce({', '.join(counted)}) end, {iso})"
    return f"timezone('UTC', {iso})"


def unreadable_timestamp_reason(spec: FieldSpec | None) -> str:
    """Why a timestamp was refused, saying what a readable one looks like for this mapping, so the message
    tells what to fix: the text, or the field's `formats`."""
    iso = "ISO 8601 (2025-06-29T23:30:00, with or without an offset)"
    formats = spec.formats if spec is not None else None
    expected = f"the formats {', '.join(formats)} or {iso}" if formats else f"{iso}; declare the field's formats"
    return f"not a readable timestamp: expected {expected}"


def register_map(
    sql: Sql,
    name: str,
    distinct_sql: str,
    rule: Callable[..., tuple],
    outputs: Sequence[str],
    shortcut: tuple[str, Mapping[str, str]] | None = None,
) -> int:
    """Apply a Python rule to each distinct input of `distinct_sql`; the result is temp table `name`.

    Rules run once per distinct value, not once per row, and the table lets SQL join the results back.
    A `shortcut` (condition, SQL per output, over the input columns) gives the outputs of the inputs it
    holds for in SQL, and the rule runs on the others only."""
    if shortcut is None:
        return sql.map_rows(name, distinct_sql, rule, outputs)
    condition, computed = shortcut
    inputs_table, ruled = f"{name}_inputs", f"{name}_ruled"
    sql.create_table_as(inputs_table, f"select *, {condition} as __decided from ({distinct_sql})", temporary=True)
    columns = [c for c in sql.columns(f"select * from {inputs_table}") if c != "__decided"]
    sql.map_rows(ruled, f"select * exclude (__decided) from {inputs_table} where not __decided", rule, outputs)
    given = ", ".join(f'"{c}"::varchar as "{c}"' for c in columns)
    results = ", ".join(f'({computed[o]})::varchar as "{o}"' for o in outputs)
    sql.create_table_as(
        name,
        f"select * from {ruled} union all select {given}, {results} from {inputs_table} where __decided",
        temporary=True,
    )
    sql.drop_table(ruled)
    sql.drop_table(inputs_table)
    return int(sql.value(f"select count(*) from {name}"))


# --------------------------------------------------------------------------- which raw files to read


# A source's keys cleaning never reads: when its files are expected, how long its rows are kept, how its API is
# polled. They decide what a run costs or when it runs, not what it gives, so changing one (declaring
# `expected_every` on a source) must not clean every row again, nor so recompute every profile.
_NOT_READ_BY_CLEANING = {"expected_every", "retain", "http"}


def cleaning_settings(config: CDPConfig, role: str) -> str:
    """What cleaning a role's rows depends on besides the rows: the rules' version, the role's sources (but
    for the keys in `_NOT_READ_BY_CLEANING`) and the identifier types. Rows cleaned under other settings are
    cleaned again, all of them."""
    sources = [s.model_dump_json(exclude=_NOT_READ_BY_CLEANING) for s in config.sources_with_role(role)]
    text = "\x00".join([CODE_VERSION, *sources, config.identity.model_dump_json(include={"identifier_types"})])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def files_to_clean(
    sql: Sql, scratch: Scratch, role: str, sources: Sequence[SourceConfig], settings: str, full: bool
) -> str | None:
    """The step's table `file_scope(source, file)` of the raw files whose rows this run cleans (new files,
    files loaded again since they were cleaned) or removes (files no longer in the raw tables); None when
    every row is cleaned afresh: asked for, the first run, or other cleaning settings than last time.

    Cleaning is incremental by file: the rows of a file are cleaned once, and kept until the file changes.
    What is decided across files (a record's latest version, identifiers recorded once) is decided again
    only for the records a file in scope touches (see `redecide_records`), and quarantine stamps only for
    the rejects of those files, so a run costs what its files hold and the tables are those a full run
    gives."""
    current = scratch("raw_files")
    stats = [
        f"select {sql_literal(s.name)} as source, _file as file, max(_loaded_at) as loaded_at "
        f"from {ensure_raw_table(sql, s)} group by _file"
        for s in sources
    ] or ["select null::varchar source, null::varchar file, null::timestamp loaded_at where false"]
    sql.create_table_as(current, " union all ".join(stats), temporary=True)
    cleaned = tables.CLEANED_FILES.name
    previous = sql.row(
        f"select count(*), count(*) filter (where settings <> ?) from {cleaned} where role = ?", [settings, role]
    )
    if full or previous is None or previous[0] == 0 or previous[1] > 0:
        return None
    scope = scratch("file_scope")
    sql.create_table_as(
        scope,
        f"""select source, file from {current} c
            where not exists (select 1 from {cleaned} d where d.role = {sql_literal(role)} and d.source = c.source
                              and d.file = c.file and d.loaded_at is not distinct from c.loaded_at)
            union
            select source, file from {cleaned} d
            where d.role = {sql_literal(role)} and not exists (
                select 1 from {current} c where c.source = d.source and c.file = d.file)""",
        temporary=True,
    )
    return scope


def record_cleaned_files(sql: Sql, scratch: Scratch, role: str, settings: str) -> None:
    """Remember the raw files `files_to_clean` found (the step's `raw_files`) as cleaned under `settings`."""
    cleaned = tables.CLEANED_FILES.name
    sql.execute(f"delete from {cleaned} where role = ?", [role])
    sql.execute(
        f"insert into {cleaned} select ?, source, file, loaded_at, ? from {scratch('raw_files')}", [role, settings]
    )


def raw_rows(sql: Sql, source: SourceConfig, scope: str | None) -> str:
    """The source's raw table, or only its rows of the files in `scope` (see files_to_clean)."""
    table = ensure_raw_table(sql, source)
    if scope is None:
        return table
    return (
        f"(select * from {table} where _file in (select file from {scope} where source = {sql_literal(source.name)}))"
    )


def raw_rows_at(sql: Sql, source: SourceConfig, rows: str) -> str:
    """The source's raw rows at the places `rows(source, file, row_number)` names: kept rows read again."""
    return f"""(select r.* from {ensure_raw_table(sql, source)} r semi join {rows} k
                on k.source = {sql_literal(source.name)} and k.file = r._file and k.row_number = r._row_number)"""


def replace_files(sql: Sql, table: tables.Table, select_sql: str, scope: str | None) -> None:
    """`table` rebuilt from `select_sql` (the rows of the files in `scope`): the rows of those files
    replaced and the other files' rows left as they are, or the whole table on a full run."""
    if scope is None:
        table.replace(sql, select_sql)
        return
    # Held before the delete: the new rows may be derived from the rows they replace (quarantine stamps).
    new = f"{table.name.replace('.', '_')}__files_new"
    sql.create_table_as(new, select_sql, temporary=True)
    sql.execute(f"delete from {table.name} t using {scope} f where f.source = t.source and f.file = t.file")
    table.insert(sql, f"select * from {new}")
    sql.drop_table(new)


def redecide_records(
    sql: Sql,
    scratch: Scratch,
    table: tables.Table,
    new_rows: str,
    scope: str | None,
    decide: Callable[[str], str],
) -> None:
    """`table` holding `decide` over every row of each record (source, source_record_id): a decision
    across a record's rows in several files (its latest version, an identifier recorded once).

    On a full run `decide` runs over `new_rows`. Otherwise it runs only for the records touched, those of
    `new_rows` (the rows of the files in `scope`) and those with a row in one of the files: over their
    new rows and their kept rows of the other files; every other record's rows stay as they are. So a
    run costs what its files hold, and leaves the table a full run gives."""
    if scope is None:
        table.replace(sql, decide(new_rows))
        return
    name = table.name.replace(".", "_")
    new, touched, decided = scratch(f"{name}_new"), scratch(f"{name}_touched"), scratch(f"{name}_decided")
    sql.create_table_as(new, new_rows, temporary=True)
    sql.create_table_as(
        touched,
        f"""select source, source_record_id from {new}
            union
            select t.source, t.source_record_id from {table.name} t
            semi join {scope} f on f.source = t.source and f.file = t.file""",
        temporary=True,
    )
    columns = ", ".join(c for c in sql.columns(f"select * from {new}"))
    kept = f"""select {columns} from {table.name} t
               semi join {touched} k on k.source = t.source and k.source_record_id = t.source_record_id
               anti join {scope} f on f.source = t.source and f.file = t.file"""
    sql.create_table_as(decided, decide(f"select * from {new} union all by name {kept}"), temporary=True)
    sql.execute(
        f"""delete from {table.name} t using {touched} k
            where k.source = t.source and k.source_record_id = t.source_record_id"""
    )
    table.insert(sql, f"select * from {decided}")
    for step_table in (f"{name}_new", f"{name}_touched", f"{name}_decided"):
        scratch.drop(step_table)


# --------------------------------------------------------------------------- free text (all roles)

_CONTROL = sql_literal(rules.CONTROL_CHARACTERS)
# Control characters with tabs and line breaks: what a value `guard_text` refuses or changes may hold.
_SUSPECT = sql_literal(r"[\x{00}-\x{1F}\x{7F}-\x{9F}]")


def _reject_field(field: str, labels: str | None, label: str | None) -> tuple[str, str]:
    """How a guard's reject names the field, as the source calls it: the SQL `label` when given, else the
    label of `field` in the field labels table `labels` (see `_field_labels`) found by the join returned."""
    if label:
        return label, ""
    return (
        f"coalesce(l.label, {sql_literal(field)})",
        f"left join {labels} l on l.source = s.source and l.field = {sql_literal(field)}",
    )


def guard_text(
    sql: Sql,
    scratch: Scratch,
    stage: str,
    columns: Sequence[tuple[str, str, str]],
    *,
    labels: str | None = None,
    label: str | None = None,
) -> str:
    """Refuse control characters and over-long values in a staged table's text columns, in SQL; the name
    of the table holding the rejects.

    `stage` is the step's name for the staged table (`scratch(stage)`), which is changed in place.
    `columns` are (column, limit as SQL, scope). A value holding a control character or longer than its
    limit is quarantined: with scope `value` it is set to NULL and the record kept; with scope `row` (a
    record id) the row leaves the stage. Tabs and line breaks in the values kept become spaces. The
    rejects are in the step's table `<stage>_text_rejects`, named by the source's own field: `label` is
    the SQL for it, or it comes from the field labels table `labels` (see `_field_labels`).
    """
    staged, checked, text_rejects = scratch(stage), scratch(f"{stage}_checked"), scratch(f"{stage}_text_rejects")
    problems, checks, kept, suspects = [], [], [], []
    for i, (column, limit, scope) in enumerate(columns):
        value, flag = f's."{column}"', f"__problem_{i}"
        suspects.append(f"strlen({value}) > {limit}")
        problems.append(
            f"case when not __suspect then null when regexp_matches({value}, {_CONTROL}) then "
            f"' contains control character ' || printf('U+%04X', unicode(regexp_extract({value}, {_CONTROL}))) "
            f"when length({value}) > {limit} then ' is longer than ' || {limit} || ' characters (' || "
            f"length({value}) || ')' end as {flag}"
        )
        name, join = _reject_field(column, labels, label)
        checks.append(
            f"""select s.source, s.file, s.row_number, {name} as field, {value} as value,
                       {name} || s.{flag} as reason, {sql_literal(scope)} as scope
                from {checked} s {join} where s.{flag} is not null"""
        )
        examined = f'p."{column}"'
        kept.append(f'"{column}" = case when p.{flag} is null then {tidied_text(examined)} end')
    # Problems and line breaks are rare: one search over a row's values joined (bytes bound the characters
    # from above) picks the rows holding a control character, tab or line break, or a value that may be too
    # long, and only those are examined column by column, in a table of their own. The staged table is
    # changed in place at those rows only: every other row keeps its values as they are.
    values = ", ".join(f's."{c}"' for c, _, _ in columns)
    suspect = f"regexp_matches(concat({values}), {_SUSPECT}) or " + " or ".join(suspects)
    rows_ok = " and ".join(f"p.__problem_{i} is null" for i, c in enumerate(columns) if c[2] == "row") or "true"
    sql.create_table_as(
        checked,
        f"""select s.* exclude (__suspect), {", ".join(problems)}
            from (select s.*, coalesce({suspect}, false) as __suspect from {staged} s) s
            where __suspect""",
        temporary=True,
    )
    sql.create_table_as(text_rejects, " union all ".join(checks), temporary=True)
    if sql.value(f"select count(*) from {checked}"):
        # A staged row is found again by its line and the values examined, which decide all that happens to
        # it (rows alike in them are treated alike): no row id, which Spark's tables lack. The rows a problem
        # takes out go first, while their values are still the ones examined.
        same = " and ".join(
            ["p.source = s.source", "p.file = s.file", "p.row_number = s.row_number"]
            + [f'p."{c}" is not distinct from s."{c}"' for c, _, _ in columns]
        )
        sql.execute(f"delete from {staged} s using {checked} p where {same} and not ({rows_ok})")
        sql.execute(f"update {staged} s set {', '.join(kept)} from {checked} p where {same}")
    scratch.drop(f"{stage}_checked")
    return text_rejects


def tidied_text(value: str) -> str:
    """SQL for a text value as `guard_text` keeps it: tabs and line breaks made spaces, and trimmed then."""
    breaks = " or ".join(f"contains({value}, chr({c}))" for c in (9, 10, 13))
    spaced = f"regexp_replace({value}, {sql_literal(rules.LINE_BREAKS)}, ' ', 'g')"
    return f"case when {breaks} then nullif(trim({spaced}), '') else {value} end"


def text_columns(
    fields: Sequence[str], sources: Sequence[SourceConfig], row_fields: Sequence[str] = ()
) -> list[tuple[str, str, str]]:
    """`guard_text` columns for canonical fields: record ids quarantine the row, other fields the value.

    An id a source does not declare is made of file and line, which the source does not control, so
    only declared ids are held to the limit.
    """
    columns = []
    for field in row_fields:
        declared = [s.name for s in sources if getattr(s, field.removeprefix("source_"), None) is not None]
        limit = (
            f"(case when source in ({', '.join(map(sql_literal, declared))}) then {rules.text_limit(field)} "
            "else 2147483647 end)"
            if declared
            else "2147483647"
        )
        columns.append((field, limit, "row"))
    return columns + [(f, str(rules.text_limit(f)), "value") for f in fields]


_TEXT_REJECTS = "select 'clean' as stage, * from {rejects}"


# --------------------------------------------------------------------------- values read as one (all roles)


def shape_column(field: str) -> str:
    """The staged column holding why `field`'s value cannot be read (`shape_sql`), or NULL."""
    return f"__shape__{field}"


def found_column(field: str) -> str:
    """The staged column holding the text that reason is about (`shape_sql`'s second part)."""
    return f"__found__{field}"


def shape_columns(source: SourceConfig, field: str, spec: FieldSpec | None, extracted: str | None = None) -> str:
    """The staged columns `guard_shapes` reads for a field, from the raw row's `__types` (`types_sql`)."""
    # A consent (staged as `consent__<purpose>`) is the one field JSON's true and false are values of.
    kinds = {"one_value": field not in JSON_FIELDS, "true_or_false": field.startswith("consent__")}
    reason, found = shape_sql(source, spec, "__types", extracted, **kinds)
    return f"{reason} as {shape_column(field)}, {found} as {found_column(field)}"


def guard_shapes(
    sql: Sql,
    scratch: Scratch,
    stage: str,
    columns: Sequence[tuple[str, str, str]],
    *,
    labels: str | None = None,
    label: str | None = None,
) -> str:
    """Refuse the values a source's mapping cannot read (a list or an object where a field takes one value, a
    path through a value that is not an object), in a staged table, before any rule sees them; the name of
    the table holding the rejects.

    `stage` is the step's name for the staged table (`scratch(stage)`), which is changed in place. `columns`
    are (field, column, scope): the staged table holds the field's value in `column`, why it cannot be read
    in `shape_column(field)` and what was found in `found_column(field)`. With scope `value` the value is set
    to NULL and the record kept; with scope `row` the row leaves the stage. The rejects, named by the
    source's own field (`label` is the SQL for it, or it comes from the field labels table `labels`), are in
    the step's table `<stage>_shape_rejects`, with the columns `guard_text`'s rejects have.
    """
    staged, refused, rejects = scratch(stage), scratch(f"{stage}_refused"), scratch(f"{stage}_shape_rejects")
    # The rows holding such a value are few: found in one pass, and only they are examined field by field.
    flags = {field: f"s.{shape_column(field)}" for field, _, _ in columns}
    sql.create_table_as(
        refused,
        f"select * from {staged} s where {' or '.join(f'{flag} is not null' for flag in flags.values())}",
        temporary=True,
    )
    checks = []
    for field, _, scope in columns:
        name, join = _reject_field(field, labels, label)
        checks.append(
            f"""select s.source, s.file, s.row_number, {name} as field, s.{found_column(field)} as value,
                       {flags[field]} as reason, {sql_literal(scope)} as scope
                from {refused} s {join} where {flags[field]} is not null"""
        )
    sql.create_table_as(rejects, " union all ".join(checks), temporary=True)
    if sql.value(f"select count(*) from {refused}"):
        by_row = [f"{shape_column(field)} is not null" for field, _, scope in columns if scope == "row"]
        if by_row:
            sql.execute(f"delete from {staged} where {' or '.join(by_row)}")
        by_value = [(field, column) for field, column, scope in columns if scope == "value"]
        if by_value:
            nulled = ", ".join(f'"{c}" = case when {shape_column(f)} is null then "{c}" end' for f, c in by_value)
            found = " or ".join(f"{shape_column(f)} is not null" for f, _ in by_value)
            sql.execute(f"update {staged} set {nulled} where {found}")
    scratch.drop(f"{stage}_refused")
    return rejects


# --------------------------------------------------------------------------- identifiers (all roles)


def stage_identifiers(
    sql: Sql,
    scratch: Scratch,
    sources: Sequence[SourceConfig],
    config: CDPConfig,
    scope: str | None = None,
    rows: str | None = None,
) -> tuple[str, str]:
    """The step's table `identifier_stage`: one row per (record row, identifier) with the raw value, read as
    one value and its text guarded like every other field's, of the raw rows of the files in `scope` (all,
    if None), or of the raw rows `rows(source, file, row_number)` names; the names of that table and of its
    rejects."""
    selects = []
    for source in sources:
        # One row per identifier of each raw row, from one parse of the row's JSON.
        items = []
        for ident in source.identifiers:
            kind = config.identity.type_config(ident.type).normalize
            spec = FieldSpec(path=[ident.path])
            expr = value_sql(source, spec, "__values")
            shape, found = shape_sql(source, spec, "__types", "__values")
            # A Segment group call's traits describe the account (its e-mail is the company's): linking
            # people by them would merge everyone in the account.
            if source.format == "segment" and ident.path.startswith("traits."):
                expr, shape, found = (
                    f"case when (record ->> '$.type') is distinct from 'group' then {e} end"
                    for e in (expr, shape, found)
                )
            items.append(
                f"{{'id_type': {sql_literal(ident.type)}, 'kind': {sql_literal(kind)}, "
                f"'field': {sql_literal(ident.path)}, 'raw': {expr}, 'shape': {shape}, 'found': {found}}}"
            )
        read = raw_rows(sql, source, scope) if rows is None else raw_rows_at(sql, source, rows)
        # A number without a country code is read in the record's own country, as its cleaned field is
        # (clean_person_records), and in the source's default_country only when the record names none.
        country = source.fields.get("country")
        raw_country = value_sql(source, country, "__values") if country else "null::varchar"
        if items:
            selects.append(
                f"""select source, file, row_number, i.id_type, i.kind, i.field, i.raw, raw_country,
                    default_country as region, i.shape as {shape_column("raw")},
                    i.found as {found_column("raw")} from (
                    select {sql_literal(source.name)} as source, _file as file, _row_number as row_number,
                        {sql_literal(source.default_country)} as default_country, {raw_country} as raw_country,
                        unnest([{", ".join(items)}]) as i
                    from (select *, {extracted_sql(source)} as __values, {types_sql(source)} as __types
                          from {read}))"""
            )
    if not selects:
        selects = [
            "select null::varchar source, null::varchar file, null::bigint row_number, null::varchar id_type, "
            "null::varchar kind, null::varchar field, null::varchar raw, null::varchar raw_country, "
            f"null::varchar region, null::varchar {shape_column('raw')}, null::varchar {found_column('raw')} "
            "where false"
        ]
    identifiers = scratch("identifier_stage")
    sql.create_table_as(identifiers, " union all ".join(selects), temporary=True)
    if sql.value(f"select count(*) from (select 1 from {identifiers} where raw_country is not null limit 1)"):
        country_map = scratch("identifier_country_map")
        register_map(
            sql,
            country_map,
            f"select distinct raw_country as raw from {identifiers} where raw_country is not null",
            rules.clean_country,
            ["country", "reason"],
        )
        # Only the rows of records in another country than their source's default are written.
        sql.execute(
            f"""update {identifiers} i set region = c.country from {country_map} c
                where c.raw = i.raw_country and c.country is not null and c.country <> i.region"""
        )
    # Each normaliser's values have its canonical field's limit (an e-mail's, a phone's), ids the identifiers'.
    limits = " ".join(f"when '{n.name}' then {rules.text_limit(n.text_limit_field)}" for n in NORMALISERS.values())
    limit = f"case kind {limits} else {rules.text_limit('identifier')} end"
    shape_rejects = guard_shapes(sql, scratch, "identifier_stage", [("raw", "raw", "value")], label="s.field")
    text_rejects = guard_text(sql, scratch, "identifier_stage", [("raw", limit, "value")], label="s.field")
    sql.execute(f"delete from {identifiers} where raw is null")
    rejects = scratch("identifier_stage_rejects")
    sql.create_table_as(
        rejects, f"select * from {shape_rejects} union all select * from {text_rejects}", temporary=True
    )
    return identifiers, rejects


def _mapped_normalisers() -> list[IdentifierNormaliser]:
    """The normalisers whose rule cleaning applies, each into its own map; the others' values (ids) are
    kept trimmed as written."""
    return [n for n in NORMALISERS.values() if not n.kept_as_written]


def build_identifier_maps(
    sql: Sql, scratch: Scratch, identifiers: str, person_stage: str | None = None
) -> dict[str, str]:
    """The step's table `<normaliser>_map(raw[, region], <the rule's outputs>)` for each normaliser cleaning
    applies a rule for (`email_map(raw, email, match_key, reason)`, `phone_map(raw, region, phone, reason)`),
    by normaliser.

    Its inputs are the distinct values of that kind in the staged identifiers `identifiers` and, for a
    contact normaliser, the person records' own field of the same name in `person_stage` (read in the
    record's country `cc`): one cleaning of each distinct value serves both the fields and the identifiers."""
    maps = {}
    for n in _mapped_normalisers():
        inputs = ", ".join(n.input_columns)
        values = f"select {inputs} from {identifiers} where kind = {sql_literal(n.name)}"
        if n.contact and person_stage is not None:
            # One aggregate over both: the record's own field and its identifier mostly hold the same value.
            own = f"{n.name} as raw" + (", cc as region" if n.reads_region else "")
            values = f"select {own} from {person_stage} where {n.name} is not null union all {values}"
        distinct = f"select distinct {inputs} from ({values})"
        maps[n.name] = scratch(f"{n.name}_map")
        shortcut = n.sql_shortcut(*n.input_columns) if n.sql_shortcut else None
        register_map(sql, maps[n.name], distinct, n.rule, n.outputs, shortcut)
    return maps


def _map_join(n: IdentifierNormaliser, value: str, region: str) -> str:
    """How a raw `value` (of a record in `region`) finds its row `m` of the normaliser's map."""
    return f"m.raw = {value}" + (f" and m.region = {region}" if n.reads_region else "")


def _identifier_maps() -> dict[str, tuple[str, str]]:
    """Where each mapped normaliser's cleaned values are in its map (see build_identifier_maps): the column
    holding the value identity compares (its match key), and how an identifier row `i` finds its row."""
    return {n.name: (n.key, _map_join(n, "i.raw", "i.region")) for n in _mapped_normalisers()}


def _identifier_joins(maps: Mapping[str, str]) -> str:
    """The joins from identifier rows `i` to each normaliser's map (`maps`: normaliser -> table)."""
    return "\n".join(
        f"left join {maps[kind]} m_{kind} on i.kind = '{kind}' and {join.replace('m.', f'm_{kind}.')}"
        for kind, (_, join) in _identifier_maps().items()
    )


def _identifier_reason() -> str:
    reasons = [f"m_{kind}.reason" for kind in _identifier_maps()]
    return f"coalesce({', '.join(reasons)})" if reasons else "null::varchar"


def write_identifiers(
    sql: Sql,
    scratch: Scratch,
    role: str,
    accepted_rows: str,
    identifiers: str,
    maps: Mapping[str, str],
    scope: str | None = None,
) -> None:
    """`clean.<role>_identifiers`: normalised identifiers of accepted rows, each value of a record once,
    from its first row by file and line.

    `identifiers` is the staged identifier table (see `stage_identifiers`), `accepted_rows` the rows it
    belongs to, `maps` the normalisers' maps. With a `scope` (files_to_clean) only the records touched
    are decided again (see redecide_records); a record whose recorded row is in a file of the scope must
    have its rows of the other files staged too (see `rows_to_restage`), as the table holds first rows only."""
    values = " ".join(f"when '{kind}' then m_{kind}.{column}" for kind, (column, _) in _identifier_maps().items())
    table = tables.IDENTIFIERS[role]
    columns = "source, source_record_id, id_type, id_value, file, row_number"
    normalised = f"""
        select {columns} from (
            select a.source, a.source_record_id, i.id_type, i.file, i.row_number,
                case i.kind {values} else nullif(trim(i.raw), '') end as id_value
            from {identifiers} i
            join ({accepted_rows}) a using (source, file, row_number)
            {_identifier_joins(maps)}
        ) where id_value is not null"""
    redecide_records(
        sql,
        scratch,
        table,
        normalised,
        scope,
        # Each value's first row, by a hash aggregate rather than a sort of every row.
        lambda rows: (
            f"""select source, source_record_id, id_type, id_value, first.file, first.row_number
                         from (select source, source_record_id, id_type, id_value,
                                      min({{'file': file, 'row_number': row_number}}) as first
                               from ({rows}) group by source, source_record_id, id_type, id_value)"""
        ),
    )


def rows_to_restage(sql: Sql, scratch: Scratch, role: str, accepted: str, scope: str | None) -> str | None:
    """The step's table `restage(source, file, row_number, source_record_id)`: the accepted rows (of table
    `accepted`) in files outside `scope` of the records with an identifier recorded from a file in it.

    The identifiers table keeps a value's first row only: when that row's file changes or goes, a later
    row of another file may hold the value first, and only its raw row says so. None when no record is
    in that case (a run of new files only), or on a full run."""
    if scope is None:
        return None
    restage = scratch("restage")
    in_scope = f"semi join {scope} f on f.source = t.source and f.file = t.file"
    sql.create_table_as(
        restage,
        f"""select t.source, t.file, t.row_number, t.source_record_id from {accepted} t
            semi join (select source, source_record_id from {tables.IDENTIFIERS[role].name} t {in_scope}) k
                on k.source = t.source and k.source_record_id = t.source_record_id
            anti join {scope} f on f.source = t.source and f.file = t.file""",
        temporary=True,
    )
    return restage if sql.value(f"select count(*) from {restage}") else None


def identifier_rows(
    sql: Sql,
    scratch: Scratch,
    sources: Sequence[SourceConfig],
    config: CDPConfig,
    role: str,
    accepted: str,
    scope: str | None,
) -> tuple[str, str, str, str]:
    """The identifiers a run cleans: (those staged from the files in `scope`, whose rejects it quarantines;
    those and the identifiers of the rows `rows_to_restage` finds, which it records; the text rejects;
    the accepted rows read again, as a select of (source, file, row_number, source_record_id))."""
    staged, text_rejects = stage_identifiers(sql, scratch, sources, config, scope)
    restage = rows_to_restage(sql, scratch, role, accepted, scope)
    if restage is None:
        none = "select null::varchar source, null::varchar file, null::bigint row_number"
        return staged, staged, text_rejects, f"{none}, null::varchar source_record_id where false"
    every = scratch("identifier_rows")
    with sql.scratch(f"restage_{role}") as again:
        kept, _ = stage_identifiers(sql, again, sources, config, rows=restage)
        sql.create_table_as(every, f"select * from {staged} union all by name select * from {kept}", temporary=True)
    return staged, every, text_rejects, f"select * from {restage}"


def _identifier_rejects(identifiers: str, maps: Mapping[str, str]) -> str:
    """The identifier values their normaliser refused, as quarantine rows."""
    return f"""
select 'clean' as stage, i.source, i.file, i.row_number, i.field, i.raw as value,
       {_identifier_reason()} as reason, 'value' as scope
from {identifiers} i
{_identifier_joins(maps)}
where {_identifier_reason()} is not null
"""


def write_quarantine(sql: Sql, role: str, rejects_sql: Sequence[str], scope: str | None = None) -> None:
    """`clean.<role>_quarantine`, rebuilt each run; the same value refused twice is recorded once.

    A reject already recorded keeps its first `quarantined_at`, so a re-run over the same files does not
    make old rejects look new; a reject from a file loaded again since (a changed file) is stamped now.
    With a `scope` (files_to_clean), `rejects_sql` are the rejects of its files: they replace those files'
    rejects, stamped from them, and the other files' rejects are kept as they are.
    """
    table = tables.CLEAN_QUARANTINE[role]
    reject = {column: kind for column, kind in table.columns.items() if column != "quarantined_at"}
    body = " union all ".join(f"select {', '.join(reject)} from ({q})" for q in rejects_sql)
    with sql.scratch(f"quarantine_{role}") as scratch:
        now = scratch("now")
        sql.create_table_as(
            now,
            f"""
            select distinct {", ".join(f"{column}::{kind} as {column}" for column, kind in reject.items())}
            from ({body})
            """,
            temporary=True,
        )
        recorded = f"clean.{role}_quarantine"
        if scope is not None:
            recorded = f"(select * from {recorded} t semi join {scope} f on f.source = t.source and f.file = t.file)"
        replace_files(
            sql,
            table,
            f"""
            select n.*, coalesce(
                       case when f.loaded_at is null or o.first_at >= f.loaded_at then o.first_at end,
                       {sql_literal(utc_now().isoformat())}::timestamp) as quarantined_at
            from {now} n
            left join (select stage, source, file, row_number, field, value, reason, scope,
                              min(quarantined_at) as first_at
                       from {recorded} group by all) o
              on o.stage = n.stage and o.source = n.source and o.file is not distinct from n.file
             and o.row_number is not distinct from n.row_number and o.field is not distinct from n.field
             and o.value is not distinct from n.value and o.reason is not distinct from n.reason
             and o.scope = n.scope
            left join meta.loaded_files f on f.source = n.source and f.file = n.file
            """,
            scope,
        )


# --------------------------------------------------------------------------- person records


# The staged column of a person attribute of the sources' own (`attributes` in cdp.yaml).
ATTRIBUTE_PREFIX = "attr__"


def _stage_person_rows(
    sql: Sql,
    stage: str,
    sources: Sequence[SourceConfig],
    purposes: list[str],
    attributes: list[str],
    scope: str | None,
) -> None:
    """Temp table `stage`: raw text of every canonical field, consent statement and attribute, one row per raw
    row (of the files in `scope`, if given)."""
    selects = []
    for source in sources:
        columns = [f"{value_sql(source, source.fields.get(f), '__values')} as {f}" for f in PERSON_FIELDS]
        consents = [f"{value_sql(source, source.consent.get(p), '__values')} as consent__{p}" for p in purposes]
        own = [
            f'{value_sql(source, source.attributes.get(a), "__values")} as "{ATTRIBUTE_PREFIX}{a}"' for a in attributes
        ]
        specs = {
            "source_record_id": source.record_id,
            **{f: source.fields.get(f) for f in PERSON_FIELDS},
            **{f"consent__{p}": source.consent.get(p) for p in purposes},
            **{f"{ATTRIBUTE_PREFIX}{a}": source.attributes.get(a) for a in attributes},
        }
        shapes = [shape_columns(source, f, spec, "__values") for f, spec in specs.items()]
        updated = source.fields.get("updated_at")
        selects.append(
            f"select *, {timestamp_sql('updated_at', updated.formats if updated else None, source.timezone)} "
            "as updated_ts "
            f"from (select {sql_literal(source.name)} as source, _file as file, _row_number as row_number, "
            f"_loaded_at as loaded_at, {source.trust}::integer as trust, "
            f"{record_id_sql(source, '__values')} as source_record_id, {', '.join(columns + consents + own + shapes)}, "
            f"{sql_literal(source.default_country)} as default_country "
            f"from (select *, {extracted_sql(source)} as __values, {types_sql(source)} as __types "
            f"from {raw_rows(sql, source, scope)}))"
        )
    sql.create_table_as(stage, " union all by name ".join(selects), temporary=True)


def _field_labels(sql: Sql, labels: str, sources: Sequence[SourceConfig], purposes: list[str]) -> None:
    """Temp table `labels(source, field, label)`: the source's own name for each canonical field, so a
    reject names the column the source's owner knows."""
    rows = []
    for s in sources:
        rows.append((s.name, "source_record_id", path_label(s.record_id) or "(file and line)"))
        rows.append((s.name, "event_id", path_label(s.event_id) or "(file and line)"))
        rows += [(s.name, f, path_label(spec)) for f, spec in s.fields.items()]
        rows += [(s.name, f"consent__{p}", path_label(spec)) for p, spec in s.consent.items()]
        rows += [(s.name, f"{ATTRIBUTE_PREFIX}{a}", path_label(spec)) for a, spec in s.attributes.items()]
    frame = pd.DataFrame(rows, columns=["source", "field", "label"])
    with sql.registered(f"{labels}_frame", frame) as registered:
        sql.create_table_as(labels, f"select * from {registered}", temporary=True)


# Fields kept as text, held to the text limits; dates, timestamps and amounts are parsed strictly, so
# their own rules refuse junk.
PERSON_TEXT_FIELDS = tuple(f for f in PERSON_FIELDS if tables.PERSON_RECORDS.columns[f] == "VARCHAR")
ACTIVITY_TEXT_FIELDS = tuple(
    f for f in EVENT_FIELDS if any(t.columns.get(f) == "VARCHAR" for t in ACTIVITY_TABLES.values())
)

# Every rule that can turn a value into NULL, with how its map joins the staged row: a value a rule
# refuses is quarantined with the rule's reason, never dropped silently. The contact fields (e-mail,
# phone) are read from their normalisers' maps (see build_identifier_maps).
_PERSON_VALUE_REJECTS = [
    ("full_name", "fullname_map", "m.raw = s.full_name"),
    ("first_name", "name_map", "m.raw = s.first_name"),
    ("middle_name", "name_map", "m.raw = s.middle_name"),
    ("last_name", "name_map", "m.raw = s.last_name"),
    ("city", "city_map", "m.raw = s.city"),
    ("address_line1", "address_map", "m.raw = s.address_line1"),
    ("address_line2", "address_map", "m.raw = s.address_line2"),
    *((n.name, f"{n.name}_map", _map_join(n, f"s.{n.name}", "s.cc")) for n in _mapped_normalisers() if n.contact),
    ("country", "country_map", "m.raw = s.country"),
    ("date_of_birth", "dob_map", "m.raw = s.date_of_birth and m.source = s.source"),
    ("region", "region_map", "m.raw = s.region and m.country is not distinct from s.clean_country"),
    ("postal_code", "postal_map", "m.raw = s.postal_code and m.country is not distinct from s.clean_country"),
]


# A record's latest version: the last updated, then (one update time in several files) the later file name
# and line. What the landing files hold decides, never when they were loaded, so the same files give the
# same profiles whatever order they arrived in.
_LATEST_VERSION = (
    "row_number() over (partition by source, source_record_id "
    "order by updated_at desc nulls last, file desc, row_number desc) = 1"
)


def _mark_older_versions(sql: Sql) -> None:
    """Set `is_latest` false on every person record row but its record's latest version, in a table whose
    rows are all marked latest: only the records with several rows are sorted."""
    records = tables.PERSON_RECORDS.name
    sql.execute(
        f"""update {records} t set is_latest = false
            from (select p.source, p.file, p.row_number, {_LATEST_VERSION} as latest from {records} p
                  semi join (select source, source_record_id from {records} group by all having count(*) > 1) d
                    on d.source = p.source and d.source_record_id = p.source_record_id) o
            where not o.latest and t.source = o.source and t.file = o.file and t.row_number = o.row_number"""
    )


def clean_person_records(sql: Sql, config: CDPConfig, full: bool = False) -> dict[str, int]:
    """Bring `clean.person_records`, `clean.consent_statements`, person identifiers and quarantine up to
    the raw tables: the rows of new and changed files cleaned, those of files gone removed, the rest kept
    (files_to_clean); every row cleaned afresh when `full` or the cleaning settings changed.

    The staged rows and the rules' maps are the step's own tables, dropped when it ends."""
    sources = config.sources_with_role("person")
    purposes = config.consent_purposes
    attributes = config.person_attributes
    attribute_columns = [f"{ATTRIBUTE_PREFIX}{a}" for a in attributes]
    settings = cleaning_settings(config, "person")
    with sql.scratch("clean_person") as scratch:
        scope = files_to_clean(sql, scratch, "person", sources, settings, full)
        stage, labels = scratch("person_stage"), scratch("field_labels")
        _stage_person_rows(sql, stage, sources, purposes, attributes, scope)
        read_now = int(sql.value(f"select count(*) from {stage}"))
        _field_labels(sql, labels, sources, purposes)
        shape_rejects = guard_shapes(
            sql,
            scratch,
            "person_stage",
            [("source_record_id", "source_record_id", "row")]
            + [(f, f, "value") for f in [*PERSON_FIELDS, *(f"consent__{p}" for p in purposes), *attribute_columns]],
            labels=labels,
        )
        text_rejects = guard_text(
            sql,
            scratch,
            "person_stage",
            text_columns([*PERSON_TEXT_FIELDS, *attribute_columns], sources, ["source_record_id"]),
            labels=labels,
        )

        country_map = scratch("country_map")
        register_map(
            sql,
            country_map,
            f"select distinct country as raw from {stage} where country is not null",
            rules.clean_country,
            ["country", "reason"],
        )
        sql.create_table_as(
            stage,
            f"""select s.*, c.country as clean_country, coalesce(c.country, s.default_country) as cc
               from {stage} s left join {country_map} c on c.raw = s.country""",
            temporary=True,
        )
        identifiers, recorded, identifier_text_rejects, restaged = identifier_rows(
            sql, scratch, sources, config, "person", tables.PERSON_RECORDS.name, scope
        )
        maps = build_identifier_maps(sql, scratch, recorded, stage)
        register_map(
            sql,
            scratch("fullname_map"),
            f"select distinct full_name as raw from {stage} where full_name is not null",
            rules.clean_full_name,
            ["first", "middle", "last", "reason"],
        )
        register_map(
            sql,
            scratch("name_map"),
            "select distinct v as raw from (select unnest([first_name, middle_name, last_name]) as v "
            f"from {stage}) where v is not null",
            rules.clean_name,
            ["name", "reason"],
        )
        register_map(
            sql,
            scratch("city_map"),
            f"select distinct city as raw from {stage} where city is not null",
            rules.clean_city,
            ["name", "reason"],
        )
        formats = {
            s.name: (s.fields["date_of_birth"].formats if "date_of_birth" in s.fields else None) for s in sources
        }
        register_map(
            sql,
            scratch("dob_map"),
            f"select distinct source, date_of_birth as raw from {stage} where date_of_birth is not null",
            lambda source, raw: rules.parse_date_of_birth(raw, formats.get(source)),
            ["dob", "reason"],
        )
        register_map(
            sql,
            scratch("address_map"),
            f"select distinct v as raw from (select unnest([address_line1, address_line2]) as v from {stage}) "
            "where v is not null",
            rules.clean_address_line,
            ["display", "address_key", "reason"],
            rules.address_sql_shortcut("raw"),
        )
        register_map(
            sql,
            scratch("region_map"),
            f"select distinct region as raw, clean_country as country from {stage} where region is not null",
            rules.clean_region,
            ["region", "reason"],
        )
        register_map(
            sql,
            scratch("postal_map"),
            f"select distinct postal_code as raw, clean_country as country from {stage} where postal_code is not null",
            rules.clean_postal_code,
            ["postal_code", "reason"],
        )
        consent_map = _consent_map(sql, scratch, stage, purposes)

        # A field no source maps is null in every staged row: its map is not joined (and finds no reject).
        mapped = {f for s in sources for f in s.fields}

        def map_for(field: str, table: str) -> str:
            return table if field in mapped else f"(select * from {table} where false)"

        # On a full run every row is written as latest and the records with several rows decided after (a
        # sort of the key columns of those few, not of every row); otherwise the records this run's files
        # touch are decided again (redecide_records).
        cleaned_rows = f"""
            select s.source, s.source_record_id, s.file, s.row_number, s.loaded_at, s.trust,
                nullif(concat_ws(' ', coalesce(n1.name, fn.first), coalesce(n2.name, fn.middle),
                                 coalesce(n3.name, fn.last)), '') as full_name,
                coalesce(n1.name, fn.first) as first_name,
                coalesce(n2.name, fn.middle) as middle_name,
                coalesce(n3.name, fn.last) as last_name,
                em.email, em.match_key as email_match_key, pm.phone,
                a1.display as address_line1, a2.display as address_line2,
                nullif(concat_ws(' ', a1.address_key, a2.address_key), '') as address_key,
                n4.name as city, rm.region, pc.postal_code, s.clean_country as country,
                dm.dob::date as date_of_birth, s.updated_ts as updated_at
            from {stage} s
            left join {map_for("full_name", scratch("fullname_map"))} fn on fn.raw = s.full_name
            left join {map_for("first_name", scratch("name_map"))} n1 on n1.raw = s.first_name
            left join {map_for("middle_name", scratch("name_map"))} n2 on n2.raw = s.middle_name
            left join {map_for("last_name", scratch("name_map"))} n3 on n3.raw = s.last_name
            left join {map_for("city", scratch("city_map"))} n4 on n4.raw = s.city
            left join {map_for("email", maps["email"])} em on em.raw = s.email
            left join {map_for("phone", maps["phone"])} pm on pm.raw = s.phone and pm.region = s.cc
            left join {map_for("address_line1", scratch("address_map"))} a1 on a1.raw = s.address_line1
            left join {map_for("address_line2", scratch("address_map"))} a2 on a2.raw = s.address_line2
            left join {map_for("region", scratch("region_map"))} rm
                   on rm.raw = s.region and rm.country is not distinct from s.clean_country
            left join {map_for("postal_code", scratch("postal_map"))} pc
                   on pc.raw = s.postal_code and pc.country is not distinct from s.clean_country
            left join {map_for("date_of_birth", scratch("dob_map"))} dm
                   on dm.raw = s.date_of_birth and dm.source = s.source
            where s.source_record_id is not null
            """
        if scope is None:
            tables.PERSON_RECORDS.replace(sql, f"select *, true as is_latest from ({cleaned_rows})")
            _mark_older_versions(sql)
        else:
            redecide_records(
                sql,
                scratch,
                tables.PERSON_RECORDS,
                cleaned_rows,
                scope,
                lambda rows: f"select *, {_LATEST_VERSION} as is_latest from ({rows})",
            )
        consent_selects = [
            f"select source, source_record_id, '{p}' as purpose, consent__{p} as raw, "
            f"updated_ts as stated_at, file, row_number from {stage} "
            f"where consent__{p} is not null and source_record_id is not null"
            for p in purposes
        ]
        replace_files(
            sql,
            tables.CONSENT_STATEMENTS,
            "select c.source, c.source_record_id, c.purpose, m.granted::boolean as granted, c.stated_at, c.file, "
            "c.row_number from ("
            + (
                " union all ".join(consent_selects)
                or "select null::varchar source, null::varchar source_record_id, null::varchar purpose, "
                "null::varchar raw, null::timestamp stated_at, null::varchar file, null::bigint row_number where false"
            )
            + f") c join {consent_map} m on m.raw = c.raw where m.granted is not null",
            scope,
        )
        # Each attribute value as the source wrote it, spaces collapsed; a filler (n/a, unknown, -) is no value.
        fillers = ", ".join(sql_literal(f) for f in sorted(FILLERS))
        attribute_selects = [
            f"""select source, source_record_id, {sql_literal(a)} as attribute,
                       trim(regexp_replace("{ATTRIBUTE_PREFIX}{a}", ' +', ' ', 'g')) as value, file, row_number
                from {stage} where "{ATTRIBUTE_PREFIX}{a}" is not null and source_record_id is not null"""
            for a in attributes
        ]
        replace_files(
            sql,
            tables.PERSON_ATTRIBUTES,
            "select source, source_record_id, attribute, value, file, row_number from ("
            + (
                " union all ".join(attribute_selects)
                or "select null::varchar source, null::varchar source_record_id, null::varchar attribute, "
                "null::varchar as value, null::varchar file, null::bigint row_number where false"
            )
            + f") a where value <> '' and lower(value) not in ({fillers})",
            scope,
        )
        _record_consent_history(sql, tables.CONSENT_STATEMENTS, scope)
        write_identifiers(
            sql,
            scratch,
            "person",
            f"select source, file, row_number, source_record_id from {stage} where source_record_id is not null "
            f"union all {restaged}",
            recorded,
            maps,
            scope,
        )

        rejects = [
            f"""select 'clean' as stage, s.source, s.file, s.row_number, coalesce(l.label, '{field}') as field,
                       s.{field} as value, m.reason, 'value' as scope
                from {stage} s join {scratch(table)} m on {on}
                left join {labels} l on l.source = s.source and l.field = '{field}'
                where m.reason is not null"""
            for field, table, on in _PERSON_VALUE_REJECTS
            if field in mapped
        ]
        rejects += [
            f"""select 'clean' as stage, s.source, s.file, s.row_number, l.label as field, s.consent__{p} as value,
                       m.reason, 'value' as scope
                from {stage} s join {consent_map} m on m.raw = s.consent__{p}
                left join {labels} l on l.source = s.source and l.field = 'consent__{p}'
                where m.reason is not null"""
            for p in purposes
        ]
        rejects.append(
            f"""select 'clean' as stage, s.source, s.file, s.row_number, l.label as field, null as value,
                      'no record id: ' || coalesce(l.label, '(file and line)') || ' is empty' as reason, 'row' as scope
               from {stage} s left join {labels} l on l.source = s.source and l.field = 'source_record_id'
               where s.source_record_id is null"""
        )
        updated_reasons = " ".join(
            f"when {sql_literal(src.name)} then "
            + sql_literal(unreadable_timestamp_reason(src.fields.get("updated_at")))
            for src in sources
        )
        rejects.append(
            f"""select 'clean' as stage, s.source, s.file, s.row_number, l.label as field, s.updated_at as value,
                      case s.source {updated_reasons} end as reason, 'value' as scope
               from {stage} s left join {labels} l on l.source = s.source and l.field = 'updated_at'
               where s.updated_at is not null and s.updated_ts is null"""
        )
        rejects += [
            _identifier_rejects(identifiers, maps),
            _TEXT_REJECTS.format(rejects=shape_rejects),
            _TEXT_REJECTS.format(rejects=text_rejects),
            _TEXT_REJECTS.format(rejects=identifier_text_rejects),
        ]
        write_quarantine(sql, "person", rejects, scope)
        record_cleaned_files(sql, scratch, "person", settings)
    return {**_role_counts(sql, "person", "clean.person_records"), "raw_rows_cleaned_now": read_now}


def _role_counts(sql: Sql, role: str, table: str) -> dict[str, int]:
    """Cleaned rows, rows quarantined whole and values quarantined: what the row accounting check adds up."""
    cleaned = sql.value(f"select count(*) from {table}")
    row_rejects = sql.value(
        f"select count(*) from (select distinct source, file, row_number from clean.{role}_quarantine "
        "where scope = 'row')"
    )
    value_rejects = sql.value(f"select count(*) from clean.{role}_quarantine where scope = 'value'")
    return {
        "cleaned": int(cleaned),
        "rows_quarantined": int(row_rejects),
        "values_quarantined": int(value_rejects),
    }


def raw_row_count(sql: Sql, sources: Sequence[SourceConfig]) -> int:
    """Rows in the sources' raw tables: what cleaned plus quarantined rows must add up to."""
    return sum(raw_row_counts(sql, sources).values())


def raw_row_counts(sql: Sql, sources: Sequence[SourceConfig]) -> dict[str, int]:
    """Rows in each source's raw table, by source name."""
    return {s.name: int(sql.value(f"select count(*) from {ensure_raw_table(sql, s)}")) for s in sources}


# --------------------------------------------------------------------------- events and transactions


# The activity fields that take one value, with their staged column and what a value that cannot be read
# as one quarantines (guard_shapes): without its id, time or amount (an order's) the row is no use.
_ACTIVITY_SHAPES = (
    ("source_record_id", "source_record_id", "row"),
    ("event_id", "event_id", "row"),
    ("occurred_at", "occurred_raw", "row"),
    *((f, f, "value") for f in ACTIVITY_TEXT_FIELDS),
)
_SHAPES = {
    "events": (*_ACTIVITY_SHAPES, *((f, f, "value") for f in JSON_FIELDS)),
    "transactions": (*_ACTIVITY_SHAPES, ("amount", "amount_raw", "row")),
}


def _consent_map(sql: Sql, scratch: Scratch, stage: str, purposes: Sequence[str]) -> str:
    """The step's table `consent_map(raw, granted, reason)`: each distinct statement of the staged consent
    columns read by `rules.parse_consent` once."""
    consent_map = scratch("consent_map")
    register_map(
        sql,
        consent_map,
        "select distinct v as raw from (select unnest(["
        + (", ".join(f"consent__{p}" for p in purposes) or "null::varchar")
        + f"]) as v from {stage}) where v is not null",
        lambda raw: tuple(None if x is None else str(x) for x in rules.parse_consent(raw)),
        ["granted", "reason"],
    )
    return consent_map


def _record_consent_history(sql: Sql, statements: tables.Table, scope: str | None) -> None:
    """Add the statements of `statements` read now (from the files in `scope`, or all) to the history, which
    keeps every statement once, the first time it is read: a statement a later file changes or drops stays."""
    read_now_only = "" if scope is None else f"semi join {scope} f on f.source = s.source and f.file = s.file"
    sql.execute(
        f"""insert into {tables.CONSENT_HISTORY.name}
            select s.*, ? from {statements.name} s {read_now_only}
            where not exists (
                select 1 from {tables.CONSENT_HISTORY.name} h
                where h.source = s.source and h.source_record_id = s.source_record_id and h.purpose = s.purpose
                  and h.granted = s.granted and h.stated_at is not distinct from s.stated_at)""",
        [utc_now()],
    )


def _activity_consent(
    sql: Sql, scratch: Scratch, role: str, stage: str, labels: str, purposes: Sequence[str], scope: str | None
) -> list[str]:
    """Bring the role's consent statements (`tables.ACTIVITY_CONSENT`) and the history up to the staged rows
    that count (not quarantined whole); returns the selects of the statements refused, for the quarantine.

    A statement is dated by when its event or order happened. Of each record's statements of a purpose in one
    file only the latest is kept (a revocation before a grant of the same moment): the profile takes a
    customer's latest statement, and a source stamping the visitor's choice on every event would otherwise
    store it once per event."""
    table = tables.ACTIVITY_CONSENT[role]
    consent_map = _consent_map(sql, scratch, stage, purposes)
    statements = [
        f"""select source, source_record_id, '{p}' as purpose, consent__{p} as raw, occurred_at as stated_at, file,
                   row_number
            from {stage} where consent__{p} is not null and reject_reason is null"""
        for p in purposes
    ]
    replace_files(
        sql,
        table,
        "select c.source, c.source_record_id, c.purpose, m.granted::boolean as granted, c.stated_at, c.file, "
        "c.row_number from ("
        + (
            " union all ".join(statements)
            or "select null::varchar source, null::varchar source_record_id, null::varchar purpose, "
            "null::varchar raw, null::timestamp stated_at, null::varchar file, null::bigint row_number where false"
        )
        + f""") c join {consent_map} m on m.raw = c.raw where m.granted is not null
            qualify row_number() over (partition by c.source, c.file, c.source_record_id, c.purpose
                                       order by c.stated_at desc, m.granted::boolean asc, c.row_number desc) = 1""",
        scope,
    )
    _record_consent_history(sql, table, scope)
    return [
        f"""select 'clean' as stage, s.source, s.file, s.row_number, l.label as field, s.consent__{p} as value,
                   m.reason, 'value' as scope
            from {stage} s join {consent_map} m on m.raw = s.consent__{p}
            left join {labels} l on l.source = s.source and l.field = 'consent__{p}'
            where m.reason is not null and s.reject_reason is null"""
        for p in purposes
    ]


def _activity_select(s: SourceConfig, scope: str | None, sql: Sql, purposes: Sequence[str]) -> str:
    """One activity source's raw rows (of the files in `scope`, if given) as staged columns, with a consent
    statement column for each of the role's `purposes`."""
    f = s.fields
    specs = {"source_record_id": s.record_id, "event_id": s.event_id, **{name: f.get(name) for name in EVENT_FIELDS}}
    specs.update({name: f.get(name) for name in JSON_FIELDS})
    specs.update({f"consent__{p}": s.consent.get(p) for p in purposes})
    shapes = [shape_columns(s, name, spec) for name, spec in specs.items()]
    consents = "".join(f", {value_sql(s, s.consent.get(p))} as consent__{p}" for p in purposes)
    return f"""select {sql_literal(s.name)} as source, _file as file, _row_number as row_number,
                _loaded_at as loaded_at, {record_id_sql(s)} as source_record_id,
                {_event_id_sql(s)} as event_id,
                {value_sql(s, f.get("event"))} as event, {value_sql(s, f.get("currency"))} as currency,
                {value_sql(s, f.get("status"))} as status, {value_sql(s, f.get("group_id"))} as group_id,
                {properties_sql(s)} as properties, {json_sql(s, f.get("context"))} as context,
                {json_sql(s, f.get("traits"))} as traits,
                {value_sql(s, f.get("occurred_at"))} as occurred_raw,
                {timestamp_sql(value_sql(s, f.get("occurred_at")), f["occurred_at"].formats, s.timezone)}
                    as occurred_at,
                {value_sql(s, f.get("amount"))} as amount_raw,
                {rules.amount_text_sql(value_sql(s, f.get("amount")), s.decimal_separator or ".")} as amount_text,
                {sql_literal(s.decimal_separator or "")} as decimal_separator,
                {number_sql(s, f.get("amount"), "__types")} as amount_is_number,
                {sql_literal(path_label(s.record_id) or "(file and line)")} as record_id_label,
                {sql_literal(path_label(s.event_id) or "(file and line)")} as event_id_label,
                {sql_literal(path_label(f.get("occurred_at")))} as occurred_label,
                {sql_literal(unreadable_timestamp_reason(f.get("occurred_at")))} as occurred_reason,
                {sql_literal(path_label(f.get("amount")))} as amount_label, {", ".join(shapes)}{consents}
            from (select *, {types_sql(s)} as __types from {raw_rows(sql, s, scope)})"""


def _event_id_sql(s: SourceConfig) -> str:
    """A raw row's event id: the declared one, else its file and line."""
    event_id = value_sql(s, s.event_id) if s.event_id else "_file || ':' || _row_number::varchar"
    return f"coalesce({event_id}, _file || ':' || _row_number::varchar)"


def _files_sharing_events(sql: Sql, role: str, stage: str, deduped: Sequence[SourceConfig], scope: str) -> str:
    """A select of the kept files (outside `scope`) whose rows' verdicts a staged copy of an event can change,
    so they are read again with it: those holding a copy of an event whose counting copy (the first; for
    transactions the last) a staged copy would displace, and those holding a row quarantined as a copy of an
    event in a file of the scope (read again or gone).

    A staged copy that comes after the counting copy in a kept file (a retry in a later file, the usual
    case for events) changes no kept row: it is quarantined naming that copy, which stands beside the
    staged rows as a reference only (`_counting_copies`), so a retry does not read whole files of history
    again. Copies are ranked by file first and a staged file is never a kept one, so files alone decide.

    Ids are compared as `guard_text` keeps them. A kept row is cleaned (its id is in the role's table) or
    quarantined whole; only the raw rows of the latter are read again, not every kept raw row."""
    names = ", ".join(sql_literal(s.name) for s in deduped)
    later = role == "transactions"
    first_staged = f"""(select source, {tidied_text("event_id")} as event_id, {"max" if later else "min"}(file) as file
                        from {stage} group by 1, 2)"""
    other_files = f"anti join {scope} f on f.source = t.source and f.file = t.file"
    counting = f"({_kept_counting_copies(role, deduped, scope)})"
    displaced = f"""(select c.source, c.event_id from {counting} c join {first_staged} s using (source, event_id)
                     where s.file {">" if later else "<"} c.file)"""
    rejected = f"""(select distinct source, file, row_number from clean.{role}_quarantine t {other_files}
                    where scope = 'row' and source in ({names}))"""
    kept = " union all ".join(
        [
            f"select source, file, event_id from {counting}",
            *(
                f"""select {sql_literal(s.name)} as source, _file as file,
                           {tidied_text(_event_id_sql(s))} as event_id
                    from {raw_rows_at(sql, s, rejected)}"""
                for s in deduped
            ),
        ]
    )
    return f"""select k.source, k.file from ({kept}) k semi join {displaced} n using (source, event_id)
               union
               select q.source, q.file from clean.{role}_quarantine q
               anti join {scope} k on k.source = q.source and k.file = q.file
               join {scope} f on f.source = q.source
                and (starts_with(q.reason, 'duplicate event id: already delivered in ' || f.file || ' line ')
                     or starts_with(q.reason, 'duplicate event id: replaced by ' || f.file || ' line '))"""


def _counting_copies(role: str, stage: str, deduped: Sequence[SourceConfig], scope: str | None) -> str:
    """A select of the counting copies in kept files (outside `scope`) of the staged rows' event ids, in the
    stage's columns that rank copies: once `_files_sharing_events` finds no file to read again, each comes
    before every staged copy of its event (for transactions after), so staged copies are quarantined
    naming it and it stays as it is. Empty on a full clean or without sources keyed by an event id."""
    if scope is None or not deduped:
        return f"select source, file, row_number, event_id from {stage} where false"
    return f"""select * from ({_kept_counting_copies(role, deduped, scope)})
               semi join (select distinct source, event_id from {stage}) s using (source, event_id)"""


def _kept_counting_copies(role: str, deduped: Sequence[SourceConfig], scope: str) -> str:
    """A select of (source, file, row_number, event_id) of the role's cleaned rows of the `deduped` sources in
    files outside `scope`: each is the counting copy of its event among the kept files."""
    names = ", ".join(sql_literal(s.name) for s in deduped)
    return f"""select t.source, t.file, t.row_number, t.event_id from {ACTIVITY_TABLES[role].name} t
               anti join {scope} f on f.source = t.source and f.file = t.file
               where t.source in ({names})"""


# An event or order dated after its file was loaded, beyond a day for clocks that disagree, is a wrong time
# (a device's clock, a placeholder like 2099-01-01), not activity to come: with `as_of: latest_activity` one
# such row would move every profile's as-of time to it. Measured from the load time, so cleaning the
# same raw rows again gives the same verdict.
_FUTURE_MARGIN = f"interval {FUTURE_MARGIN_DAYS} day"
_FUTURE = "later than the file was loaded"
_FUTURE_PREFIX = sql_literal(_FUTURE)
_FUTURE_REASON = (
    f"{sql_literal(_FUTURE + ' (')} || strftime(loaded_at, '%Y-%m-%d %H:%M') || ' UTC): a time in the future'"
)


def clean_activity(sql: Sql, config: CDPConfig, role: str, full: bool = False) -> dict[str, int]:
    """Bring `clean.events` or `clean.transactions`, their identifiers and quarantine up to the raw tables,
    by file as clean_person_records does: only new and changed files read unless `full` or the settings
    changed, with the kept files holding another copy of an event they hold (then which copy counts is
    decided again over every copy).

    The staged rows and the identifier maps are the step's own tables, dropped when it ends."""
    sources = config.sources_with_role(role)
    transactions = role == "transactions"
    # Events with a declared id arrive at least once (SDKs and the collector retry): the first copy, by
    # file and line, is the event and later ones are quarantined naming it. A transaction sent again under
    # its id is its new state (an order refunded): the last row, by file and line, replaces the earlier
    # ones, quarantined naming it. Either way one row per id counts, and an id's rows never link people.
    deduped_sources = [s for s in sources if s.event_id is not None]
    purposes = sorted({p for s in sources for p in s.consent})
    settings = cleaning_settings(config, role)
    with sql.scratch(f"clean_{role}") as scratch:
        scope = files_to_clean(sql, scratch, role, sources, settings, full)
        stage, labels = scratch(f"{role}_stage"), scratch("field_labels")
        staged = " union all by name ".join(_activity_select(s, scope, sql, purposes) for s in sources)
        sql.create_table_as(stage, staged, temporary=True)
        # A staged row can repeat the event id of a row in a kept file, and a kept row be a later copy of an
        # event in a file read again or gone: which copy is the event then depends on those kept files' rows
        # too, so their files are read again with the others, until no kept file shares an event with them.
        while scope is not None and deduped_sources:
            sharing = scratch("files_sharing_events")
            sql.create_table_as(
                sharing, _files_sharing_events(sql, role, stage, deduped_sources, scope), temporary=True
            )
            if not sql.value(f"select count(*) from {sharing}"):
                break
            sql.execute(f"insert into {scope} select source, file from {sharing}")
            staged = " union all by name ".join(_activity_select(s, scope, sql, purposes) for s in sources)
            sql.create_table_as(stage, staged, temporary=True)
        read_now = int(sql.value(f"select count(*) from {stage}"))
        _field_labels(sql, labels, sources, purposes)
        shapes = [*_SHAPES[role], *((f"consent__{p}", f"consent__{p}", "value") for p in purposes)]
        shape_rejects = guard_shapes(sql, scratch, f"{role}_stage", shapes, labels=labels)
        text_rejects = guard_text(
            sql,
            scratch,
            f"{role}_stage",
            text_columns(ACTIVITY_TEXT_FIELDS, sources, ["source_record_id", "event_id"]),
            labels=labels,
        )
        deduped = [sql_literal(s.name) for s in deduped_sources]
        order, why = (
            ("file desc, row_number desc", "replaced by")
            if transactions
            else ("file, row_number", "already delivered in")
        )
        # Copies are ranked among the rows nothing else rejects: a copy with an unreadable timestamp or
        # amount does not stand in for the event, so a readable copy counts instead.
        copies = f"(partition by source, event_id, other_reason is null order by {order})"
        duplicate = (
            f"""case when other_reason is null and source in ({", ".join(deduped)})
                          and row_number() over {copies} > 1
                     then 'duplicate event id: {why} ' || first_value(file || ' line ' || row_number) over {copies}
                end"""
            if deduped
            else "null"
        )
        not_a_number = rules.amount_reason_sql("amount_text", "decimal_separator")
        ambiguous = rules.amount_ambiguous_sql("amount_text", "decimal_separator", "amount_is_number")
        exponent = rules.amount_exponent_sql("amount_text")
        exponent_reason = rules.amount_exponent_reason_sql("amount_label", "amount_raw")
        # The counting copies in kept files of the staged events rank with them and leave with the ranking.
        counting = _counting_copies(role, stage, deduped_sources, scope)
        sql.create_table_as(
            stage,
            f"""select * exclude (__counting) from (
                select * exclude (other_reason), coalesce(other_reason, {duplicate}) as reject_reason
                from (
                    select *, {rules.amount_sql("amount_text")} as amount,
                      case
                        when __counting then null
                        when source_record_id is null then 'no record id: ' || record_id_label || ' is empty'
                        when occurred_raw is null then 'missing timestamp'
                        when occurred_at is null then occurred_reason
                        when occurred_at > loaded_at + {_FUTURE_MARGIN} then {_FUTURE_REASON}
                        {"when amount_raw is null then 'missing amount'" if transactions else ""}
                        {f"when amount is null then {not_a_number}" if transactions else ""}
                        {f"when {exponent} then {exponent_reason}" if transactions else ""}
                        {f"when {ambiguous} then {sql_literal(rules.AMBIGUOUS_AMOUNT)}" if transactions else ""}
                        {"when try_cast(amount_text as double) < 0 then 'negative amount'" if transactions else ""}
                      end as other_reason
                    from (select *, false as __counting from {stage}
                          union all by name select *, true as __counting from ({counting}))
                )
            ) where not __counting""",
            temporary=True,
        )
        table = ACTIVITY_TABLES[role]
        columns = table.projection({"currency": "upper(currency)"} if "currency" in table.columns else {})
        identifiers, recorded, identifier_text_rejects, restaged = identifier_rows(
            sql, scratch, sources, config, role, table.name, scope
        )
        replace_files(sql, table, f"select {columns} from {stage} where reject_reason is null", scope)
        maps = build_identifier_maps(sql, scratch, recorded)
        write_identifiers(
            sql,
            scratch,
            role,
            f"select source, file, row_number, source_record_id from {stage} where reject_reason is null "
            f"union all {restaged}",
            recorded,
            maps,
            scope,
        )
        consent_rejects = _activity_consent(sql, scratch, role, stage, labels, purposes, scope)
        row_rejects = f"""
            select 'clean' as stage, source, file, row_number,
                case when source_record_id is null then record_id_label
                     when occurred_at is null or starts_with(reject_reason, {_FUTURE_PREFIX}) then occurred_label
                     when starts_with(reject_reason, 'duplicate') then event_id_label else amount_label end as field,
                case when source_record_id is null then null
                     when occurred_at is null or starts_with(reject_reason, {_FUTURE_PREFIX}) then occurred_raw
                     when starts_with(reject_reason, 'duplicate') then event_id else amount_raw end as value,
                reject_reason as reason, 'row' as scope
            from {stage} where reject_reason is not null"""
        write_quarantine(
            sql,
            role,
            [
                row_rejects,
                *consent_rejects,
                _identifier_rejects(identifiers, maps),
                _TEXT_REJECTS.format(rejects=shape_rejects),
                _TEXT_REJECTS.format(rejects=text_rejects),
                _TEXT_REJECTS.format(rejects=identifier_text_rejects),
            ],
            scope,
        )
        record_cleaned_files(sql, scratch, role, settings)
    return {**_role_counts(sql, role, f"clean.{role}"), "raw_rows_cleaned_now": read_now}


# --------------------------------------------------------------------------- assets


def _accounting_check(
    sql: Sql, asset_key: dg.AssetKey, counts: dict[str, int], sources: Sequence[SourceConfig]
) -> dg.AssetCheckResult:
    raw = raw_row_count(sql, sources)
    cleaned, rejected = counts["cleaned"], counts["rows_quarantined"]
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=ROW_ACCOUNTING_CHECK,
        passed=bool(raw == cleaned + rejected),
        metadata={"raw_rows": int(raw), "cleaned_rows": cleaned, "rows_quarantined": rejected},
    )


MAPPING_CHECK = "mapped_fields_have_values"
# The mapped-fields check's count of a source's rows keyed by their own event id (not file:line).
OWN_EVENT_IDS = "__own_event_ids"


def _mapping_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        MAPPING_CHECK,
        asset=key,
        description="Warns when a source's rows are all quarantined, or a field its mapping reads has a value in "
        "none of its cleaned rows: a mapping that names the wrong column, path or date format.",
    )


def _mapping_check(
    sql: Sql, asset_key: dg.AssetKey, table: str, quarantine: str, sources: Sequence[SourceConfig]
) -> dg.AssetCheckResult:
    """The mapped-fields check: a source that loaded rows must clean some, each canonical field it maps
    (a column of `table`) must have a value in one of its cleaned rows, each consent purpose it maps a
    statement and each attribute a value; what cleaning quarantined most for the source or the field says
    why not."""
    columns = set(sql.columns(f"select * from {table} limit 0"))
    mapped = {s.name: [f for f in s.fields if f in columns] for s in sources}
    fields = sorted({f for names in mapped.values() for f in names})
    counts = [f'count("{f}") as "{f}"' for f in fields]
    # Sources whose identifier and event id paths the check reads (see _unread_paths).
    path_checked = [s for s in sources if s.format != "segment"]
    own_event_ids = "event_id" in columns and any(s.event_id is not None for s in path_checked)
    if own_event_ids:  # rows keyed by their event id path, not the file:line fallback; in the same pass
        counts.append(f"count(*) filter (where event_id <> file || ':' || row_number::varchar) as {OWN_EVENT_IDS}")
    counted = ", ".join(counts)
    found = {
        row[0]: dict(zip(["rows", *fields, *([OWN_EVENT_IDS] if own_event_ids else [])], row[1:], strict=True))
        for row in sql.rows(f"select source, count(*){', ' + counted if counted else ''} from {table} group by 1")
    }
    problems: list[dict[str, object]] = []

    def most_quarantined(source: str, field: str | None) -> str:
        condition = "and field = ?" if field else ""
        row = sql.row(
            f"select reason, count(*) from {quarantine} where source = ? {condition} group by 1 order by 2 desc, 1 "
            "limit 1",
            [source, field] if field else [source],
        )
        return f"{row[0]} ({row[1]:,} rows)" if row else "none quarantined"

    raw_rows = raw_row_counts(sql, sources)
    id_types: dict[str, set[str]] = {}
    if any(s.identifiers for s in path_checked):
        identifiers = tables.IDENTIFIERS[path_checked[0].role].name
        for name, id_type in sql.rows(f"select distinct source, id_type from {identifiers}"):
            id_types.setdefault(name, set()).add(id_type)
    consents: dict[tuple[str, str], int] = {}
    if any(s.consent for s in sources):
        role = sources[0].role
        statements = (tables.CONSENT_STATEMENTS if role == "person" else tables.ACTIVITY_CONSENT[role]).name
        consents = {
            (r[0], r[1]): r[2] for r in sql.rows(f"select source, purpose, count(*) from {statements} group by 1, 2")
        }
    own: dict[tuple[str, str], int] = {}
    if any(s.attributes for s in sources):
        values = tables.PERSON_ATTRIBUTES.name
        own = {(r[0], r[1]): r[2] for r in sql.rows(f"select source, attribute, count(*) from {values} group by 1, 2")}
    for source in sources:
        raw = raw_rows[source.name]
        cleaned = found.get(source.name, {})
        if raw and not cleaned.get("rows"):
            problems.append(
                {
                    "source": source.name,
                    "field": "(every row)",
                    "problem": f"all {raw:,} rows quarantined",
                    "quarantined most": most_quarantined(source.name, None),
                }
            )
            continue
        for field in mapped[source.name]:
            if cleaned and not cleaned[field]:
                label = path_label(source.fields[field])
                problems.append(
                    {
                        "source": source.name,
                        "field": f"{field} ({label})",
                        "problem": f"no value in any of {cleaned['rows']:,} cleaned rows",
                        "quarantined most": most_quarantined(source.name, label),
                    }
                )
        # A misspelt identifier path or event id path reads nothing and fails nothing: the identifiers never
        # link, and every event falls back to file and line, so a re-sent event loads twice. Segment
        # sources are left out: their paths are the platform's own, and a client may not send every one.
        if cleaned and source.format != "segment":
            problems += _unread_paths(source, cleaned, id_types.get(source.name, set()))
        # A consent mapping whose every value was refused ("ja", "nein") leaves the source saying nothing
        # about consent, which is not consent: as silent a loss as an empty field. So does an attribute's
        # misspelt JSON path: every profile would have no value, and nothing say why.
        unread = [
            (f"consent {name}", spec, "consent statement")
            for name, spec in source.consent.items()
            if consents.get((source.name, name), 0) == 0
        ] + [
            (f"attribute {name}", spec, "value")
            for name, spec in source.attributes.items()
            if not own.get((source.name, name))
        ]
        for field, spec, what in unread if cleaned else []:
            label = path_label(spec)
            problems.append(
                {
                    "source": source.name,
                    "field": f"{field} ({label})",
                    "problem": f"no {what} in any of {cleaned['rows']:,} cleaned rows",
                    "quarantined most": most_quarantined(source.name, label),
                }
            )
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=MAPPING_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"problems": len(problems), "details": dg.MetadataValue.md(markdown_table(problems))},
        description=_problems_in_brief(problems),
    )


def _problems_in_brief(problems: list[dict[str, object]]) -> str | None:
    """The mapped-fields check's description: the first problems, naming the source and field to fix."""
    told = [f"{p['source']} {p['field']}: {p['problem']} (quarantined most: {p['quarantined most']})" for p in problems]
    return in_brief(told, len(problems))


ONE_PERSON_CHECK = "record_ids_name_one_person"
# The fields whose agreement says two versions of a record are one person. Names agree when one is
# the other with a typo or shortened (`Bron`, `Pat`, `J` for `Brown`, `Patricia`, `John`), as a person's
# own records spell them; the others agree when equal.
_PERSON_MARKS = ("first_name", "last_name", "date_of_birth", "email", "phone")


def _agree_sql(column: str) -> str:
    a, b = f"v.{column}", f"l.{column}"
    if not column.endswith("_name"):
        return f"coalesce({a} = {b}, false)"
    a, b = f"lower({a})", f"lower({b})"
    return (
        f"coalesce(jaro_winkler_similarity({a}, {b}) >= 0.8 or starts_with({a}, {b}) or starts_with({b}, {a}), false)"
    )


def _one_person_spec() -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ONE_PERSON_CHECK,
        asset=PERSON_RECORDS,
        description="Warns when an older version of a record shares no name, birth date, e-mail or phone with "
        "its latest version: a source that reused the record id for another person, whose versions identity "
        "reads as one record and so joins the two people into one customer.",
    )


def _one_person_check(sql: Sql, shown: int = 20) -> dg.AssetCheckResult:
    """The reused-record-id check. Versions of one record are how a change log arrives (a new e-mail, a
    new surname, a move, a name's typo mended), and they are one record by design; a person changing every
    one of name, birth date, e-mail and phone at once is not a change log but another person under the
    same id. A version counts when it and the latest share at least two of those fields, so sparse sources
    are not judged on one value. Only the older versions are compared, each with its record's latest."""
    compared = " + ".join(f"(v.{c} is not null and l.{c} is not null)::int" for c in _PERSON_MARKS)
    agreeing = " or ".join(_agree_sql(c) for c in _PERSON_MARKS)
    rows = sql.rows(
        f"""select v.source, l.file, l.row_number, v.file, v.row_number, {compared} as compared,
                   count(*) over () as unlike
            from {tables.PERSON_RECORDS.name} v join {tables.PERSON_RECORDS.name} l
              on l.source = v.source and l.source_record_id = v.source_record_id and l.is_latest
            where not v.is_latest and {compared} >= 2 and not ({agreeing})
            order by v.source, l.file, l.row_number, v.file, v.row_number
            limit {int(shown)}"""
    )
    unlike = int(rows[0][6]) if rows else 0
    details = [
        {
            "source": source,
            "latest version": f"{latest_file} line {latest_row}",
            "unlike version": f"{file} line {row}",
            "fields compared": compared,
        }
        for source, latest_file, latest_row, file, row, compared, _ in rows
    ]
    return dg.AssetCheckResult(
        asset_key=PERSON_RECORDS,
        check_name=ONE_PERSON_CHECK,
        passed=unlike == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "versions_unlike_their_latest": unlike,
            "details": dg.MetadataValue.md(markdown_table(details)),
        },
        # Files and lines only: the record ids are customer data, which a run's log does not carry.
        description=in_brief(
            [
                f"{d['source']}: {d['unlike version']} is unlike its record's latest version, {d['latest version']}"
                for d in details
            ],
            unlike,
        ),
    )


def _unread_paths(source: SourceConfig, cleaned: dict[str, int], id_types: set[str]) -> list[dict[str, object]]:
    """The mapped-fields check's problems with a source's identifier paths (none of its cleaned rows gave an
    identifier of the type, `id_types` being the types they gave) and event id path (none gave an event id
    of its own); `cleaned` is the source's counts from the check's pass over the table."""
    rows = cleaned["rows"]
    problems: list[dict[str, object]] = [
        {
            "source": source.name,
            "field": f"identifier {spec.type} ({spec.path})",
            "problem": f"no {spec.type} identifier in any of {rows:,} cleaned rows",
            "quarantined most": "check the path against the files",
        }
        for spec in source.identifiers
        if spec.type not in id_types
    ]
    if source.event_id is not None and cleaned.get(OWN_EVENT_IDS) == 0:
        problems.append(
            {
                "source": source.name,
                "field": f"event_id ({path_label(source.event_id)})",
                "problem": f"no value in any of {rows:,} cleaned rows: every row is keyed by its file and "
                "line, so an event sent again loads again",
                "quarantined most": "check the path against the files",
            }
        )
    return problems


def _cleaning_metadata(counts: dict[str, int], by_source: list[dict]) -> dict[str, object]:
    """What every cleaning asset reports: counts, the reject rate (plotted over time), a table per source."""
    total = counts["cleaned"] + counts["rows_quarantined"]
    return {
        "dagster/row_count": dg.MetadataValue.int(counts["cleaned"]),
        "rows_quarantined": counts["rows_quarantined"],
        "values_quarantined": counts["values_quarantined"],
        "row_reject_rate": dg.MetadataValue.float(counts["rows_quarantined"] / total if total else 0.0),
        # Cleaning reads only the raw rows of new and changed files (files_to_clean), where it can.
        **({"raw_rows_cleaned_now": counts["raw_rows_cleaned_now"]} if "raw_rows_cleaned_now" in counts else {}),
        "by_source": dg.MetadataValue.md(markdown_table(by_source)),
    }


def _accounting_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ROW_ACCOUNTING_CHECK,
        asset=key,
        blocking=True,
        description="Every raw row is either cleaned or quarantined whole: raw = cleaned + quarantined rows.",
    )


def suite_follows(context: dg.AssetExecutionContext) -> bool:
    """Whether this run validates the person records with the expectations suite after cleaning them: its
    steps run one after another in one process (the platform's in-process executor), so the suite's
    seconds of importing Great Expectations can overlap the cleaning, which works in DuckDB."""
    selected = context.run.asset_check_selection
    if selected is not None:
        return EXPECTATIONS_SUITE in selected
    return EXPECTATIONS_SUITE in context.job_def.asset_layer.asset_graph.asset_check_keys


def build_clean_assets(config: CDPConfig) -> list[dg.AssetsDefinition]:
    """The cleaned-records assets for the roles the configuration has sources for."""
    from resources.warehouse import Warehouse

    assets = []
    persons = config.sources_with_role("person")

    @dg.asset(
        key=PERSON_RECORDS,
        group_name=GROUP,
        description="Canonical person records from every person source, cleaned; rejects go to cdp.quarantine.",
        deps=[dg.AssetKey(["raw", s.name]) for s in persons],
        kinds={"python"},
        code_version=CODE_VERSION,
        metadata=table_metadata(
            "clean.person_records",
            "clean.person_identifiers",
            "clean.person_quarantine",
            "clean.consent_statements",
            "cdp.consent_history",
        ),
        check_specs=[_accounting_spec(PERSON_RECORDS), _mapping_spec(PERSON_RECORDS), _one_person_spec()],
    )
    @redact_errors
    def person_records(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        if suite_follows(context):
            start_importing_great_expectations()
        with warehouse.sql() as sql:
            counts = clean_person_records(sql, config)
            check = _accounting_check(sql, PERSON_RECORDS, counts, persons)
            mapping = _mapping_check(sql, PERSON_RECORDS, "clean.person_records", "clean.person_quarantine", persons)
            one_person = _one_person_check(sql)
            by_source = sql.frame(
                "select source, count(*) rows, count(email) emails, count(phone) phones, "
                "count(date_of_birth) birth_dates from clean.person_records group by 1 order by 1"
            )
            preview = masked_preview(
                sql,
                "select source, source_record_id, first_name, last_name, email, phone, city, country "
                "from clean.person_records order by source, source_record_id",
            )
        return dg.MaterializeResult(
            metadata={
                **_cleaning_metadata(counts, by_source.to_dict("records")),
                "preview": dg.MetadataValue.md(preview),
            },
            check_results=[check, mapping, one_person],
        )

    assets.append(person_records)

    for role, key, description in (
        (
            "events",
            EVENTS,
            "Behavioural events (web, e-mail, support) with a parsed time and the record they belong to.",
        ),
        (
            "transactions",
            TRANSACTIONS,
            "Orders and payments with a parsed time and a validated, non-negative amount.",
        ),
    ):
        role_sources = config.sources_with_role(role)
        if role_sources:
            assets.append(_activity_asset(config, role, key, description, role_sources))
    return assets


def _activity_asset(
    config: CDPConfig, role: str, key: dg.AssetKey, description: str, sources: list[SourceConfig]
) -> dg.AssetsDefinition:
    from resources.warehouse import Warehouse

    @dg.asset(
        key=key,
        group_name=GROUP,
        description=description,
        deps=[dg.AssetKey(["raw", s.name]) for s in sources],
        code_version=CODE_VERSION,
        metadata=table_metadata(f"clean.{role}", f"clean.{role}_identifiers", f"clean.{role}_quarantine"),
        check_specs=[_accounting_spec(key), _mapping_spec(key)],
    )
    @redact_errors
    def activity(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.sql() as sql:
            counts = clean_activity(sql, config, role)
            check = _accounting_check(sql, key, counts, sources)
            mapping = _mapping_check(sql, key, ACTIVITY_TABLES[role].name, f"clean.{role}_quarantine", sources)
            by_source = sql.frame(
                f"select source, count(*) rows, min(occurred_at) first_at, max(occurred_at) last_at "
                f"from clean.{role} group by 1 order by 1"
            )
        return dg.MaterializeResult(
            metadata=_cleaning_metadata(counts, by_source.to_dict("records")), check_results=[check, mapping]
        )

    return activity
