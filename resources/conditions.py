"""What a segment or trait condition may contain, and the sandbox segment conditions run in.

A condition is written by whoever edits the configuration, but it runs inside the warehouse process,
where DuckDB can read any file the process can (`read_csv('/etc/passwd')`, `glob(...)`, the landing
files) and reach other databases. Binding against an empty table of the right schema checks names and
types, not what an expression reaches. So a condition is parsed (sqlglot, DuckDB dialect) and every
node of the tree must be one of a small set of value expressions over the table's own columns:
operators, CASE, casts to scalar types, IN lists, and the functions in `ALLOWED_FUNCTIONS`. Anything
else (a subquery, a table function, `getenv`, `*`, a function we have not listed) is refused by name,
and so is a name that is not one of the table's columns.

What runs is the SQL regenerated from the checked tree, never the text as written, so a spelling that
sqlglot and DuckDB would read differently cannot slip a call past the check.

Segment conditions are, in addition, evaluated in a separate in-memory DuckDB database opened with
external access disabled (`sandbox`), over a copy of only the profile columns they read: even a
construct the allow-list missed cannot read a file there. Trait conditions run inside the single pass
over the activity tables and rely on the allow-list alone (see docs/configuration.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from resources.sql import Sql

# The functions a condition may call, as users write them: pure functions of their arguments, none taking
# a length (no lpad or repeat, where one number in the condition could ask for gigabytes per row).
ALLOWED_FUNCTIONS: tuple[str, ...] = (
    # null handling and conditionals
    "coalesce", "ifnull", "nullif", "if",
    # strings
    "lower", "upper", "trim", "ltrim", "rtrim", "length", "len", "concat", "concat_ws", "left", "right",
    "substring", "substr", "replace", "reverse", "split_part", "strpos", "position",
    "starts_with", "ends_with", "prefix", "suffix", "contains", "regexp_matches", "regexp_full_match",
    "regexp_extract", "regexp_replace",
    # dates and times
    "date_diff", "datediff", "date_trunc", "date_part", "datepart", "extract", "year", "quarter", "month", "week",
    "day", "dayofweek", "hour", "last_day", "make_date", "age", "strftime", "current_date", "current_timestamp",
    "now", "today",
    # lists
    "list_contains", "list_has", "array_contains", "array_has", "array_length", "list_has_any", "list_has_all",
    "list_position", "list_extract",
    # numbers
    "abs", "round", "floor", "ceil", "greatest", "least", "sign",
)  # fmt: skip

# How sqlglot represents the functions above: as a typed node, or, for names it does not model, as
# `Anonymous` with the name as written (checked against `_ANONYMOUS`).
_FUNCTION_NODES: tuple[type[exp.Expression], ...] = (
    exp.Coalesce, exp.Nullif, exp.If, exp.Lower, exp.Upper, exp.Trim, exp.Length, exp.Concat, exp.ConcatWs,
    exp.Left, exp.Right, exp.Substring, exp.Replace, exp.Reverse, exp.SplitPart, exp.StrPosition,
    exp.StartsWith, exp.EndsWith, exp.Contains, exp.RegexpLike, exp.RegexpFullMatch, exp.RegexpExtract,
    exp.RegexpReplace, exp.DateDiff, exp.TimestampTrunc, exp.DateTrunc, exp.Extract, exp.Year, exp.Quarter,
    exp.Month, exp.Week, exp.Day, exp.DayOfWeek, exp.Hour, exp.LastDay, exp.DateFromParts, exp.TimeToStr,
    exp.CurrentDate, exp.CurrentTimestamp, exp.ArrayContains, exp.ArraySize, exp.ArrayOverlaps, exp.Abs,
    exp.Round, exp.Floor, exp.Ceil, exp.Greatest, exp.Least, exp.Sign,
)  # fmt: skip
_ANONYMOUS = frozenset(
    {"prefix", "suffix", "date_part", "datepart", "age", "now", "list_has_all", "list_position", "list_extract"}
)

# Everything else a condition may contain: columns, constants and operators.
_STRUCTURE: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Neg, exp.Not, exp.And,
    exp.Or, exp.Xor, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.SimilarTo, exp.Escape, exp.Add, exp.Sub, exp.Mul, exp.Div,
    exp.IntDiv, exp.Mod, exp.DPipe, exp.Case, exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam,
    exp.Interval, exp.Var, exp.Array, exp.Bracket, exp.Slice, exp.JSONExtract, exp.JSONExtractScalar,
    exp.JSONPath, exp.JSONPathPart,
)  # fmt: skip
_SCALAR_TYPES = (
    exp.DataType.TEXT_TYPES
    | exp.DataType.NUMERIC_TYPES
    | exp.DataType.TEMPORAL_TYPES
    | {exp.DataType.Type.BOOLEAN, exp.DataType.Type.INTERVAL, exp.DataType.Type.DATE}
)
# Bare words are units (`interval 7 days`, `extract(year from ...)`, `date_trunc('month', ...)`).
_UNIT_HOLDERS = (exp.Interval, exp.Extract, exp.DateDiff, exp.TimestampTrunc, exp.DateTrunc)
_QUERIES = (exp.Query, exp.Subquery, exp.Exists)


class ConditionError(ValueError):
    """A condition that may not run; the message names the construct but not the key (the caller does)."""


def json_path(keys: Sequence[str]) -> str:
    """The JSON path of `key1.key2...`, each key quoted, so a key with a dot or a space is one key."""
    return "$." + ".".join('"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"' for key in keys)


def json_path_node(column: str, keys: Sequence[str]) -> exp.Expression:
    """The expression reading the text at `column.key1.key2...` of a JSON column, NULL where the event has
    no such key."""
    return exp.Anonymous(
        this="json_extract_string", expressions=[exp.column(column, quoted=True), exp.Literal.string(json_path(keys))]
    )


def json_path_sql(column: str, keys: Sequence[str]) -> str:
    """`json_path_node` as DuckDB SQL."""
    return json_path_node(column, keys).sql(dialect="duckdb", identify=True)


def json_reference(node: exp.Expression, json_columns: Collection[str]) -> tuple[str, list[str]] | None:
    """(JSON column, keys) when `node` is a dotted path into one of `json_columns` (`properties.category`,
    `context.page.path`), else None."""
    keys: list[str] = []
    while isinstance(node, exp.Dot):
        keys.insert(0, node.expression.name)
        node = node.this
    if not isinstance(node, exp.Column) or not node.table:
        return None
    parts = [part.name for part in node.parts]
    known = {c.lower(): c for c in json_columns}
    if parts[0].lower() not in known:
        return None
    return known[parts[0].lower()], parts[1:] + keys


def check_condition(
    expression: str,
    columns: Collection[str],
    columns_of: str,
    json_columns: Collection[str] = (),
    clock: str | None = None,
) -> str:
    """Parse `expression`, refuse anything outside the allow-list, and return the SQL to run.

    `columns` are the table's column names; `columns_of` says whose they are (`the profile's`), for the
    message. `json_columns` are those of them holding JSON, which a condition reads by dotted path
    (`properties.category = 'shoes'`), as text. Type errors are left to binding against the schema
    (resources/schema.py).

    `clock`, SQL of a timestamp (a column, a literal), is what `now()`, `current_timestamp`, `current_date`
    and `today()` read instead of the machine's clock: the time the rows are computed as of. A condition
    then gives the same answer whenever it runs (a rebuild, a re-run tomorrow); the caller sees that it
    is evaluated again when that time moves (`reads_clock`).
    """
    tree = _parse(expression)
    paths = [node for node in tree.walk() if json_reference(node, json_columns) is not None]
    inside = {id(n) for path in paths for n in path.walk()}
    refused = list(dict.fromkeys(filter(None, (_refusal(node) for node in tree.walk() if id(node) not in inside))))
    if refused:
        raise ConditionError(
            f"{', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not allowed: conditions may only use "
            f"{columns_of} columns, operators (comparisons, and/or/not, arithmetic, ||, IN lists, BETWEEN, "
            "LIKE/ILIKE, IS NULL), CASE, CAST/TRY_CAST to scalar types and these functions: "
            + ", ".join(ALLOWED_FUNCTIONS)
        )
    # A name that is not a column could still bind: DuckDB reads `user` or `current_schema` as functions.
    known = {c.lower() for c in columns}
    unknown = [c for c in referenced_columns(tree) if c.lower() not in known]
    if unknown:
        raise ConditionError(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
    # A path becomes the function reading it, built from the checked column and keys (never from text).
    for path in [p for p in paths if not isinstance(p.parent, exp.Dot)]:
        reference = json_reference(path, json_columns)
        assert reference is not None
        path.replace(json_path_node(*reference))
    if clock is not None:
        tree = _read_clock_from(tree, clock)
    # Identifiers quoted, so a column is never read as a keyword function; comments dropped.
    return tree.sql(dialect="duckdb", identify=True, comments=False)


def _is_clock(node: exp.Expression) -> bool:
    return isinstance(node, (exp.CurrentDate, exp.CurrentTimestamp)) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "now"
    )


def reads_clock(expression: str) -> bool:
    """Whether a condition calls `now()`, `current_timestamp`, `current_date` or `today()`."""
    return any(_is_clock(node) for node in _parse(expression).walk())


def _read_clock_from(tree: exp.Expression, clock: str) -> exp.Expression:
    """`tree` with every reading of the clock replaced by the SQL `clock` (for a date, its day)."""
    time = sqlglot.parse_one(clock, read="duckdb")

    def replaced(node: exp.Expression) -> exp.Expression:
        if not _is_clock(node):
            return node
        if isinstance(node, exp.CurrentDate):
            return exp.cast(time.copy(), exp.DataType.Type.DATE)
        return time.copy()

    return tree.transform(replaced)


def referenced_columns(condition: str | exp.Expression) -> tuple[str, ...]:
    """The column names a condition reads, in order of first use (its text need not have been checked)."""
    tree = _parse(condition) if isinstance(condition, str) else condition
    # A dotted name (`properties.category`) reads its first part; only JSON columns allow one.
    return tuple(dict.fromkeys(column.parts[0].name for column in tree.find_all(exp.Column) if column.name))


def _parse(expression: str) -> exp.Expression:
    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(expression)
        if any(token.token_type == TokenType.SEMICOLON for token in tokens):
            raise ConditionError("a condition is one SQL expression; ';' is not allowed")
        tree = sqlglot.parse_one(expression, read="duckdb")
    except ParseError as exc:
        detail = exc.errors[0]["description"] if exc.errors else str(exc).split("\n")[0]
        raise ConditionError(f"not one SQL expression ({detail})") from None
    except TokenError as exc:
        raise ConditionError(f"not one SQL expression ({str(exc).split(chr(10))[0]})") from None
    except RecursionError:
        # The parser descends once per level of nesting: thousands of parentheses or `not`s exhaust Python's
        # stack, which would otherwise end the definitions' load with a bare RecursionError naming nothing.
        raise ConditionError(
            "nested too deeply to read (thousands of parentheses or NOTs); write it with fewer levels"
        ) from None
    if tree is None:
        raise ConditionError("the condition is empty")
    return tree


def _refusal(node: exp.Expression) -> str | None:
    """How to name `node` in the error if it is not allowed, else None."""
    if isinstance(node, exp.Anonymous):
        name = node.name.lower()
        return None if name in _ANONYMOUS else f"{name}(...)"
    if isinstance(node, _QUERIES):
        return "a subquery (SELECT/EXISTS)" if not _inside_query(node) else None
    if isinstance(node, exp.Func) and not isinstance(node, _STRUCTURE):
        return None if isinstance(node, _FUNCTION_NODES) else f"{type(node).sql_names()[0].lower()}(...)"
    if _inside_query(node):
        return None  # the query itself was named; only the functions inside it add information
    if isinstance(node, exp.Star):
        return "*"
    if isinstance(node, exp.Placeholder):
        return "a parameter"
    if not isinstance(node, _STRUCTURE):
        return f"{node.key.upper()} ({_snippet(node)})"
    if isinstance(node, exp.Column) and (node.table or isinstance(node.this, exp.Star)):
        return f"{_snippet(node)} (a column of another table)"
    if isinstance(node, exp.In) and (node.args.get("unnest") or node.args.get("field")):
        return "IN over a list column (use list_contains)"
    if isinstance(node, exp.DataType) and not _scalar(node):
        return f"a cast to {_snippet(node)}"
    if isinstance(node, exp.Var) and not isinstance(node.parent, _UNIT_HOLDERS):
        return f"{_snippet(node)}"
    return None


def _scalar(node: exp.DataType) -> bool:
    """A scalar type (DECIMAL(10, 2) carries its parameters as children, which are not types themselves)."""
    return node.this in _SCALAR_TYPES and not node.find(exp.ColumnDef)


def _inside_query(node: exp.Expression) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, _QUERIES):
            return True
        parent = parent.parent
    return False


def _snippet(node: exp.Expression) -> str:
    text = node.sql(dialect="duckdb")
    return text if len(text) <= 60 else text[:57] + "..."


def sandbox(time_zone: str = "UTC") -> Sql:
    """An empty in-memory DuckDB database that cannot touch files, the network or extensions.

    `enable_external_access` can only be switched off when a database starts and never back on, so the
    warehouse connection cannot be restricted this way without breaking the stages that read files;
    a separate database can. `time_zone` should be the warehouse's (UTC, see resources/warehouse.py),
    so date arithmetic on time zone aware values gives the same answer in both. The configuration is
    then locked, so a statement cannot change any setting.
    """
    box = Sql.in_memory(
        enable_external_access=False, autoinstall_known_extensions=False, autoload_known_extensions=False
    )
    quoted = time_zone.replace("'", "''")
    box.execute(f"set TimeZone = '{quoted}'")
    box.execute("set lock_configuration = true")
    return box


_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def failure_message(error: BaseException) -> str:
    """DuckDB's error without the data it quotes: the first line, quoted values and numbers replaced.

    A conversion error quotes the offending value (`Could not convert string 'Ann' to INT32`), and the
    message ends up in Dagster's event log, which must not carry profile data.
    """
    first_line = str(error).split("\n")[0]
    return _NUMBER.sub("…", _QUOTED.sub("'…'", first_line))
