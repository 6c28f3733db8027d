"""A mapped field's raw text in a raw table's JSON record: what cleaning reads, and what the extract reads to
recognise an erased person's rows before they are stored."""

from resources.config import FieldSpec, SourceConfig
from resources.warehouse import sql_literal


def _json_path(source: SourceConfig, path: str) -> str:
    """DuckDB JSON path for a mapped path: CSV headers are literal keys, JSON paths are dotted."""
    parts = [path] if source.format == "csv" else path.split(".")
    return "$." + ".".join('"' + p.replace('"', '\\"') + '"' for p in parts)


def _read_paths(source: SourceConfig) -> list[str]:
    return list(dict.fromkeys(source.read_paths()))


def record_id_sql(source: SourceConfig, extracted: str | None = None) -> str:
    """The source record id, or `file:line` for a source that has none (`extracted`: see value_sql)."""
    if source.record_id is None:
        return "_file || ':' || _row_number::varchar"
    return value_sql(source, source.record_id, extracted)


def value_sql(source: SourceConfig, spec: FieldSpec | None, extracted: str | None = None) -> str:
    """SQL for a mapped field's raw text: a constant, or the first non-empty of its paths.

    With `extracted`, the name of a column holding `extracted_sql(source)`, the text is read from it: a
    record's JSON is then parsed once for all its fields rather than once per path."""
    if spec is None:
        return "null::varchar"
    if spec.value is not None:
        return sql_literal(spec.value)
    parts = [_path_text(source, p, extracted) for p in spec.path or []]
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def _path_text(source: SourceConfig, path: str, extracted: str | None) -> str:
    """SQL for the text at one mapped path, trimmed, NULL when empty (`extracted`: see value_sql)."""
    if extracted:
        return f"nullif(trim({extracted}[{_read_paths(source).index(path) + 1}]), '')"
    return f"nullif(trim(record ->> {sql_literal(_json_path(source, path))}), '')"


def extracted_sql(source: SourceConfig) -> str:
    """The text at every path the source maps (`source.read_paths()`, in that order), from one parse of the
    record's JSON: what `value_sql(..., extracted)` reads."""
    paths = ", ".join(sql_literal(_json_path(source, p)) for p in _read_paths(source))
    return f"json_extract_string(record, [{paths}])" if paths else "[]::varchar[]"


def _typed_paths(source: SourceConfig) -> list[str]:
    """The paths whose JSON types `types_sql` gives: every path the source maps. A CSV record's values are
    all text, at keys that are column names, so none of a CSV source's."""
    return [] if source.format == "csv" else _read_paths(source)


def types_sql(source: SourceConfig) -> str:
    """The JSON type (DuckDB's name: `VARCHAR`, `ARRAY`, `OBJECT`, `NULL` for JSON's null, ...) of the value at
    every path of `_typed_paths`, NULL where there is none, from one parse of the record's JSON: what
    `shape_sql(..., types)` reads."""
    paths = ", ".join(sql_literal(_json_path(source, p)) for p in _typed_paths(source))
    return f"json_type(record, [{paths}])" if paths else "[]::varchar[]"


def shape_sql(source: SourceConfig, spec: FieldSpec | None, types: str, extracted: str | None = None) -> str:
    """SQL for why a mapped field that takes one value cannot be read as one, or NULL when it can: the path
    `value_sql` reads (the first of its paths that holds a value) holds a list or an object, whose JSON text
    would otherwise be read as the value. `types` names a column holding `types_sql(source)`; `extracted`:
    see value_sql."""
    if spec is None or not spec.path or source.format == "csv":
        return "null::varchar"
    typed = _typed_paths(source)
    branches = []
    for i, path in enumerate(spec.path):
        kind = f"{types}[{typed.index(path) + 1}]"
        branches += [
            f"when {kind} = 'ARRAY' then {sql_literal(f'{path} is a list where a single value is expected')}",
            f"when {kind} = 'OBJECT' then {sql_literal(f'{path} is an object where a single value is expected')}",
        ]
        if i < len(spec.path) - 1:  # a value here is the one read: the later paths are not
            branches.append(f"when {_path_text(source, path, extracted)} is not null then null")
    return f"(case {' '.join(branches)} end)"


def json_sql(source: SourceConfig, spec: FieldSpec | None) -> str:
    """SQL for a JSON field (properties, context): the value at the first of its paths that holds one,
    kept as JSON rather than text."""
    if spec is None or not spec.path:
        return "null::json"
    parts = [f"nullif((record -> {sql_literal(_json_path(source, p))}), 'null'::json)" for p in spec.path]
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def properties_sql(source: SourceConfig) -> str:
    """The event's properties; for Segment sources, a page or screen call's `name` and `category` are
    added under those keys (as analytics.js does), so a trait can ask which page was viewed."""
    properties = json_sql(source, source.fields.get("properties"))
    if source.format != "segment":
        return properties
    # Merging into {} drops the one of name and category that is missing; the event's own properties win.
    given = "json_object('name', record ->> '$.name', 'category', record ->> '$.category')"
    named = f"json_merge_patch(json_merge_patch('{{}}'::json, {given}), coalesce({properties}, '{{}}'::json))"
    return (
        f"case when record ->> '$.type' in ('page', 'screen') and coalesce(record ->> '$.name', "
        f"record ->> '$.category') is not null then {named} else {properties} end"
    )
