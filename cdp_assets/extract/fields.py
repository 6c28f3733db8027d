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
    paths = _read_paths(source)
    parts = [
        f"nullif(trim({extracted}[{paths.index(p) + 1}]), '')"
        if extracted
        else f"nullif(trim(record ->> {sql_literal(_json_path(source, p))}), '')"
        for p in spec.path or []
    ]
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def extracted_sql(source: SourceConfig) -> str:
    """The text at every path the source maps (`source.read_paths()`, in that order), from one parse of the
    record's JSON: what `value_sql(..., extracted)` reads."""
    paths = ", ".join(sql_literal(_json_path(source, p)) for p in _read_paths(source))
    return f"json_extract_string(record, [{paths}])" if paths else "[]::varchar[]"


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
