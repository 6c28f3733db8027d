"""Golden profiles: one row per customer in `cdp.golden_profiles`, the table every team reads.

Each attribute is chosen among the customer's records by its survivorship rule from the configuration
(source priority by default), with deterministic tie-breaks, and `cdp.profile_provenance` records the
source, record and time every chosen value came from. Name parts are taken together from one record
and so are address parts: mixing a street from one record with a ZIP code from another would produce
an address nobody lives at. Consent per purpose is the latest statement; a revocation wins a tie, and
no statement is not consent (the column is NULL). A revocation without a date (an unsubscribe list that
carries none, a CRM row whose modification time is blank) may be the newest statement of all, so it wins
over every grant: honouring an unsubscribe late is the one mistake the platform must not make, where
waiting for a dated grant to re-subscribe someone costs a message.

A customer none of whose person records has an e-mail (or phone) takes the latest one its activity
carries, such as a Segment `identify`'s `traits.email` or an order's e-mail, in the form identity matches
it by (lower case, `+tag` folded, Gmail dots removed): a visitor who identified on the website can be
reached, and the provenance says the value came from activity (`rule` `latest_activity`). A customer
none of whose person records has a name takes the one its latest identify gave (`_activity_names`).

A run recomputes only the customers whose records, identity or time windows changed since the last run,
or everyone when that is cheaper or the configuration changed: see cdp_assets.profiles.incremental.
"""

from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg

from cdp_assets.clean import rules
from cdp_assets.clean.assets import activity_assets
from cdp_assets.identity.assets import IDENTITY_CLUSTERS
from cdp_assets.identity.bridges import SEPARATED_LINKS
from cdp_assets.metadata import markdown_table, masked_preview, redact_errors, table_metadata
from cdp_assets.profiles.incremental import Plan, not_before_last_run, plan_run, profile_settings, record_run
from cdp_assets.profiles.traits import (
    build_traits,
    days_since_sql,
    order_condition,
    resolve_as_of,
    scope_map,
    timestamp_literal,
)
from resources.conditions import json_path
from resources.config import CDPConfig, SurvivorshipRule
from resources.config.refresh import AS_OF_TAG
from resources.schema import profile_columns
from resources.sql import Scratch, Sql
from resources.tables import ACTIVITY_CONSENT, ACTIVITY_ROLES, CONSENT_STATEMENTS, PERSON_ATTRIBUTES, Table
from resources.warehouse import Warehouse, sql_literal, utc_now

GROUP = "golden_profiles"
# Bump when survivorship, traits or the profile columns change.
CODE_VERSION = "8"
GOLDEN_PROFILES = dg.AssetKey(["profiles", "golden_profiles"])
CHECK_UNIQUE = "one_profile_per_customer"
CHECK_CURRENCY = "revenue_in_one_currency"
CHECK_PROVENANCE = "every_value_has_provenance"

# Ties end on what the data holds, never on when a file happened to be loaded: the same records give the
# same profile whatever order their files arrived in. A customer holds one latest version per source
# record, so source and record id settle every tie. A record without an update time is the least recent.
_TAIL = "source, source_record_id"
_RECENCY = "updated_at desc nulls last"

# Attribute -> (profile columns taken together from one record, SQL of its comparable value).
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str]] = {
    "name": (
        ("first_name", "middle_name", "last_name"),
        "nullif(concat_ws(' ', first_name, middle_name, last_name), '')",
    ),
    "email": (("email",), "email"),
    "phone": (("phone",), "phone"),
    "address": (
        ("address_line1", "address_line2", "city", "region", "postal_code", "country"),
        "nullif(concat_ws(', ', address_line1, address_line2, city, region, postal_code, country), '')",
    ),
    "date_of_birth": (("date_of_birth",), "date_of_birth::varchar"),
}
_PRESENT = {
    "name": "first_name is not null or last_name is not null",
    "address": "address_line1 is not null or postal_code is not null or city is not null",
}


# Every consent statement a profile reads: person records', and events' and orders' (see clean.assets).
CONSENT_SOURCES = " union all ".join(
    f"select * from {t.name}" for t in (CONSENT_STATEMENTS, *ACTIVITY_CONSENT.values())
)


# Profile attributes that activity's identifiers can give -> the normaliser of the identifier types carrying them.
ACTIVITY_CONTACTS: dict[str, str] = {"email": "email", "phone": "phone"}
ACTIVITY_RULE = "latest_activity"
# The name traits of a Segment (or RudderStack) `identify`, by the spec's names and the snake-case ones
# server-side SDK users often send: first and last name, else the full name.
NAME_TRAITS: dict[str, tuple[str, ...]] = {
    "first": ("firstName", "first_name"),
    "last": ("lastName", "last_name"),
    "full": ("name",),
}


def profile_attributes(config: CDPConfig) -> dict[str, tuple[tuple[str, ...], str]]:
    """The attributes survivorship picks, as ATTRIBUTES: the built-in ones and the sources' own (`attributes`
    in cdp.yaml), each of those one text column of its name, picked by its rule as any other."""
    return {**ATTRIBUTES, **{a: ((f'"{a}"',), f'"{a}"') for a in config.person_attributes}}


def _present(attribute: str, columns: tuple[str, ...]) -> str:
    """SQL that is true where a record (or a profile) has a value for the attribute of these `columns`."""
    return _PRESENT.get(attribute, f"{columns[0]} is not null")


def count_unexplained(sql: Sql) -> int:
    """Profiles with a value that has no provenance row, which the provenance check requires to be none:
    for e-mail and phone the row must hold that very value; for name and birth date one for the attribute
    is enough."""
    checks = " or ".join(
        f"(({_present(attribute, ATTRIBUTES[attribute][0])}) and not exists (select 1 from cdp.profile_provenance v "
        f"where v.customer_id = p.customer_id and v.attribute = '{attribute}'{match}))"
        for attribute, match in (
            ("email", " and v.value = p.email"),
            ("phone", " and v.value = p.phone"),
            ("name", ""),
            ("date_of_birth", ""),
        )
    )
    return int(sql.value(f"select count(*) from cdp.golden_profiles p where {checks}"))


def _priority(rule: SurvivorshipRule) -> str:
    if not rule.sources:
        return "trust desc"
    ranks = " ".join(f"when {sql_literal(s)} then {i}" for i, s in enumerate(rule.sources))
    return f"case source {ranks} else {len(rule.sources)} end, trust desc"


def rule_order(rule: SurvivorshipRule) -> str:
    """ORDER BY that ranks a customer's candidate values, best first, with deterministic tie-breaks."""
    priority = _priority(rule)
    return {
        "source_priority": f"{priority}, {_RECENCY}, {_TAIL}",
        "non_null": f"{priority}, {_RECENCY}, {_TAIL}",
        "most_recent": f"{_RECENCY}, {priority}, {_TAIL}",
        "most_frequent": f"frequency desc, {priority}, {_RECENCY}, {_TAIL}",
        "longest": f"completeness desc, length(value) desc, {priority}, {_RECENCY}, {_TAIL}",
        "first_seen": f"updated_at asc nulls last, {priority}, {_TAIL}",
    }[rule.rule]


def _pick_sql(attribute: str, spec: tuple[tuple[str, ...], str], rule: SurvivorshipRule, members: str) -> str:
    """The select of each customer's best record for the attribute (its columns and value, see
    `profile_attributes`) among `members`, by the rule."""
    columns, value = spec
    present = _present(attribute, columns)
    completeness = " + ".join(f"({c} is not null)::int" for c in columns)
    return f"""
        select customer_id, {", ".join(columns)}, value, source, source_record_id,
               updated_at as value_at, '{rule.rule}' as rule
        from (
            select *, {value} as value, {completeness} as completeness,
                   count(*) over (partition by customer_id, {value}) as frequency
            from {members} where {present}
        )
        qualify row_number() over (partition by customer_id order by {rule_order(rule)}) = 1"""


@dataclass(frozen=True)
class ProfileRun:
    """What a profiles run did, for the asset's metadata."""

    as_of: datetime
    mode: str
    reason: str
    customers_recomputed: int
    run_seq: int
    affected: dict[str, int] = field(default_factory=dict)


def build_profiles(
    sql: Sql, config: CDPConfig, now: datetime | None = None, *, incremental: bool = False, run_id: str | None = None
) -> ProfileRun:
    """Bring `cdp.golden_profiles` and `cdp.profile_provenance` up to date: rebuilt whole, or with
    `incremental` only the customers whose inputs changed since the last run (see
    cdp_assets.profiles.incremental), with the same result. `now`: the scheduled time a time-windows
    refresh measures from (see resolve_as_of).

    The per-attribute picks, consent picks and traits are this step's temp tables, dropped when it ends;
    they are computed first, then the profiles, provenance and the run's record are written in one
    transaction, full runs included: the next run decides what to recompute from the last recorded run, so
    a run killed after writing profiles but before recording itself would have it miss changes the killed
    run made (RFM scores already moved, which segments would never re-evaluate). Computing outside the
    transaction lets a trait that fails on the data be diagnosed by further queries, which an aborted
    transaction would refuse."""
    with sql.scratch("profiles") as tables:
        as_of = resolve_as_of(sql, config, now)
        if config.profiles.as_of == "now":
            as_of = not_before_last_run(sql, as_of)
        settings = profile_settings(sql, config, CODE_VERSION)
        plan, affected = plan_run(sql, config, tables, settings, as_of, incremental)
        computed = _compute_profiles(sql, config, tables, plan)
        with sql.transaction():
            changed, every_profile = _write_profiles(sql, config, tables, plan, computed)
            run_seq = record_run(sql, plan, settings, run_id, utc_now(), changed, every_profile)
        recomputed = sql.value("select customers_recomputed from meta.profile_runs where run_seq = ?", [run_seq])
        return ProfileRun(as_of, plan.mode, plan.reason, int(recomputed), run_seq, affected)


@dataclass(frozen=True)
class _Computed:
    """The profiles of a run's customers, ready to write: the select of their rows, of their provenance
    rows, and (incremental runs) the step's table of every customer's RFM scores."""

    select: str
    provenance: str
    scores: str


def _compute_profiles(sql: Sql, config: CDPConfig, tables: Scratch, plan: Plan) -> _Computed:
    """Compute the picks, consent and traits of the plan's customers into the step's temp tables."""
    survivorship = config.profiles.survivorship
    purposes = config.consent_purposes
    scope = plan.scope
    identity = scope_map(sql, scope, tables("scope_map"))
    members = tables("members")
    # The sources' own attributes of each latest version, a column each.
    own = config.person_attributes
    own_columns, own_join = "", ""
    if own:
        values = ", ".join(f'max(value) filter (where attribute = {sql_literal(o)}) as "{o}"' for o in own)
        own_columns = "".join(f', a."{o}"' for o in own)
        own_join = f"""left join (select source, file, row_number, {values} from {PERSON_ATTRIBUTES.name}
                                  group by source, file, row_number) a
                       on a.source = p.source and a.file = p.file and a.row_number = p.row_number"""
    sql.create_table_as(
        members,
        f"""select m.customer_id, p.*{own_columns} from {identity} m
           join clean.person_records p using (source, source_record_id)
           {own_join}
           where p.is_latest""",
        temporary=True,
    )
    specs = profile_attributes(config)
    picks = {attribute: tables(f"pick_{attribute}") for attribute in specs}
    for attribute, pick in picks.items():
        rule = survivorship.rule_for(attribute)
        sql.create_table_as(pick, _pick_sql(attribute, specs[attribute], rule, members), temporary=True)
    contacts = tables("activity_contacts")
    _activity_contacts(sql, config, identity, contacts)
    for attribute in ACTIVITY_CONTACTS:
        column = ATTRIBUTES[attribute][0][0]
        sql.execute(
            f"""insert into {picks[attribute]} by name
                select customer_id, value as {column}, value, source, source_record_id, value_at,
                       '{ACTIVITY_RULE}' as rule
                from {contacts} anti join {picks[attribute]} using (customer_id)
                where attribute = '{attribute}'
                qualify row_number() over (
                    partition by customer_id order by value_at desc nulls last, source, source_record_id, value
                ) = 1"""
        )
    names = tables("activity_names")
    _activity_names(sql, identity, names, tables)
    sql.execute(
        f"""insert into {picks["name"]} by name
            select customer_id, first_name, middle_name, last_name, {ATTRIBUTES["name"][1]} as value, source,
                   source_record_id, value_at, '{ACTIVITY_RULE}' as rule
            from {names} anti join {picks["name"]} using (customer_id)
            qualify row_number() over (
                partition by customer_id order by value_at desc nulls last, source, source_record_id, event_id desc
            ) = 1"""
    )
    consent_picks = tables("consent_picks")
    sql.create_table_as(
        consent_picks,
        f"""select m.customer_id, s.purpose, s.granted, s.source, s.source_record_id, s.stated_at
            from ({CONSENT_SOURCES}) s join {identity} m using (source, source_record_id)
            qualify row_number() over (partition by m.customer_id, s.purpose
                                       order by (s.stated_at is null and not s.granted) desc,
                                                s.stated_at desc nulls last, s.granted asc, s.source,
                                                s.source_record_id, s.file desc, s.row_number desc) = 1""",
        temporary=True,
    )
    as_of = plan.as_of
    traits, scores = tables("customer_traits"), tables("scores")
    build_traits(sql, config, as_of, traits, scope, scores if scope else None, identity)
    consent_columns = "".join(f", first(granted) filter (where purpose = '{p}') as \"consent_{p}\"" for p in purposes)
    picked = ", ".join(f"pick_{attribute}.{c}" for attribute, (columns, _) in specs.items() for c in columns)
    pick_joins = "\n".join(
        f"left join {pick} pick_{attribute} using (customer_id)" for attribute, pick in picks.items()
    )
    # Each customer's lists, one table at a time: DuckDB cannot spill the state of an ordered `list()`
    # aggregate, and the three of them in the profiles' one select needed more than 3 GB at a million
    # people, where each alone fits in less.
    contact_lists, lists, customers = tables("contact_lists"), tables("lists"), tables("customers")
    sql.create_table_as(
        contact_lists,
        f"""
        with contact_values as (
            select customer_id, 'email' as attribute, email as value from {members}
            union all select customer_id, 'phone', phone from {members}
            union all
            -- An activity value is in identity's match form: one a person record holds in another form (an
            -- address typed with a dot or a +tag) is that value, listed once, as the person typed it.
            select customer_id, attribute, value from {contacts}
            anti join (select customer_id, 'email' as attribute, email_match_key as value from {members}
                       union all select customer_id, 'phone', phone from {members})
              using (customer_id, attribute, value)
        )
        select customer_id,
            list(distinct value order by value) filter (where attribute = 'email' and value is not null) as emails,
            list(distinct value order by value) filter (where attribute = 'phone' and value is not null) as phones
        from contact_values group by customer_id""",
        temporary=True,
    )
    sql.create_table_as(
        lists,
        f"""
        select customer_id,
            list(distinct {ATTRIBUTES["address"][1]} order by {ATTRIBUTES["address"][1]})
                filter (where {_PRESENT["address"]}) as addresses,
            count(*) as record_count, min(updated_at) as first_updated_at, max(updated_at) as updated_at
        from {members} group by customer_id""",
        temporary=True,
    )
    sql.create_table_as(
        customers,
        f"""select customer_id, list(distinct source order by source) as sources from {identity}
            group by 1""",
        temporary=True,
    )
    select = f"""
        with
        consent as (select customer_id{consent_columns} from {consent_picks} group by customer_id)
        select k.customer_id, {picked},
            coalesce(cl.emails, []) as emails, coalesce(cl.phones, []) as phones,
            coalesce(l.addresses, []) as addresses,
            k.sources, coalesce(l.record_count, 0) as record_count,
            least(l.first_updated_at, t.first_order_at, t.first_event_at) as first_seen_at, l.updated_at,
            t.* exclude (customer_id, first_event_at), {timestamp_literal(as_of)} as traits_as_of,
            current_timestamp::timestamp as profile_built_at, c.* exclude (customer_id)
        from {customers} k
        left join {lists} l using (customer_id)
        left join {contact_lists} cl using (customer_id)
        {pick_joins}
        left join {traits} t using (customer_id)
        left join consent c using (customer_id)
        order by k.customer_id"""
    provenance = [
        f"""select customer_id, '{attribute}' as attribute, value, source, source_record_id, value_at, rule
            from {pick}"""
        for attribute, pick in picks.items()
    ]
    provenance.append(
        f"""select customer_id, 'consent_' || purpose, granted::varchar, source, source_record_id, stated_at,
                  'latest_statement' from {consent_picks}"""
    )
    # Not sorted: at a million customers, sorting the picks' rows (spilled scratch tables) as they are
    # unioned ran out of memory under a warehouse.memory_limit of 768MB where the unsorted write fits, and
    # nothing reads the table in its stored order (incremental runs append their customers' rows anyway).
    return _Computed(select, " union all ".join(provenance), scores)


def _activity_contacts(sql: Sql, config: CDPConfig, identity: str, contacts: str) -> None:
    """Fill temp table `contacts` (customer_id, attribute, value, source, source_record_id, value_at) with
    the e-mails and phones the activity records of `identity` (the scope's map) carry as identifiers, each
    with the time of its record's latest activity. A value identity set aside for its record (SEPARATED_LINKS:
    a shared device where two people logged in, an identify with someone else's e-mail) is another
    person's, so it is not this customer's contact either."""
    # Only a declared type has a normaliser other than `id`, so the configuration names them all: the
    # identifier tables need not be scanned for the types they hold.
    selects = []
    for attribute, kind in ACTIVITY_CONTACTS.items():
        types = sorted(t for t, spec in config.identity.identifier_types.items() if spec.normalize == kind)
        if not types:
            continue
        for role in ACTIVITY_ROLES:
            selects.append(
                f"""select '{attribute}' as attribute, id_type, id_value, source, source_record_id
                    from clean.{role}_identifiers where id_type in ({", ".join(map(sql_literal, types))})"""
            )
    if not selects:
        sql.create_table_as(
            contacts,
            """select null::varchar as customer_id, null::varchar as attribute, null::varchar as value,
                      null::varchar as source, null::varchar as source_record_id, null::timestamp as value_at
               where false""",
            temporary=True,
        )
        return
    occurrences = " union all ".join(
        f"select source, source_record_id, occurred_at from clean.{r}" for r in ACTIVITY_ROLES
    )
    # The identity stage makes the table; a warehouse built without it (profiles over a given map) has none.
    set_aside = (
        f"anti join {SEPARATED_LINKS} using (source, source_record_id, id_type, id_value)"
        if sql.table_exists(SEPARATED_LINKS)
        else ""
    )
    sql.create_table_as(
        contacts,
        f"""
        with carried as (
            select m.customer_id, i.* from ({" union all ".join(selects)}) i
            join {identity} m using (source, source_record_id)
            {set_aside}
        ),
        latest as (
            select source, source_record_id, max(occurred_at) as value_at
            from ({occurrences})
            semi join carried using (source, source_record_id)
            group by all
        )
        select distinct c.customer_id, c.attribute, c.id_value as value, c.source, c.source_record_id, l.value_at
        from carried c left join latest l using (source, source_record_id)""",
        temporary=True,
    )


def _trait_text(keys: tuple[str, ...]) -> str:
    """SQL of the first of `keys` an event's traits give as a string that could be a name part: a number or
    an object is no name, and a runaway or control-laden value (the collector's callers are anyone) is not
    taken, as cleaning refuses it in a person record."""
    texts = []
    for key in keys:
        path = sql_literal(json_path([key]))
        value = f"json_extract_string(e.traits, {path})"
        texts.append(
            f"case when json_type(e.traits, {path}) = 'VARCHAR' and length({value}) <= {rules.text_limit('first_name')}"
            f" and not regexp_matches({value}, {sql_literal(rules.CONTROL_CHARACTERS)}) then {value} end"
        )
    return f"coalesce({', '.join(texts)})"


def _activity_names(sql: Sql, identity: str, names: str, tables: Scratch) -> None:
    """Fill temp table `names` (customer_id, first_name, middle_name, last_name, source, source_record_id,
    event_id, value_at) with the names the events of `identity`'s activity records give in their traits (a
    Segment `identify`'s firstName and lastName, else its name), cleaned by the person records' name rules.

    A visitor known only from the website has no person record; the name they gave when they signed up is
    the name a team expects on their profile. A group call's traits describe the account, not the person;
    and an activity record identity separated (a shared device where two people identified) holds two
    people's names, so neither is taken from it."""
    set_aside = (
        f"anti join (select distinct source, source_record_id from {SEPARATED_LINKS}) x "
        "using (source, source_record_id)"
        if sql.table_exists(SEPARATED_LINKS)
        else ""
    )
    calls = tables("name_calls")
    sql.create_table_as(
        calls,
        f"""select * from (
                select m.customer_id, e.source, e.source_record_id, e.event_id, e.occurred_at as value_at,
                       {_trait_text(NAME_TRAITS["first"])} as first_raw, {_trait_text(NAME_TRAITS["last"])} as last_raw,
                       {_trait_text(NAME_TRAITS["full"])} as full_raw
                from clean.events e join {identity} m using (source, source_record_id)
                {set_aside}
                where e.traits is not null and e.group_id is null
            ) where first_raw is not null or last_raw is not null or full_raw is not null""",
        temporary=True,
    )
    part_map, full_map = tables("activity_name_map"), tables("activity_full_name_map")
    sql.map_rows(
        part_map,
        f"select distinct v as raw from (select unnest([first_raw, last_raw]) as v from {calls}) where v is not null",
        rules.clean_name,
        ["name", "reason"],
    )
    sql.map_rows(
        full_map,
        f"select distinct full_raw as raw from {calls} where full_raw is not null",
        rules.clean_full_name,
        ["first", "middle", "last", "reason"],
    )
    # The parts when the call gives one that reads as a name, else its full name split; never a mix.
    parts = "(f.name is not null or l.name is not null)"
    sql.create_table_as(
        names,
        f"""select * from (
                select c.customer_id, c.source, c.source_record_id, c.event_id, c.value_at,
                       case when {parts} then f.name else n.first end as first_name,
                       case when {parts} then null else n.middle end as middle_name,
                       case when {parts} then l.name else n.last end as last_name
                from {calls} c
                left join {part_map} f on f.raw = c.first_raw
                left join {part_map} l on l.raw = c.last_raw
                left join {full_map} n on n.raw = c.full_raw
            ) where first_name is not null or last_name is not null""",
        temporary=True,
    )


def _write_profiles(
    sql: Sql, config: CDPConfig, tables: Scratch, plan: Plan, computed: _Computed
) -> tuple[str | None, list[str]]:
    """Write the computed profiles; returns (incremental runs) the step's table of customers whose rows
    changed and the columns changed on every profile."""
    profiles = Table("cdp.golden_profiles", profile_columns(config))
    if plan.scope is None:
        # The declaration decides the table's columns, order and types; a column the select makes and the
        # declaration lacks, or the other way round, fails the build here rather than vanishing in a cast.
        profiles.replace(sql, computed.select)
        sql.create_table_as("cdp.profile_provenance", computed.provenance)
        return None, []
    return _replace_customers(sql, config, tables, plan, profiles, computed)


def _replace_customers(
    sql: Sql, config: CDPConfig, tables: Scratch, plan: Plan, profiles: Table, computed: _Computed
) -> tuple[str, list[str]]:
    """Delete then insert the scope's profiles and provenance, carry the RFM scores that moved to the other
    profiles, and (the as-of time moved) the new as-of time and day counts to every profile. Returns the
    step's table of customers whose rows changed and the columns changed on every profile."""
    scope, scores = plan.scope, computed.scores
    in_plan = f"customer_id in (select customer_id from {scope})"
    sql.execute(f"delete from cdp.golden_profiles where {in_plan}")
    profiles.insert(sql, computed.select)
    sql.execute(f"delete from cdp.profile_provenance where {in_plan}")
    sql.execute(f"insert into cdp.profile_provenance {computed.provenance}")
    changed = tables("changed")
    sql.create_table_as(
        changed,
        f"""select customer_id from {scope}
            union all
            select g.customer_id from cdp.golden_profiles g join {scores} s using (customer_id)
            where g.rfm_score is distinct from s.rfm_score and not g.{in_plan}""",
        temporary=True,
    )
    sql.execute(
        f"""update cdp.golden_profiles g set rfm_recency = s.rfm_recency, rfm_frequency = s.rfm_frequency,
                   rfm_monetary = s.rfm_monetary, rfm_score = s.rfm_score
            from {scores} s where g.customer_id = s.customer_id and g.rfm_score is distinct from s.rfm_score"""
    )
    every_profile = ["profile_built_at"]
    if plan.previous_as_of != plan.as_of:
        as_of = timestamp_literal(plan.as_of)
        sql.execute(
            f"update cdp.golden_profiles set traits_as_of = {as_of} where traits_as_of is distinct from {as_of}"
        )
        every_profile.append("traits_as_of")
        days = days_since_sql("last_order_at", plan.as_of, config.refresh.timezone)
        stale = f"last_order_at is not null and days_since_last_order is distinct from {days}"
        if sql.value(f"select exists (select 1 from cdp.golden_profiles where {stale})"):
            sql.execute(f"update cdp.golden_profiles set days_since_last_order = {days} where {stale}")
            every_profile.append("days_since_last_order")
    return changed, every_profile


def _currency_check(currencies: list[tuple[str, int]]) -> dg.AssetCheckResult:
    """Warn when the orders behind lifetime_revenue (and average_order_value, RFM's monetary score) are in
    several currencies: their amounts are added as they are, 10 USD and 10 GBP making 20."""
    return dg.AssetCheckResult(
        asset_key=GOLDEN_PROFILES,
        check_name=CHECK_CURRENCY,
        passed=len(currencies) <= 1,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "currencies": len(currencies),
            "orders_by_currency": dg.MetadataValue.md(
                markdown_table([{"currency": c, "orders": n} for c, n in currencies]) if currencies else "_no orders_"
            ),
        },
        description=None
        if len(currencies) <= 1
        else f"lifetime_revenue adds amounts of {len(currencies)} currencies as they are ("
        + ", ".join(c for c, _ in currencies)
        + "): convert them before they land, or keep one currency per source and declare traits per currency",
    )


def build_profiles_asset(config: CDPConfig) -> dg.AssetsDefinition:
    deps = [IDENTITY_CLUSTERS, *activity_assets(config)]

    @dg.asset(
        key=GOLDEN_PROFILES,
        group_name=GROUP,
        description="One golden profile per customer: attributes by survivorship rule, provenance, traits, consent.",
        deps=deps,
        code_version=CODE_VERSION,
        metadata=table_metadata("cdp.golden_profiles", "cdp.profile_provenance"),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_UNIQUE,
                asset=GOLDEN_PROFILES,
                blocking=True,
                description="Exactly one profile per customer id of cdp.identity_map.",
            ),
            dg.AssetCheckSpec(
                CHECK_PROVENANCE,
                asset=GOLDEN_PROFILES,
                blocking=True,
                description="Every e-mail, phone, name, address and birth date on a profile has a provenance row.",
            ),
            dg.AssetCheckSpec(
                CHECK_CURRENCY,
                asset=GOLDEN_PROFILES,
                description="The orders lifetime_revenue adds up are in one currency: amounts are never converted.",
            ),
        ],
    )
    @redact_errors
    def golden_profiles(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        scheduled = context.run.tags.get(AS_OF_TAG)
        with warehouse.sql() as sql:
            run = build_profiles(
                sql,
                config,
                datetime.fromisoformat(scheduled) if scheduled else None,
                incremental=True,
                run_id=context.run.run_id,
            )
            unexplained = count_unexplained(sql)
            profiles, distinct_ids = sql.row("select count(*), count(distinct customer_id) from cdp.golden_profiles")
            customers = sql.value("select count(distinct customer_id) from cdp.identity_map")
            stats = sql.row(
                """select count(*) filter (where email is not null), count(*) filter (where order_count > 0),
                          coalesce(sum(lifetime_revenue), 0)
                   from cdp.golden_profiles"""
            )
            currencies = (
                sql.rows(
                    f"""select coalesce(currency, '(none given)'), count(*) from clean.transactions
                    where {order_condition(config)} group by 1 order by 2 desc, 1"""
                )
                if sql.table_exists("clean.transactions")
                else []
            )
            preview = masked_preview(
                sql,
                "select customer_id, first_name, last_name, email, city, record_count, order_count "
                "from cdp.golden_profiles where record_count > 1 order by customer_id",
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(profiles)),
                "profiles_with_email": int(stats[0]),
                "profiles_with_orders": int(stats[1]),
                "total_revenue": dg.MetadataValue.float(float(stats[2])),
                "traits_as_of": run.as_of.isoformat(sep=" "),
                "mode": run.mode,
                "reason": run.reason,
                "customers_recomputed": dg.MetadataValue.int(run.customers_recomputed),
                **{f"affected_by_{cause}": dg.MetadataValue.int(n) for cause, n in run.affected.items()},
                "traits": ", ".join(t.name for t in config.profiles.traits) or "built-in only",
                "preview": dg.MetadataValue.md(preview),
            },
            check_results=[
                dg.AssetCheckResult(
                    asset_key=GOLDEN_PROFILES,
                    check_name=CHECK_UNIQUE,
                    passed=bool(profiles == distinct_ids == customers),
                    metadata={
                        "profiles": int(profiles),
                        "distinct_customer_ids": int(distinct_ids),
                        "customers_in_identity_map": int(customers),
                    },
                ),
                dg.AssetCheckResult(
                    asset_key=GOLDEN_PROFILES,
                    check_name=CHECK_PROVENANCE,
                    passed=unexplained == 0,
                    metadata={"profiles_with_unexplained_values": int(unexplained)},
                ),
                _currency_check(currencies),
            ],
        )

    return golden_profiles
