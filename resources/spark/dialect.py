"""The platform's SQL (DuckDB's dialect) as Spark SQL: sqlglot's DuckDB-to-Spark translation plus the
project's own fixes for the constructs sqlglot leaves wrong.

sqlglot translates nearly every statement of the platform, but some of what it emits fails on Spark or,
worse, runs with another meaning. Each such construct is rewritten here on the parsed statement, before
Spark SQL is generated, so that Spark computes what DuckDB computes:

- `first(v order by k1, k2)` -> `min_by(v, struct(k1 is null, k1, k2 is null, k2))`: Spark's `first`
  takes no order; the null flags keep DuckDB's NULLS LAST. Descending: `max_by(v, struct(k is not null, k))`.
  Keys in mixed directions: the first of the rows sorted by a comparator (`array_sort(..., (l, r) -> ...)`).
- `s[i]` (1-based, negative from the end) -> `try_element_at(s, i)`: sqlglot shifts literals only, gets
  negative ones wrong, and Spark's `s[i]` fails out of range where DuckDB gives NULL.
- `list(distinct x order by x)` -> `array_sort(array_distinct(collect_list(x)))`, and `list(v order by k)`
  -> `transform(array_sort(collect_list(named_struct('k0', k, 'v', v)), <comparator>), e -> e.v)`: sqlglot
  drops the order. No row collected gives NULL, as in DuckDB, not Spark's empty array.
- `date_diff('day', a, b)` -> `datediff(cast(b as date), cast(a as date))`: DuckDB counts day boundaries,
  Spark's `datediff(day, a, b)` whole 24-hour periods. Months, quarters, years, hours, minutes and
  seconds are counted as boundaries too, by arithmetic.
- `try_strptime(x, [f1, f2])` -> `coalesce(try_to_timestamp(x, j1), try_to_timestamp(x, j2))` and
  `strptime(x, f)` -> `to_timestamp(x, j)`, each format converted from strftime to Java's patterns.
- `a union all by name b` -> each side selected by name in one column order: Spark SQL has no `by name`.
  The columns of a side that is not a plain select are asked of `columns_of` (the runner asks Spark).
- `with x as materialized (...)` -> `with x as (...)`: a planner hint only.
- `hugeint` -> `decimal(38, 0)`: Spark has no 128-bit integer.
- `('0x' || digits)::bigint` -> `cast(conv(digits, 16, 10) as bigint)`: DuckDB reads the text as
  hexadecimal, Spark's cast would give NULL. The project's engine-independent hash (`portable_hash` in
  resources/sql.py, md5 digits read so) relies on it.
- `timezone(z, t at time zone 'UTC')` -> `from_utc_timestamp(t, z)`: the wall clock in z of a UTC time;
  `timezone(z, t)` (t a TIMESTAMP) -> `to_utc_timestamp(t, z)`: the UTC time of a wall clock in z.
- `jaro_winkler_similarity`, `levenshtein`, `damerau_levenshtein`, `hamming`, `strip_accents`,
  `json_merge_patch` (of two documents) -> `cdp_<name>`: the project's Java UDFs (resources/spark/udfs.py),
  equal to DuckDB's.
- The condition functions Spark names or counts otherwise: `prefix`/`suffix` -> `startswith`/`endswith`,
  `week` -> `weekofyear`, `dayofweek` (Sunday 0 in DuckDB, 1 in Spark), `list_position` (NULL, not 0, when
  absent), `list_extract`, `list_has_any`/`list_has_all`, `regexp_full_match` and `similar to` (anchored).
- `json_extract_string(j, [p1, p2])` -> `array(get_json_object(j, p1), ...)`, NULL when j is: sqlglot
  would pass the list as one path. `json_type(j, [p1, p2])` (and of one path) -> DuckDB's names of the
  values' types (`VARCHAR`, `ARRAY`, `OBJECT`, `NULL`, ...) from the schema of Spark's variant of j at each
  path (`schema_of_variant(try_variant_get(try_parse_json(j), p))`): Spark has no `json_type`. `strlen` ->
  `octet_length` (bytes in both; DuckDB's own `octet_length` takes only a BLOB, so the platform's SQL keeps
  `strlen`).
- `t.* replace (e as c)` -> t's columns listed with `e as c` in c's place, the columns asked of
  `columns_of` as for `union all by name`. (`* exclude (...)` is Spark's `* except (...)`, as sqlglot writes it.)
- `[f(x) for x in l if c(x)]` -> `transform(filter(l, x -> c(x)), x -> f(x))`; `range(a, b)` ->
  `filter(sequence(a, b), i -> i < b)`, empty when b <= a as DuckDB's is (sqlglot's `sequence(a, b - 1)`
  would count down).
- `sum(x order by k)` -> the values collected in that order (as for `list`) added one by one: the platform
  sums floating-point values in a fixed order so that a total does not change with the order rows arrive.
- `current_setting('TimeZone')` -> `current_timezone()`.
- `map {'k': v}` -> `map('k', v)`, and `map {...}[key]` (which sqlglot reads as a map of a subscripted
  struct) -> `try_element_at(map(...), key)`; `a rlike x = b rlike y` in parentheses, which Spark's
  grammar needs (sqlglot writes none).
- `create table t (columns...)`: `json` -> `string`, unsigned integers -> the next wider signed type
  (`ubigint` -> `decimal(20, 0)`), key constraints dropped (Spark enforces none).
- `update t set ... from s where c` and `delete from t using s where c` -> `MERGE INTO t USING s ON c WHEN
  MATCHED THEN UPDATE SET ... / DELETE`: Spark's statement for changing rows by a join. It runs on tables
  with row-level changes (Delta, Iceberg), not on the session's parquet tables; a row matched by several
  rows of s is an error there, where DuckDB takes one of them.

- `hash(a, ...)` -> `xxhash64(a, ...)` moved into DuckDB's range of unsigned 64-bit integers (as a
  decimal(20, 0)), `hash(t)` of a whole row as `xxhash64(t.*)`: the engines hash differently, so the
  platform keeps such values only within one engine's runs (blocking keys, change fingerprints); what must
  agree across engines is hashed with `portable_hash` (resources/sql.py).
- `row_number() over ()` -> `row_number() over (order by monotonically_increasing_id())`: Spark wants an
  order; the platform numbers rows without one only where any numbering gives the same result (graph
  vertices, blocks), which tests/test_spark_pipeline.py checks on identity's tables.

Refused with `UnsupportedConstruct` (the platform must not depend on them, or they have no equal):
`row_number()` over a partition without an order (which row gets which number is the engine's choice),
slices `s[a:b]`,
`date_diff` in weeks or smaller units than seconds, `age()`, `rowid` (Spark tables have no row ids),
`md5_number()` (a 128-bit integer Spark cannot hold), `json_merge_patch()` of more than two documents,
`current_setting` of anything but the time zone, a list comprehension over `(value, index)`,
`range(a, b, step)`; and the statements about DuckDB's own
files or keys: `copy ... to` (Spark writes a folder of part files), `describe` (a command on Spark, not a
query: ask the runner's `columns()`), `attach`, `detach`, `checkpoint`, `insert or replace` and `on
conflict` (no key is enforced), `returning`, and `create temp table` with column definitions (Spark's
temporary tables are views of a select).

Known differences left as they are, for want of types (the translation sees text, not a schema):
Spark's `collect_list` skips NULLs where DuckDB's `list` keeps them (the platform filters them out
first); `s[i]` on a string and `len(list)` are errors on Spark (write `substr` and `array_length`);
an ordered sum of integers keeps the values' type on Spark (an overflow fails) where DuckDB widens it to
128 bits; `json_type` names an integer from 2^63 to 2^64 - 1 `DOUBLE` on Spark (a decimal in its variant),
`UBIGINT` on DuckDB; and regular expressions are Java's, not RE2's, which differ in rare syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlglot
from sqlglot import exp

# The functions the project's Java UDFs provide, under the names they are registered with.
UDF_NAMES: dict[str, str] = {
    "jaro_winkler_similarity": "cdp_jaro_winkler_similarity",
    "levenshtein": "cdp_levenshtein",
    "damerau_levenshtein": "cdp_damerau_levenshtein",
    "hamming": "cdp_hamming",
    "strip_accents": "cdp_strip_accents",
    "json_merge_patch": "cdp_json_merge_patch",
}

ColumnsOf = Callable[[str], list[str]]


class UnsupportedConstruct(ValueError):
    """A DuckDB construct with no Spark translation of the same meaning; the message names it."""

    def __init__(self, construct: str, why: str) -> None:
        super().__init__(f"{construct} does not run on Spark: {why}")
        self.construct = construct


def to_spark(sql: str, columns_of: ColumnsOf | None = None) -> list[str]:
    """Each statement of `sql` (DuckDB's dialect, `;`-separated) as one Spark SQL statement.

    `columns_of(select)` returns the columns a Spark select produces; it is asked only for a side of a
    `union all by name` whose columns the statement itself does not list.
    """
    try:
        trees = [tree for tree in sqlglot.parse(sql, read="duckdb") if tree is not None]
    except sqlglot.errors.ParseError as exc:
        raise UnsupportedConstruct("a statement sqlglot cannot parse", str(exc).split("\n")[0]) from None
    return [_rewrite(_statement(tree), columns_of).sql(dialect="spark") for tree in trees]


def to_spark_one(sql: str, columns_of: ColumnsOf | None = None) -> str:
    """The one Spark statement of a single DuckDB statement (or expression, for a condition)."""
    statements = to_spark(sql, columns_of)
    if len(statements) != 1:
        raise ValueError(f"expected one statement, found {len(statements)}")
    return statements[0]


def condition_to_spark(condition: str) -> str:
    """A boolean expression (a segment's `where`) in Spark SQL; raises UnsupportedConstruct."""
    try:
        tree = sqlglot.parse_one(f"select 1 where {condition}", read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise UnsupportedConstruct("a condition sqlglot cannot parse", str(exc).split("\n")[0]) from None
    return _rewrite(tree, None).args["where"].this.sql(dialect="spark")


def _rewrite(tree: exp.Expression, columns_of: ColumnsOf | None) -> exp.Expression:
    def fix(node: exp.Expression) -> exp.Expression:
        for rule in _RULES:
            replaced = rule(node)
            if replaced is not None:
                return _rewrite_children(replaced)
        if isinstance(node, exp.Union) and node.args.get("by_name"):
            return _rewrite_children(_union_by_name(node, columns_of))
        if isinstance(node, exp.Select) and any(_star_replace(e) for e in node.expressions):
            return _rewrite_children(_expand_star_replace(node, columns_of))
        return node

    def _rewrite_children(node: exp.Expression) -> exp.Expression:
        # A replacement holds copies of the original's operands, which the walk does not visit again.
        for child in list(node.iter_expressions()):
            child.replace(_rewrite(child, columns_of))
        return node

    return tree.transform(fix)


# Rules: each returns a replacement for the node it handles, or None. -------------------------------------


def _function_name(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return None


def _refused(node: exp.Expression) -> exp.Expression | None:
    if (
        isinstance(node, exp.Window)
        and isinstance(node.this, exp.RowNumber)
        and node.args.get("partition_by")
        and not node.args.get("order")
    ):
        raise UnsupportedConstruct(
            "row_number() over a partition without an order", "which row gets which number would be the engine's choice"
        )
    if isinstance(node, exp.Bracket) and any(isinstance(e, exp.Slice) for e in node.expressions):
        raise UnsupportedConstruct("a slice s[a:b]", "DuckDB's 1-based inclusive slices are not translated; use substr")
    return None


def _engine_hash(node: exp.Expression) -> exp.Expression | None:
    """`hash(a, ...)` -> Spark's 64-bit `xxhash64(a, ...)` moved into DuckDB's range (an unsigned 64-bit
    integer, here a decimal(20, 0)), so sums, remainders and comparisons behave alike. A table alias among
    the arguments (DuckDB's `hash(t)`, the whole row) becomes the row's columns, `t.*`."""
    if _function_name(node) != "hash":
        return None
    aliases = _table_aliases(node)
    arguments = [
        exp.Column(this=exp.Star(), table=exp.to_identifier(a.name))
        if isinstance(a, exp.Column) and not a.table and a.name.lower() in aliases
        else a.copy()
        for a in node.expressions
    ]
    hashed = exp.cast(exp.Anonymous(this="xxhash64", expressions=arguments), "decimal(20, 0)")
    return exp.paren(exp.Add(this=hashed, expression=exp.Literal.number(2**63)))


def _table_aliases(node: exp.Expression) -> set[str]:
    """The names the tables of the select around `node` go by."""
    select = node.find_ancestor(exp.Select)
    if select is None:
        return set()
    sources = [select.args.get("from_"), *(select.args.get("joins") or [])]
    return {s.this.alias_or_name.lower() for s in sources if s is not None and s.this.alias_or_name}


def _any_numbering(node: exp.Expression) -> exp.Expression | None:
    """`row_number() over ()` -> `row_number() over (order by monotonically_increasing_id())`: Spark wants
    an order, and the platform numbers rows without one only where any numbering gives the same result
    (graph vertices, blocks), as the parity suite checks."""
    if not (isinstance(node, exp.Window) and isinstance(node.this, exp.RowNumber)):
        return None
    if node.args.get("order") or node.args.get("partition_by"):
        return None
    order = exp.Order(expressions=[exp.Ordered(this=exp.Anonymous(this="monotonically_increasing_id"))])
    return exp.Window(this=node.this.copy(), order=order)


def _similarity_udf(node: exp.Expression) -> exp.Expression | None:
    name = _function_name(node)
    if name in UDF_NAMES:
        return exp.Anonymous(this=UDF_NAMES[name], expressions=[e.copy() for e in node.expressions])
    # sqlglot parses these two into its own nodes (and would emit Spark's levenshtein, or a name Spark lacks).
    typed = {exp.Levenshtein: "levenshtein", exp.JarowinklerSimilarity: "jaro_winkler_similarity"}
    for kind, duckdb_name in typed.items():
        if type(node) is kind:
            operands = [node.this.copy(), node.expression.copy()]
            return exp.Anonymous(this=UDF_NAMES[duckdb_name], expressions=operands)
    return None


def _ordered_key(ordered: list[exp.Ordered]) -> tuple[exp.Expression, bool]:
    """A struct whose natural order is the ORDER BY's with DuckDB's null placement (NULLS LAST unless
    said), and whether it is descending; for keys all in one direction (mixed ones take a comparator)."""
    descending = bool(ordered[0].args.get("desc"))
    fields: list[exp.Expression] = []
    for o in ordered:
        nulls_first = bool(o.args.get("nulls_first"))
        key = o.this
        # Ascending: a key that is NULL must sort after (flag true), so the flag is `is null`;
        # descending compares the other way round.
        flag: exp.Expression = exp.Is(this=key.copy(), expression=exp.Null())
        if nulls_first != descending:
            flag = exp.Not(this=flag)
        fields += [flag, key.copy()]
    return exp.func("struct", *fields), descending


def _first_ordered(node: exp.Expression) -> exp.Expression | None:
    where = node.expression if isinstance(node, exp.Filter) else None
    aggregate = node.this if isinstance(node, exp.Filter) else node
    if not isinstance(aggregate, exp.First) or not isinstance(aggregate.this, exp.Order):
        return None
    order = aggregate.this
    if len({bool(o.args.get("desc")) for o in order.expressions}) > 1:
        # Mixed directions: sort the collected rows with a comparator and take the first.
        sorted_entries, _ = _sorted_entries(order.this, order.expressions, where)
        first = exp.func("try_element_at", sorted_entries, exp.Literal.number(1))
        return exp.Dot(this=first, expression=exp.to_identifier("v"))
    key, descending = _ordered_key(order.expressions)
    picked = exp.func("max_by" if descending else "min_by", order.this.copy(), key)
    return picked if where is None else exp.Filter(this=picked, expression=where.copy())


def _sorted_entries(
    value: exp.Expression, keys: list[exp.Ordered], where: exp.Expression | None
) -> tuple[exp.Expression, exp.Expression]:
    """`array_sort` of the collected `named_struct(k0, k1, ..., v)` rows by a comparator that follows the
    ORDER BY key by key (each in its direction, NULLs last unless said), and the collect_list itself."""
    fields: list[exp.Expression] = []
    for i, o in enumerate(keys):
        fields += [exp.Literal.string(f"k{i}"), o.this.copy()]
    entry = exp.func("named_struct", *fields, exp.Literal.string("v"), value.copy())
    collected: exp.Expression = exp.func("collect_list", entry)
    if where is not None:
        collected = exp.Filter(this=collected, expression=where.copy())
    steps = []
    for i, o in enumerate(keys):
        left, right = exp.column(f"k{i}", table="__l"), exp.column(f"k{i}", table="__r")
        nulls_first = bool(o.args.get("nulls_first"))
        before, after = exp.Literal.number(-1), exp.Literal.number(1)
        lower_first = not o.args.get("desc")
        step = exp.Case(
            ifs=[
                exp.If(this=exp.NullSafeEQ(this=left.copy(), expression=right.copy()), true=exp.Literal.number(0)),
                exp.If(this=exp.Is(this=left.copy(), expression=exp.Null()), true=before if nulls_first else after),
                exp.If(this=exp.Is(this=right.copy(), expression=exp.Null()), true=after if nulls_first else before),
                exp.If(this=exp.LT(this=left, expression=right), true=before if lower_first else after),
            ],
            default=after if lower_first else before,
        )
        steps.append(step)
    comparator = exp.Literal.number(0)
    for step in reversed(steps):
        comparator = exp.Case(
            ifs=[exp.If(this=exp.NEQ(this=step.copy(), expression=exp.Literal.number(0)), true=step)],
            default=comparator,
        )
    compare = exp.Lambda(this=comparator, expressions=[exp.to_identifier("__l"), exp.to_identifier("__r")])
    return exp.func("array_sort", collected.copy(), compare), collected


def _list(node: exp.Expression) -> exp.Expression | None:
    """`list(...)` (ordered or not, distinct or not, filtered or not) as Spark's collect_list, sorted as
    asked, and NULL when no row is collected, as DuckDB gives it."""
    # A FILTER clause goes on the collect_list inside: Spark allows it only on the aggregate itself.
    where = node.expression if isinstance(node, exp.Filter) else None
    aggregate = node.this if isinstance(node, exp.Filter) else node
    if not isinstance(aggregate, exp.ArrayAgg):
        return None

    def collect(value: exp.Expression) -> exp.Expression:
        collected = exp.func("collect_list", value)
        return collected if where is None else exp.Filter(this=collected, expression=where.copy())

    order = aggregate.this if isinstance(aggregate.this, exp.Order) else None
    value = order.this if order is not None else aggregate.this
    distinct = isinstance(value, exp.Distinct)
    if distinct:
        if len(value.expressions) != 1:
            raise UnsupportedConstruct("list(distinct ...) of several values", "aggregate one value")
        value = value.expressions[0]
    keys = order.expressions if order is not None else []
    if not keys or (len(keys) == 1 and keys[0].this == value):
        collected = collect(value.copy())
        result = exp.func("array_distinct", collected.copy()) if distinct else collected.copy()
        if keys and keys[0].args.get("desc"):
            result = exp.func("reverse", exp.func("array_sort", result))
        elif keys and keys[0].args.get("nulls_first"):
            raise UnsupportedConstruct("list(... order by x nulls first)", "Spark's array_sort puts NULLs last")
        elif keys:
            result = exp.func("array_sort", result)
    elif distinct:
        raise UnsupportedConstruct("list(distinct x order by another key)", "order a distinct list by its values")
    else:
        sorted_entries, collected = _sorted_entries(value, keys, where)
        entry_value = exp.Lambda(this=exp.column("v", table="__e"), expressions=[exp.to_identifier("__e")])
        result = exp.func("transform", sorted_entries, entry_value)
    empty = exp.EQ(this=exp.func("size", collected), expression=exp.Literal.number(0))
    return exp.Case(ifs=[exp.If(this=empty, true=exp.Null())], default=result)


def _one_based_index(node: exp.Expression) -> exp.Expression | None:
    if not isinstance(node, exp.Bracket) or len(node.expressions) != 1:
        return None
    index = node.expressions[0]
    if isinstance(index, exp.Literal) and index.is_string:
        return None  # a map key or struct field: sqlglot's translation stands
    # sqlglot stores an integer literal made 0-based (also a negative one, wrongly); anything else as written.
    literal = index.this if isinstance(index, exp.Neg) else index
    if isinstance(literal, exp.Literal) and literal.is_int:
        stored = -int(literal.this) if isinstance(index, exp.Neg) else int(literal.this)
        written = stored + 1
        if written == 0:
            return exp.Null()
        index = exp.Literal.number(written) if written > 0 else exp.Neg(this=exp.Literal.number(-written))
    return exp.func("try_element_at", node.this.copy(), index.copy())


_DATE_PARTS_MONTHS = {"YEAR": 12, "YEARS": 12, "MONTH": 1, "MONTHS": 1, "QUARTER": 3, "QUARTERS": 3}
_DATE_PARTS_SECONDS = {"HOUR": 3600, "HOURS": 3600, "MINUTE": 60, "MINUTES": 60, "SECOND": 1, "SECONDS": 1}


def _date_diff(node: exp.Expression) -> exp.Expression | None:
    if not isinstance(node, exp.DateDiff):
        return None
    unit = (node.unit.name if node.unit is not None else "DAY").upper()
    start, end = node.expression, node.this
    if unit in ("DAY", "DAYS"):
        return exp.func("datediff", exp.cast(end.copy(), "date"), exp.cast(start.copy(), "date"))
    if unit in _DATE_PARTS_MONTHS:
        months = _DATE_PARTS_MONTHS[unit]

        def index(t: exp.Expression) -> exp.Expression:
            count = exp.Add(
                this=exp.Mul(this=exp.func("year", t.copy()), expression=exp.Literal.number(12)),
                expression=exp.Sub(this=exp.func("month", t.copy()), expression=exp.Literal.number(1)),
            )
            return count if months == 1 else exp.IntDiv(this=exp.paren(count), expression=exp.Literal.number(months))

        return exp.Sub(this=exp.paren(index(end)), expression=exp.paren(index(start)))
    if unit in _DATE_PARTS_SECONDS:
        seconds = _DATE_PARTS_SECONDS[unit]

        def whole(t: exp.Expression) -> exp.Expression:
            # Seconds since the epoch, floored to the unit: counts boundaries crossed, as DuckDB does.
            epoch = exp.func("unix_seconds", exp.cast(t.copy(), "timestamp"))
            floored = exp.func("floor", exp.Div(this=epoch, expression=exp.Literal.number(seconds)))
            return exp.cast(floored, "bigint")

        return exp.Sub(this=exp.paren(whole(end)), expression=exp.paren(whole(start)))
    raise UnsupportedConstruct(
        f"date_diff('{unit.lower()}', ...)", "only year, quarter, month, day, hour, minute and second are counted"
    )


_STRFTIME_TO_JAVA = {
    "%Y": "yyyy",
    "%y": "yy",
    "%m": "M",
    "%d": "d",
    "%H": "H",
    "%I": "h",
    "%M": "m",
    "%S": "s",
    "%f": "SSSSSS",
    "%g": "SSS",
    "%p": "a",
    "%b": "MMM",
    "%B": "MMMM",
    "%a": "EEE",
    "%A": "EEEE",
    "%j": "D",
    "%z": "XX",
    "%Z": "z",
    "%%": "%",
}
_FIXED_WIDTH = {"%m": "MM", "%d": "dd", "%H": "HH", "%I": "hh", "%M": "mm", "%S": "ss", "%j": "DDD"}


def java_format(strftime: str) -> str:
    """A strftime format (as DuckDB's strptime reads it) as a Java DateTimeFormatter pattern.

    DuckDB reads `%m` as one or two digits; so does Java's `M`, but only when a separator follows, so a
    directive next to another number is made fixed-width (`%Y%m%d` -> `yyyyMMdd`)."""
    tokens = re.findall(r"%.|[^%]+", strftime)
    out: list[str] = []
    for i, token in enumerate(tokens):
        if token.startswith("%"):
            if token not in _STRFTIME_TO_JAVA:
                raise UnsupportedConstruct(f"the strptime directive {token}", "no Java pattern letter is its equal")
            adjacent = any(_is_number(tokens[n]) for n in (i - 1, i + 1) if 0 <= n < len(tokens))
            out.append(_FIXED_WIDTH.get(token, _STRFTIME_TO_JAVA[token]) if adjacent else _STRFTIME_TO_JAVA[token])
        else:
            # Letters are pattern letters in Java: quote literal text ('' is a quote).
            out.append("'" + token.replace("'", "''") + "'" if re.search(r"[A-Za-z']", token) else token)
    return "".join(out)


def _is_number(token: str) -> bool:
    return token.startswith("%") and token not in ("%p", "%b", "%B", "%a", "%A", "%z", "%Z", "%%")


def _strptime(node: exp.Expression) -> exp.Expression | None:
    name = _function_name(node)
    if isinstance(node, exp.StrToTime):
        name, args = "strptime", [node.this, node.args.get("format")]
        if node.args.get("safe"):
            name = "try_strptime"
    elif name in ("strptime", "try_strptime"):
        args = list(node.expressions)
    else:
        return None
    value, formats = args[0], args[1]
    listed = formats.expressions if isinstance(formats, exp.Array) else [formats]
    if not all(isinstance(f, exp.Literal) and f.is_string for f in listed):
        raise UnsupportedConstruct(f"{name} with a format that is not a literal", "formats are converted in advance")
    function = "try_to_timestamp" if name == "try_strptime" else "to_timestamp"
    parsed = [exp.func(function, value.copy(), exp.Literal.string(java_format(f.this))) for f in listed]
    if name == "strptime" and len(parsed) > 1:
        parsed = [exp.func("try_to_timestamp", value.copy(), p.expressions[0]) for p in parsed]
        return exp.func("coalesce", *parsed)
    return parsed[0] if len(parsed) == 1 else exp.func("coalesce", *parsed)


def _timezone(node: exp.Expression) -> exp.Expression | None:
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.TIMESTAMPTZ:
        # An instant: Spark's TIMESTAMP is TIMESTAMP_NTZ in the platform's sessions, whose cast drops an offset.
        return exp.DataType.build("timestamp_ltz", dialect="spark")
    if _function_name(node) != "timezone" or len(node.expressions) != 2:
        return None
    zone, value = node.expressions
    if isinstance(zone, exp.Literal) and zone.this.upper() == "UTC" and not isinstance(value, exp.AtTimeZone):
        # The UTC wall clock of an instant (or of a UTC wall clock): the session's time zone is UTC.
        return exp.cast(value.copy(), exp.DataType.build("timestamp_ntz", dialect="spark"))
    if isinstance(value, exp.AtTimeZone):
        inner = value.args.get("zone")
        if not (isinstance(inner, exp.Literal) and inner.this.upper() == "UTC"):
            raise UnsupportedConstruct("timezone(z, t at time zone <not UTC>)", "write the time in UTC first")
        return exp.func("from_utc_timestamp", value.this.copy(), zone.copy())
    return exp.func("to_utc_timestamp", value.copy(), zone.copy())


def _hex_cast(node: exp.Expression) -> exp.Expression | None:
    """`('0x' || digits)::bigint` (DuckDB reads a 0x-prefixed text as hexadecimal; the portable hash of
    resources/sql.py is spelled so) -> `cast(conv(digits, 16, 10) as bigint)`: Spark's cast gives NULL."""
    if not isinstance(node, exp.Cast) or not node.to.is_type(*exp.DataType.INTEGER_TYPES):
        return None
    text = node.this.unnest()
    prefix = text.this if isinstance(text, exp.DPipe) else None
    if not (isinstance(prefix, exp.Literal) and prefix.is_string and prefix.this.lower() == "0x"):
        return None
    digits = exp.func("conv", text.expression.copy(), exp.Literal.number(16), exp.Literal.number(10))
    return exp.cast(digits, node.to.copy())


def _materialized_cte(node: exp.Expression) -> exp.Expression | None:
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        node = node.copy()
        node.set("materialized", None)
        return node
    return None


def _hugeint(node: exp.Expression) -> exp.Expression | None:
    if isinstance(node, exp.DataType) and node.this in (exp.DataType.Type.INT128, exp.DataType.Type.UINT128):
        return exp.DataType.build("decimal(38, 0)")
    return None


def _condition_functions(node: exp.Expression) -> exp.Expression | None:
    """The functions segment conditions may use (resources/conditions.py) that Spark names or counts
    differently."""
    name = _function_name(node)
    args = node.expressions if name else []
    if name == "prefix":
        return exp.func("startswith", *[a.copy() for a in args])
    if name == "suffix":
        return exp.func("endswith", *[a.copy() for a in args])
    if name == "age":
        raise UnsupportedConstruct("age()", "Spark has no age(); compare with date_diff('year', ...) instead")
    if name == "list_position":
        # Spark's array_position gives 0 for an absent value, DuckDB NULL.
        return exp.func("nullif", exp.func("array_position", *[a.copy() for a in args]), exp.Literal.number(0))
    if name == "list_extract":
        return exp.func("try_element_at", *[a.copy() for a in args])
    if name == "list_has_all":
        haystack, needles = args
        missing = exp.func("array_except", needles.copy(), haystack.copy())
        return exp.EQ(this=exp.func("size", missing), expression=exp.Literal.number(0))
    if isinstance(node, exp.ArrayOverlaps):
        return exp.func("arrays_overlap", node.this.copy(), node.expression.copy())
    if isinstance(node, exp.Week):
        return exp.func("weekofyear", node.this.copy())  # both ISO 8601 weeks
    if isinstance(node, exp.DayOfWeek):
        # DuckDB counts Sunday as 0, Spark as 1.
        return exp.Sub(
            this=exp.Anonymous(this="dayofweek", expressions=[node.this.copy()]), expression=exp.Literal.number(1)
        )
    if isinstance(node, exp.RegexpFullMatch | exp.SimilarTo):
        anchored = exp.func("concat", exp.Literal.string("^(?:"), node.expression.copy(), exp.Literal.string(")$"))
        return exp.RegexpLike(this=node.this.copy(), expression=anchored)
    return None


# Statements: DuckDB's DML and DDL in Spark's forms, or refused. ---------------------------------------------

# DuckDB-only statements about the database file itself, with the reason they have no Spark equal.
_DUCKDB_ONLY = {
    exp.Attach: ("attach", "Spark has no database files to attach; a read snapshot is a DuckDB file"),
    exp.Detach: ("detach", "Spark has no database files to attach; a read snapshot is a DuckDB file"),
    exp.Copy: ("copy ... to", "Spark writes a folder of part files, not one file: write through the DataFrame writer"),
    exp.Describe: ("describe", "Spark's DESCRIBE is a command, not a query; ask the runner's columns() instead"),
}


def _statement(tree: exp.Expression) -> exp.Expression:
    """A whole statement as Spark takes it: `update ... from` and `delete ... using` as MERGE INTO, column
    types Spark lacks in `create table`, and the statements that have no Spark equal refused by name."""
    bare = tree.this if isinstance(tree, exp.Alias) else tree  # `checkpoint db` reads as a column and alias
    if isinstance(bare, exp.Column) and bare.name.lower() == "checkpoint":
        raise UnsupportedConstruct("checkpoint", "Spark has no write-ahead log to fold into a database file")
    for kind, (construct, why) in _DUCKDB_ONLY.items():
        if isinstance(tree, kind) or tree.find(kind) is not None:
            raise UnsupportedConstruct(construct, why)
    if isinstance(tree, exp.Insert | exp.Update | exp.Delete) and tree.args.get("returning") is not None:
        raise UnsupportedConstruct("returning", "Spark's DML returns no rows: read the changed rows after the change")
    if isinstance(tree, exp.Insert) and (tree.args.get("alternative") or tree.args.get("conflict") is not None):
        raise UnsupportedConstruct(
            "insert or replace / on conflict",
            "Spark tables enforce no key: keep such bookkeeping tables in DuckDB, or write a MERGE INTO",
        )
    if isinstance(tree, exp.Update) and tree.args.get("from_") is not None:
        return _merge(tree, tree.args["from_"].this, "update")
    if isinstance(tree, exp.Delete) and tree.args.get("using"):
        if len(tree.args["using"]) != 1:
            raise UnsupportedConstruct("delete ... using several tables", "join them in one subquery")
        return _merge(tree, tree.args["using"][0], "delete")
    if isinstance(tree, exp.Create) and isinstance(tree.this, exp.Schema):
        return _create_with_columns(tree)
    return tree


def _merge(tree: exp.Update | exp.Delete, source: exp.Expression, action: str) -> exp.Expression:
    """`update t set ... from s where c` / `delete from t using s where c` -> `MERGE INTO t USING s ON c WHEN
    MATCHED THEN UPDATE SET ... / DELETE`: Spark's one statement that changes rows by a join. It runs on tables
    that support row-level changes (Delta, Iceberg); a row of t matched by several of s is an error there, where
    DuckDB picks one of them."""
    where = tree.args.get("where")
    if where is None:
        raise UnsupportedConstruct(f"{action} ... from without a where", "say how the rows of the two tables match")
    if isinstance(source, exp.Join) or (isinstance(source, exp.Table) and source.args.get("joins")):
        raise UnsupportedConstruct(f"{action} ... from several tables", "join them in one subquery")
    if action == "update":
        then: exp.Expression = exp.Update(expressions=[e.copy() for e in tree.expressions])
    else:
        then = exp.var("DELETE")
    when = exp.When(matched=True, then=then)
    return exp.Merge(
        this=tree.this.copy(), using=source.copy(), on=where.this.copy(), whens=exp.Whens(expressions=[when])
    )


# DuckDB column types Spark lacks, as the Spark type that holds every value.
_COLUMN_TYPES = {
    exp.DataType.Type.JSON: "string",
    exp.DataType.Type.UBIGINT: "decimal(20, 0)",
    exp.DataType.Type.UINT: "bigint",
    exp.DataType.Type.USMALLINT: "int",
    exp.DataType.Type.UTINYINT: "smallint",
}


def _create_with_columns(tree: exp.Create) -> exp.Expression:
    """`create table t (columns...)`: types Spark lacks widened, key constraints dropped (Spark enforces
    none; the statements that rely on one, insert or replace and on conflict, are refused)."""
    if tree.args.get("properties") is not None and tree.find(exp.TemporaryProperty) is not None:
        raise UnsupportedConstruct(
            "create temporary table with column definitions",
            "Spark's temporary tables are views of a select: create it from one (create_table_as, temporary)",
        )
    tree = tree.copy()
    schema = tree.this
    for definition in list(schema.expressions):
        if isinstance(definition, exp.PrimaryKey | exp.UniqueColumnConstraint):
            definition.pop()
            continue
        if isinstance(definition, exp.ColumnDef):
            constraints = [
                c
                for c in definition.args.get("constraints") or []
                if not isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint | exp.UniqueColumnConstraint)
            ]
            definition.set("constraints", constraints)
    for data_type in tree.find_all(exp.DataType):
        if data_type.this in _COLUMN_TYPES:
            data_type.replace(exp.DataType.build(_COLUMN_TYPES[data_type.this], dialect="spark"))
    return tree


# Expressions ------------------------------------------------------------------------------------------------


def _functions(node: exp.Expression) -> exp.Expression | None:
    """Functions Spark names otherwise or lacks."""
    name = _function_name(node)
    if name == "strlen":  # bytes in both
        return exp.func("octet_length", *[a.copy() for a in node.expressions])
    if name == "list_zip":  # a list of (a[i], b[i]) structs, the shorter list padded with NULL in both
        return exp.func("arrays_zip", *[a.copy() for a in node.expressions])
    if name == "current_setting":
        setting = node.expressions[0] if node.expressions else None
        if isinstance(setting, exp.Literal) and setting.this.lower() == "timezone":
            return exp.func("current_timezone")
        asked = setting.sql() if setting is not None else ""
        raise UnsupportedConstruct(f"current_setting({asked})", "only the TimeZone is asked of Spark")
    if name == "json_merge_patch" and len(node.expressions) != 2:
        raise UnsupportedConstruct(
            "json_merge_patch() of more than two documents", "the project's UDF merges one patch at a time"
        )
    if name == "md5_number":
        raise UnsupportedConstruct(
            "md5_number()", "Spark has no 128-bit integer to hold it; use portable_hash (resources/sql.py)"
        )
    if isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier) and node.this.name.lower() == "rowid":
        raise UnsupportedConstruct(
            "rowid", "Spark tables have no row ids: number the rows with row_number() over (order by a key)"
        )
    return None


def _json_paths(node: exp.Expression) -> exp.Expression | None:
    """`json_extract_string(j, [p1, p2])` -> `array(get_json_object(j, p1), get_json_object(j, p2))` (NULL
    when j is): sqlglot passes the list as one path. Each path is converted as sqlglot converts a single one."""
    if not isinstance(node, exp.JSONExtractScalar | exp.JSONExtract) or not isinstance(node.expression, exp.Array):
        return None
    name = "json_extract_string" if isinstance(node, exp.JSONExtractScalar) else "json_extract"
    if name == "json_extract":
        raise UnsupportedConstruct("json_extract with a list of paths", "extract each path as a string")
    paths = node.expression.expressions
    if not all(isinstance(p, exp.Literal) and p.is_string for p in paths):
        raise UnsupportedConstruct(f"{name} with a list of paths that are not literals", "paths are converted")
    extracted = []
    for path in paths:
        one = sqlglot.parse_one(f"{name}(__json, {path.sql(dialect='duckdb')})", read="duckdb")
        one.this.replace(node.this.copy())
        extracted.append(one)
    # No document, no list (not a list of NULLs).
    missing = exp.Is(this=node.this.copy(), expression=exp.Null())
    return exp.Case(ifs=[exp.If(this=missing, true=exp.Null())], default=exp.Array(expressions=extracted))


# DuckDB's name of the type of JSON value `__v` (a variant), from the first word of Spark's schema of it
# (`OBJECT<a: STRING>`, `DECIMAL(2,1)`): a number with a fraction or an exponent is a DOUBLE, an integer a
# UBIGINT, or a BIGINT when negative.
_JSON_TYPE_NAME = """case split_part(split_part(schema_of_variant(__v), '<', 1), '(', 1)
    when 'STRING' then 'VARCHAR' when 'VOID' then 'NULL' when 'BOOLEAN' then 'BOOLEAN' when 'ARRAY' then 'ARRAY'
    when 'OBJECT' then 'OBJECT' when 'DECIMAL' then 'DOUBLE' when 'DOUBLE' then 'DOUBLE' when 'FLOAT' then 'DOUBLE'
    else case when __v::double < 0 then 'BIGINT' when __v::double >= 0 then 'UBIGINT' end end"""


def _json_types(node: exp.Expression) -> exp.Expression | None:
    """`json_type(j, p)` -> DuckDB's name of the type of the value at path p (`VARCHAR`, `ARRAY`, `OBJECT`,
    `NULL` for JSON's null, ...; NULL where there is none), from Spark's variant of j (`try_parse_json`) at p;
    `json_type(j, [p1, p2])` -> the list of them, NULL when j is. Paths are converted as `_json_paths`
    converts them."""
    if not isinstance(node, exp.JSONType) or node.expression is None:
        return None
    listed = isinstance(node.expression, exp.Array)
    paths = node.expression.expressions if listed else [node.expression]
    if not all(isinstance(p, exp.Literal) and p.is_string for p in paths):
        raise UnsupportedConstruct("json_type with paths that are not literals", "paths are converted")
    kinds = []
    for path in paths:
        converted = sqlglot.parse_one(f"json_extract_string(__json, {path.sql(dialect='duckdb')})", read="duckdb")
        document = exp.Anonymous(this="try_parse_json", expressions=[node.this.copy()])
        value = exp.Anonymous(this="try_variant_get", expressions=[document, converted.expression])
        kind = sqlglot.parse_one(_JSON_TYPE_NAME, read="duckdb")
        for column in list(kind.find_all(exp.Column)):
            column.replace(value.copy())
        kinds.append(kind)
    if not listed:
        return kinds[0]
    missing = exp.Is(this=node.this.copy(), expression=exp.Null())
    return exp.Case(ifs=[exp.If(this=missing, true=exp.Null())], default=exp.Array(expressions=kinds))


def _comprehension(node: exp.Expression) -> exp.Expression | None:
    """`[f(x) for x in l if c(x)]` -> `transform(filter(l, x -> c(x)), x -> f(x))`."""
    if not isinstance(node, exp.Array) or len(node.expressions) != 1:
        return None
    comprehension = node.expressions[0]
    if not isinstance(comprehension, exp.Comprehension):
        return None
    variable = comprehension.expression
    if comprehension.args.get("position") is not None:
        raise UnsupportedConstruct("a list comprehension over (value, index)", "Spark's index counts from 0")
    items = comprehension.args["iterator"].copy()
    if comprehension.args.get("condition") is not None:
        keep = exp.Lambda(this=comprehension.args["condition"].copy(), expressions=[variable.copy()])
        items = exp.func("filter", items, keep)
    value = comprehension.this
    if isinstance(value, exp.Column) and value.name == variable.name and not value.table:
        return items
    return exp.func("transform", items, exp.Lambda(this=value.copy(), expressions=[variable.copy()]))


def _range(node: exp.Expression) -> exp.Expression | None:
    """`range(a, b)` (b excluded) -> the values of `sequence(a, b)` below b: sqlglot's `sequence(a, b - 1)`
    counts down when b <= a, where DuckDB's range is empty."""
    if not isinstance(node, exp.GenerateSeries) or not node.args.get("is_end_exclusive"):
        return None
    if node.args.get("step") is not None:
        raise UnsupportedConstruct("range(a, b, step)", "write the sequence with its last value")
    start, end = node.args["start"], node.args["end"]
    below = exp.Lambda(
        this=exp.LT(this=exp.column("__i"), expression=end.copy()), expressions=[exp.to_identifier("__i")]
    )
    return exp.func("filter", exp.func("sequence", start.copy(), end.copy()), below)


def _ordered_sum(node: exp.Expression) -> exp.Expression | None:
    """`sum(x order by k)` -> the values collected in that order (as `list(x order by k)` is) added one by one
    from the first: floating-point addition depends on the order, which is why the platform fixes it. The
    sum has the values' own type (DuckDB widens integers to 128 bits; Spark fails on overflow)."""
    where = node.expression if isinstance(node, exp.Filter) else None
    aggregate = node.this if isinstance(node, exp.Filter) else node
    if not isinstance(aggregate, exp.Sum) or not isinstance(aggregate.this, exp.Order):
        return None
    listed: exp.Expression = exp.ArrayAgg(this=aggregate.this.copy())
    if where is not None:
        listed = exp.Filter(this=listed, expression=where.copy())
    values = exp.to_identifier("__s")
    add = exp.Lambda(
        this=exp.Add(this=exp.column("__a"), expression=exp.column("__v")),
        expressions=[exp.to_identifier("__a"), exp.to_identifier("__v")],
    )
    rest = exp.func(
        "slice", exp.column(values.copy()), exp.Literal.number(2), exp.func("size", exp.column(values.copy()))
    )
    first = exp.func("try_element_at", exp.column(values.copy()), exp.Literal.number(1))
    total = exp.Lambda(this=exp.func("aggregate", rest, first, add), expressions=[values])
    # The sorted list bound once, as a lambda's argument, rather than spelled out three times.
    once = exp.func("transform", exp.Array(expressions=[_list(listed)]), total)
    return exp.func("try_element_at", once, exp.Literal.number(1))


def _map_literal(node: exp.Expression) -> exp.Expression | None:
    """`map {'k': v, ...}` -> `map('k', v, ...)`, and `map {...}[key]` (which sqlglot reads as a map of a
    subscripted struct) -> `try_element_at(map(...), key)`: the value, or NULL for an absent key."""
    if not isinstance(node, exp.ToMap):
        return None
    inner = node.this
    key = None
    if isinstance(inner, exp.Bracket) and len(inner.expressions) == 1:
        inner, key = inner.this, inner.expressions[0]
    if not isinstance(inner, exp.Struct) or not all(isinstance(e, exp.PropertyEQ) for e in inner.expressions):
        return None
    pairs = [part.copy() for e in inner.expressions for part in (e.this, e.expression)]
    built = exp.Anonymous(this="map", expressions=pairs)
    return built if key is None else exp.func("try_element_at", built, key.copy())


def _compared_predicates(node: exp.Expression) -> exp.Expression | None:
    """`a rlike x = b rlike y`: Spark's grammar binds RLIKE and LIKE looser than `=`, so a predicate compared
    with another is put in parentheses."""
    if not isinstance(node, exp.EQ | exp.NEQ | exp.NullSafeEQ | exp.NullSafeNEQ):
        return None
    operands = (node.this, node.expression)
    if not any(isinstance(o, exp.RegexpLike | exp.Like | exp.ILike) for o in operands):
        return None
    node = node.copy()
    for side in ("this", "expression"):
        operand = node.args[side]
        if isinstance(operand, exp.RegexpLike | exp.Like | exp.ILike):
            node.set(side, exp.Paren(this=operand))
    return node


def _star_replace(node: exp.Expression) -> bool:
    star = node.this if isinstance(node, exp.Column) else node
    return isinstance(star, exp.Star) and bool(star.args.get("replace"))


def _expand_star_replace(select: exp.Select, columns_of: ColumnsOf | None) -> exp.Select:
    """`select t.* replace (e as c)` -> `t`'s columns listed, `e as c` in c's place: Spark's star has no
    REPLACE. The columns are asked of `columns_of` (the runner asks Spark)."""
    if columns_of is None:
        raise UnsupportedConstruct(
            "* replace (...)", "list the columns, or run it through SparkSql, which looks them up"
        )
    select = select.copy()
    listed: list[exp.Expression] = []
    for e in select.expressions:
        if not _star_replace(e):
            listed.append(e)
            continue
        star = e.this if isinstance(e, exp.Column) else e
        table = e.args.get("table") if isinstance(e, exp.Column) else None
        replaced = {r.alias_or_name.lower(): r for r in star.args["replace"]}
        plain = exp.Star(except_=[x.copy() for x in star.args.get("except_") or []] or None)
        ask = select.copy()
        ask.set("expressions", [exp.Column(this=plain, table=table.copy()) if table else plain])
        for modifier in ("where", "group", "having", "qualify", "order", "limit", "offset"):
            ask.set(modifier, None)
        for name in columns_of(_rewrite(ask, columns_of).sql(dialect="spark")):
            if name.lower() in replaced:
                listed.append(replaced[name.lower()].copy())
            else:
                listed.append(exp.column(name, table=table.name if table else None, quoted=True))
    select.set("expressions", listed)
    return select


def _json_values(node: exp.Expression) -> exp.Expression | None:
    """JSON is text on Spark: `x::json` of text is the text itself (Spark's `to_json` would quote it as a
    string), `json_object(k, v, ...)` is `to_json(named_struct(k, v, ...))`, and `to_json` keeps NULL
    fields, as DuckDB writes them (in the same order, as compactly)."""
    if isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.JSON):
        return exp.cast(node.this.copy(), "string")
    nulls_kept = exp.Anonymous(
        this="map", expressions=[exp.Literal.string("ignoreNullFields"), exp.Literal.string("false")]
    )
    if isinstance(node, exp.JSONObject):
        pairs = [operand for pair in node.expressions for operand in (pair.this.copy(), pair.expression.copy())]
        return exp.Anonymous(this="to_json", expressions=[exp.func("named_struct", *pairs), nulls_kept])
    if _function_name(node) == "to_json" and len(node.expressions) == 1:
        return exp.Anonymous(this="to_json", expressions=[node.expressions[0].copy(), nulls_kept])
    return None


_RULES: tuple[Callable[[exp.Expression], exp.Expression | None], ...] = (
    _refused,
    _engine_hash,
    _any_numbering,
    _functions,
    _condition_functions,
    _json_paths,
    _json_types,
    _map_literal,
    _compared_predicates,
    _comprehension,
    _range,
    _ordered_sum,
    _similarity_udf,
    _first_ordered,
    _list,
    _one_based_index,
    _date_diff,
    _strptime,
    _timezone,
    _hex_cast,
    _materialized_cte,
    _hugeint,
    _json_values,
)


def _union_by_name(node: exp.Union, columns_of: ColumnsOf | None) -> exp.Expression:
    """`a union [all] by name b`: each side selected by name in DuckDB's column order (the left side's,
    then the right side's new ones), a column a side lacks as NULL."""
    sides = [node.this, node.expression]
    names = [_side_columns(side, columns_of) for side in sides]
    order = _by_name_order(*names)
    aligned = []
    for side, columns in zip(sides, names, strict=True):
        present = {c.lower() for c in columns}
        listed = [
            exp.column(c, quoted=True) if c.lower() in present else exp.alias_(exp.Null(), c, quoted=True)
            for c in order
        ]
        select = exp.select(*listed).from_(side.copy().subquery("__side"))
        aligned.append(select)
    union = exp.union(aligned[0], aligned[1], distinct=bool(node.args.get("distinct")))
    for modifier in ("order", "limit", "offset"):
        if node.args.get(modifier) is not None:
            union.set(modifier, node.args[modifier].copy())
    return union


def _by_name_order(left: list[str], right: list[str]) -> list[str]:
    known = {c.lower() for c in left}
    return list(left) + [c for c in right if c.lower() not in known]


def _side_columns(side: exp.Expression, columns_of: ColumnsOf | None) -> list[str]:
    if isinstance(side, exp.Union) and side.args.get("by_name"):
        return _by_name_order(_side_columns(side.this, columns_of), _side_columns(side.expression, columns_of))
    if isinstance(side, exp.Select) and all(
        e.alias_or_name and not isinstance(e, exp.Star) and not (isinstance(e, exp.Column) and e.is_star)
        for e in side.expressions
    ):
        return [e.alias_or_name for e in side.expressions]
    if columns_of is None:
        raise UnsupportedConstruct(
            "union by name of a side whose columns the statement does not list",
            "list the columns, or run it through SparkSql, which looks them up",
        )
    return columns_of(_rewrite(side.copy(), columns_of).sql(dialect="spark"))
