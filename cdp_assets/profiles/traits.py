"""Computed traits compiled to DuckDB SQL: built-in order and activity traits, RFM scores, and the traits
declared in the configuration.

RFM scores are quintiles among customers with orders (5 = most recent, most orders, most revenue),
from the percent rank, so equal values always get the same score and the many one-order customers
score 1 on frequency rather than sharing the top band.

Traits are computed from all of a customer's events and transactions whenever the customer is
recomputed (see cdp_assets.profiles.incremental for who is), never by adding to a stored counter, so they
never drift the way incrementally updated counters do. RFM scores rank every customer with orders, so
they are ranked again over all customers on every run, recomputed or not. All traits of one activity
table are computed in a single pass (one GROUP BY with a FILTER clause per trait), which keeps ten
million events to one scan.

A trait's `where` runs on the warehouse connection, as the SQL regenerated from the expression the
allow-list of resources/conditions.py accepted. Unlike segment conditions it is not also sandboxed:
copying the activity columns a condition reads into a separate database and the matches back costs
about 1.5 s per ten million events for one condition, more than the pass itself takes.
"""

from datetime import UTC, datetime

from resources.conditions import ConditionError, check_condition, failure_message
from resources.config import CDPConfig, TraitConfig
from resources.schema import ACTIVITY_COLUMNS, JSON_COLUMNS, trait_column_sql, trait_type
from resources.sql import Scratch, Sql, SqlDataError
from resources.tables import MONEY_SCALE, MONEY_TOTAL_TYPE
from resources.warehouse import sql_literal, utc_now


def resolve_as_of(sql: Sql, config: CDPConfig, now: datetime | None = None) -> datetime:
    """The time windows are measured from: now, the newest activity, or a fixed timestamp. `now` is the
    scheduled time of a time-windows refresh (UTC): a run that starts late or is retried measures from the
    tick it belongs to, not from when it happened to run."""
    setting = config.profiles.as_of
    if setting == "latest_activity":
        latest = sql.value(
            "select max(t) from (select max(occurred_at) t from clean.events "
            "union all select max(occurred_at) from clean.transactions)"
        )
        if latest is not None:
            return latest
        setting = "now"
    if setting == "now":
        return now or utc_now()
    parsed = datetime.fromisoformat(setting)
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def local_time(expression: str, zone: str) -> str:
    """A UTC timestamp as the wall clock reads it in `zone`, so that 'days since' counts the calendar days
    people in that zone live by: an order at 22:00 in New York on the 28th is two days old at their
    midnight on the 2nd, though in UTC it was placed on the 1st."""
    if zone == "UTC":
        return expression
    return f"timezone({sql_literal(zone)}, ({expression}) at time zone 'UTC')"


def timestamp_literal(value: datetime) -> str:
    """A DuckDB TIMESTAMP literal."""
    return f"timestamp '{value.isoformat(sep=' ')}'"


def scope_map(sql: Sql, scope: str | None, name: str) -> str:
    """The identity map a run joins the cleaned tables with: `cdp.identity_map` when it computes every
    customer, else temp table `name`, filled with the map's rows of the customers of `scope`
    (`scope(customer_id)`).

    Taking the scope's rows first is what makes a small run cheap: given the map joined with a cleaned
    table and filtered by the scope, DuckDB joined first and filtered after, hashing every cleaned row (at
    1M people, the person records' join of a 1% delta took 0.9 s, 0.45 s with the scope's map made first)."""
    if scope is None:
        return "cdp.identity_map"
    sql.create_table_as(
        name,
        f"select * from cdp.identity_map where customer_id in (select customer_id from {scope})",
        temporary=True,
    )
    return name


def attach_customers(sql: Sql, as_of: datetime, activity: dict[str, str], identity: str = "cdp.identity_map") -> None:
    """Fill the temp tables `activity` names for `events` and `transactions`: that activity up to the as-of
    time, with its customer id, so every trait reads it already joined to the identity map; only the
    customers `identity` (a table of the map's rows, see `scope_map`) holds."""
    for table in ("events", "transactions"):
        sql.create_table_as(
            activity[table],
            f"""select m.customer_id, t.* from clean.{table} t join {identity} m using (source, source_record_id)
                where t.occurred_at <= {timestamp_literal(as_of)}""",
            temporary=True,
        )


def order_condition(config: CDPConfig) -> str:
    """SQL true for a transaction that is an order: its status is none of `profiles.excluded_order_statuses`
    (a refund, a cancellation), compared lower-cased and trimmed; a transaction without a status is one."""
    statuses = config.profiles.excluded_order_statuses
    if not statuses:
        return "true"
    return f"coalesce(lower(trim(status)), '') not in ({', '.join(sql_literal(s) for s in statuses)})"


def days_since_sql(column: str, as_of: datetime, zone: str) -> str:
    """SQL of the calendar days (in `zone`) from the timestamp `column` to the as-of time."""
    return f"date_diff('day', {local_time(column, zone)}, {local_time(timestamp_literal(as_of), zone)})::bigint"


def _condition(trait: TraitConfig, as_of: datetime) -> str | None:
    parts = []
    if trait.where:
        checked = check_condition(
            trait.where,
            ACTIVITY_COLUMNS[trait.source],
            f"the {trait.source} table's",
            JSON_COLUMNS[trait.source],
            clock=timestamp_literal(as_of),
        )
        parts.append(f"({checked})")
    interval = trait.window_interval()
    if interval:
        parts.append(f"occurred_at > {timestamp_literal(as_of)} - {interval}")
    return " and ".join(parts) or None


def trait_aggregate(trait: TraitConfig, as_of: datetime) -> str:
    """One trait as an aggregate expression over its activity joined to customers (`attach_customers`), for
    all traits but most_frequent."""
    column = trait_column_sql(trait)
    value_type = trait_type(trait)
    money = value_type == MONEY_TOTAL_TYPE
    # Exact decimals add up the same in any order; anything else is summed in a fixed one.
    total = (f"sum({column}", "" if money else f" order by {column}")
    # Each aggregate call up to its closing parenthesis, and the ORDER BY that goes inside it.
    aggregate, ordering = {
        "count": (f"count({column}" if column else "count(*", ""),
        "count_distinct": (f"count(distinct {column}", ""),
        "sum": total,
        "avg": total,
        "min": (f"min({column}", ""),
        "max": (f"max({column}", ""),
        "first": (f"first({column}", f" order by occurred_at, event_id, source, {column}"),
        "last": (f"first({column}", f" order by occurred_at desc, event_id desc, source desc, {column} desc"),
        "unique_list": (f"list(distinct {column}", f" order by {column}"),
    }[trait.aggregate]
    conditions = [f"{column} is not null"] if trait.aggregate in ("first", "last", "unique_list") else []
    if condition := _condition(trait, as_of):
        conditions.append(condition)
    filtered = f" filter (where {' and '.join(conditions)})" if conditions else ""
    expression = f"{aggregate}{ordering}){filtered}"
    if trait.aggregate == "avg":
        count = f"count({column}){filtered}"
        return exact_average(expression, count) if money else f"({expression} / {count})::double"
    return f"({expression})::{value_type}" if trait.aggregate == "sum" else expression


def exact_average(total: str, count: str) -> str:
    """SQL of `total / count` for money, rounded to MONEY_SCALE half away from zero, in exact integer
    arithmetic: DuckDB divides decimals as doubles, whose rounding would put 1.005 at 1.00 on one side
    of a segment threshold."""
    units = f"({total} * {10**MONEY_SCALE})::hugeint"
    rounded = f"sign({units}) * ((abs({units}) * 2 + ({count})) // (2 * ({count})))"
    return (
        f"(case when ({count}) > 0 then ({rounded})::decimal(38, 0) * 0.{'0' * (MONEY_SCALE - 1)}1 end)"
        f"::{MONEY_TOTAL_TYPE}"
    )


def _empty_value(trait: TraitConfig) -> str | None:
    """What a customer with no matching activity gets: 0 for counts and sums, [] for lists, else NULL."""
    if trait.aggregate in ("count", "count_distinct", "sum"):
        return "0"
    if trait.aggregate == "unique_list":
        return "[]"
    return None


def build_traits(
    sql: Sql,
    config: CDPConfig,
    as_of: datetime,
    target: str,
    scope: str | None = None,
    scores: str | None = None,
    identity: str | None = None,
) -> None:
    """Fill temp table `target` with `(customer_id, <built-ins>, <configured traits>)`: the caller names it
    and owns it, and the tables the traits are computed through are this step's, dropped on return.

    With `scope` (a table of customer ids) only those customers are computed, and temp table `scores`
    receives the RFM scores of every customer with orders: of the scope's as computed now, of the others
    as `cdp.golden_profiles` holds them, ranked together as a full computation ranks them. `identity`: the
    scope's rows of the identity map when the caller has made them (`scope_map`), else they are made here.

    A `where` refused by the allow-list (a configuration built without load_config) or failing on the
    data fails the run naming the trait, without the values DuckDB quotes.
    """
    for i, trait in enumerate(config.profiles.traits):
        try:
            _condition(trait, as_of)
        except ConditionError as exc:
            raise ConditionError(f"profiles.traits[{i}] ({trait.name}).where: {exc}") from None
    with sql.scratch("traits") as tables:
        activity = {table: tables(f"{table}_c") for table in ("events", "transactions")}
        try:
            identity = identity or scope_map(sql, scope, tables("scope_map"))
            attach_customers(sql, as_of, activity, identity)
            _build_traits(sql, config, as_of, activity, tables, target, scope, scores, identity)
        except SqlDataError:
            # One pass computes every trait, so find the condition that fails on its own.
            for i, trait in enumerate(config.profiles.traits):
                if not trait.where:
                    continue
                try:
                    sql.rows(f"select count(*) from {activity[trait.source]} where {_condition(trait, as_of)}")
                except SqlDataError as failure:
                    message = f"the condition failed on the data: {failure_message(failure)}"
                    raise ConditionError(f"profiles.traits[{i}] ({trait.name}): {message}") from None
            raise


def _build_traits(
    sql: Sql,
    config: CDPConfig,
    as_of: datetime,
    activity: dict[str, str],
    tables: Scratch,
    target: str,
    scope: str | None,
    scores: str | None,
    identity: str,
) -> None:
    """The single pass per activity table, the most-frequent traits, then `target` joining them to every
    customer of `identity` (the scope's map) with the RFM scores."""
    declared = config.profiles.traits
    zone = config.refresh.timezone
    per_table = {table: tables(f"{table}_traits") for table in ("events", "transactions")}
    for table in ("events", "transactions"):
        mine = [t for t in declared if t.source == table and t.aggregate != "most_frequent"]
        columns = "".join(f', {trait_aggregate(t, as_of)} as "{t.name}"' for t in mine)
        # A refunded or cancelled transaction is no order: the built-in order traits leave it out.
        order = order_condition(config)
        builtin = (
            f", count(*) filter (where {order}) as order_count, "
            f"coalesce(sum(amount) filter (where {order}), 0)::{MONEY_TOTAL_TYPE} as lifetime_revenue, "
            f"min(occurred_at) filter (where {order}) as first_order_at, "
            f"max(occurred_at) filter (where {order}) as last_order_at"
            if table == "transactions"
            else ", count(*) as event_count, min(occurred_at) as first_event_at, max(occurred_at) as last_seen_at"
        )
        sql.create_table_as(
            per_table[table],
            f"select customer_id{builtin}{columns} from {activity[table]} group by customer_id",
            temporary=True,
        )
    frequent = [t for t in declared if t.aggregate == "most_frequent"]
    for trait in frequent:
        condition = _condition(trait, as_of) or "true"
        sql.create_table_as(
            tables(f"trait_{trait.name}"),
            f"""select customer_id, first(v order by n desc, v) as "{trait.name}" from (
                    select customer_id, {trait_column_sql(trait)} as v, count(*) as n from {activity[trait.source]}
                    where {trait_column_sql(trait)} is not null and {condition} group by 1, 2
                ) group by 1""",
            temporary=True,
        )
    selected = []
    for trait in declared:
        holder = f'"trait_{trait.name}"' if trait.aggregate == "most_frequent" else f"{trait.source}_traits"
        empty = _empty_value(trait)
        value = f'{holder}."{trait.name}"'
        selected.append(f'coalesce({value}, {empty}) as "{trait.name}"' if empty else f'{value} as "{trait.name}"')
    joins = "".join(f' left join {tables(f"trait_{t.name}")} "trait_{t.name}" using (customer_id)' for t in frequent)
    base = tables("base")
    sql.create_table_as(
        base,
        f"""select c.customer_id,
                coalesce(transactions_traits.order_count, 0) as order_count,
                coalesce(transactions_traits.lifetime_revenue, 0)::{MONEY_TOTAL_TYPE} as lifetime_revenue,
                {exact_average("transactions_traits.lifetime_revenue", "transactions_traits.order_count")}
                    as average_order_value,
                transactions_traits.first_order_at, transactions_traits.last_order_at,
                {days_since_sql("transactions_traits.last_order_at", as_of, zone)} as days_since_last_order,
                coalesce(events_traits.event_count, 0) as event_count, events_traits.first_event_at,
                events_traits.last_seen_at
                {"".join(", " + s for s in selected)}
            from (select distinct customer_id from {identity}) c
            left join {per_table["transactions"]} transactions_traits using (customer_id)
            left join {per_table["events"]} events_traits using (customer_id){joins}""",
        temporary=True,
    )
    ranked = f"select customer_id, order_count, lifetime_revenue, last_order_at from {base} where order_count > 0"
    if scope:
        ranked += f""" union all
            select customer_id, order_count, lifetime_revenue, last_order_at from cdp.golden_profiles
            where order_count > 0 and customer_id not in (select customer_id from {scope})"""
    scored = scores or tables("scores")
    sql.create_table_as(
        scored,
        f"""select customer_id, rfm_recency, rfm_frequency, rfm_monetary,
                rfm_recency::varchar || rfm_frequency::varchar || rfm_monetary::varchar as rfm_score
            from (
                select customer_id,
                    least(5, 1 + floor(5 * percent_rank() over (order by last_order_at)))::integer as rfm_recency,
                    least(5, 1 + floor(5 * percent_rank() over (order by order_count)))::integer as rfm_frequency,
                    least(5, 1 + floor(5 * percent_rank() over (order by lifetime_revenue)))::integer
                        as rfm_monetary
                from ({ranked})
            )""",
        temporary=True,
    )
    sql.create_table_as(
        target,
        f"""select {base}.*, s.rfm_recency, s.rfm_frequency, s.rfm_monetary, s.rfm_score
            from {base} left join {scored} s using (customer_id)""",
        temporary=True,
    )
