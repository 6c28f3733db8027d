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


def _parents(path: str) -> list[str]:
    """The objects a dotted path goes through, outermost first: `a` and `a.b` for `a.b.c`."""
    keys = path.split(".")
    return [".".join(keys[:depth]) for depth in range(1, len(keys))]


def _typed_paths(source: SourceConfig) -> list[str]:
    """The paths whose JSON types `types_sql` gives: every path the source maps (in `read_paths` order), then
    the objects its dotted paths go through. A CSV record's values are all text, at keys that are column
    names, so none of a CSV source's."""
    if source.format == "csv":
        return []
    paths = _read_paths(source)
    return list(dict.fromkeys([*paths, *(parent for path in paths for parent in _parents(path))]))


def types_sql(source: SourceConfig) -> str:
    """The JSON type (DuckDB's name: `VARCHAR`, `ARRAY`, `OBJECT`, `NULL` for JSON's null, ...) of the value at
    every path of `_typed_paths`, NULL where there is none, from one parse of the record's JSON: what
    `shape_sql(..., types)` reads."""
    paths = ", ".join(sql_literal(_json_path(source, p)) for p in _typed_paths(source))
    return f"json_type(record, [{paths}])" if paths else "[]::varchar[]"


# How a reason names a JSON value by its type (`json_type`'s names).
_KINDS = (
    "case {} when 'VARCHAR' then 'a string' when 'ARRAY' then 'a list' when 'BOOLEAN' then 'true or false' "
    "else 'a number' end"
)


def _shape_cases(
    source: SourceConfig,
    spec: FieldSpec | None,
    types: str,
    extracted: str | None,
    one_value: bool,
    true_or_false: bool,
) -> list[tuple[str, str | None, str | None]]:
    """For `shape_sql`: (condition, reason, the text found) in the order they are tried; a
    path that holds a value ends the search, as a case without a reason."""
    if spec is None or not spec.path or source.format == "csv":
        return []
    typed = _typed_paths(source)

    def kind(path: str) -> str:
        return f"{types}[{typed.index(path) + 1}]"

    def text(path: str) -> str:
        if extracted and path in _read_paths(source):
            return f"{extracted}[{_read_paths(source).index(path) + 1}]"
        return f"(record ->> {sql_literal(_json_path(source, path))})"

    cases: list[tuple[str, str | None, str | None]] = []
    for i, path in enumerate(spec.path):
        for parent in _parents(path):
            found = f"{sql_literal(f'{path} cannot be read: {parent} is ')} || {_KINDS.format(kind(parent))}"
            cases.append((f"{kind(parent)} not in ('OBJECT', 'NULL')", f"{found} || ', not an object'", text(parent)))
        if one_value:
            expected = "where a single value is expected"
            cases.append((f"{kind(path)} = 'ARRAY'", sql_literal(f"{path} is a list {expected}"), text(path)))
            cases.append((f"{kind(path)} = 'OBJECT'", sql_literal(f"{path} is an object {expected}"), text(path)))
            if not true_or_false:
                refused = f"{path} is true or false where text or a number is expected"
                cases.append((f"{kind(path)} = 'BOOLEAN'", sql_literal(refused), text(path)))
        if i < len(spec.path) - 1:  # a value here is the one read: the later paths are not
            held = f"{_path_text(source, path, extracted)} is not null" if one_value else f"{kind(path)} <> 'NULL'"
            cases.append((held, None, None))
    return cases


def shape_sql(
    source: SourceConfig,
    spec: FieldSpec | None,
    types: str,
    extracted: str | None = None,
    *,
    one_value: bool = True,
    true_or_false: bool = False,
) -> tuple[str, str]:
    """SQL for why a mapped field cannot be read, or NULL when it can, and SQL for the text that reason is
    about (the list or object, or the value a path goes through that is not an object; NULL where there is
    no reason), for the path its value is read from (the first of its paths that holds a value, or cannot be
    read).

    A field cannot be read when an object its dotted path goes through is a value of another kind
    (`address.city` where `address` is a string: the path finds nothing, where a missing or null `address`
    is simply no value), or, for a field that takes `one_value`, when the path holds a list or an object,
    whose JSON text would otherwise be read as the value, or JSON's true or false, unless the field takes
    `true_or_false` (a consent): a name, an id, an amount or a time that is a boolean is a mistake of the
    source, where its text "true" would read as a value. `types` names a column holding `types_sql(source)`;
    `extracted`: see value_sql (a field kept as JSON, `one_value=False`, is read as json_sql reads it)."""
    cases = _shape_cases(source, spec, types, extracted, one_value, true_or_false)
    if not cases:
        return "null::varchar", "null::varchar"
    reason = "(case " + " ".join(f"when {c} then {r or 'null'}" for c, r, _ in cases) + " end)"
    found = "(case " + " ".join(f"when {c} then {f or 'null'}" for c, _, f in cases) + " end)"
    return reason, found


# JSON's numbers as `json_type` names them: a whole number fits one of the integer types, others are DOUBLE.
_NUMBER_TYPES = "('UBIGINT', 'BIGINT', 'HUGEINT', 'DOUBLE')"


def number_sql(source: SourceConfig, spec: FieldSpec | None, types: str) -> str:
    """SQL condition: the field's value is a JSON number (a JSON-lines, API or Parquet record's typed value),
    not text. A number has one reading: `1.234` is one and a quarter less a little, never the thousands a
    system writing a decimal comma would mean by the text "1.234". Of several paths, the one read decides
    (the first holding a value). `types` names a column holding `types_sql(source)`; a CSV value is text."""
    if spec is None or not spec.path or source.format == "csv":
        return "false"
    typed = _typed_paths(source)
    cases = []
    for path in spec.path:
        kind = f"{types}[{typed.index(path) + 1}]"
        cases.append(
            f"when {kind} in {_NUMBER_TYPES} then true when {_path_text(source, path, None)} is not null then false"
        )
    return f"coalesce(case {' '.join(cases)} end, false)"


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
