"""Golden profiles: one row per customer in `cdp.golden_profiles`, the table every team reads.

Each attribute comes from the most trusted source that has it, then the most recently updated record,
then the most recently loaded one, so the choice is deterministic. Name parts are taken together from
one record and so are address parts: mixing a street from one record with a ZIP code from another
would produce an address nobody lives at. Traits are recomputed from all orders and events each run,
so they never drift from the data. Consent per purpose is the latest statement; a revocation wins a
tie, and no statement is not consent (the column is NULL).
"""

import dagster as dg
import duckdb

from cdp_assets.clean import EVENTS, TRANSACTIONS
from cdp_assets.identity import IDENTITY_CLUSTERS
from cdp_assets.metadata import masked_preview
from resources.config import CDPConfig
from resources.segment_sql import profile_columns
from resources.warehouse import Warehouse

GROUP = "golden_profiles"
GOLDEN_PROFILES = dg.AssetKey(["profiles", "golden_profiles"])
CHECK_UNIQUE = "one_profile_per_customer"

_BEST = "order by trust desc, updated_at desc nulls last, loaded_at desc, source, source_record_id"


def build_profiles_sql(purposes: list[str]) -> str:
    """The SELECT that builds every golden profile from the latest version of each member record."""
    consent_columns = ",\n".join(
        f"first(granted order by stated_at desc, granted asc) filter (where purpose = '{p}') as consent_{p}"
        for p in purposes
    )
    consent_select = ", ".join(f"c.consent_{p}" for p in purposes)
    return f"""
    with members as (
        select m.customer_id, p.*
        from cdp.identity_map m join clean.person_records p using (source, source_record_id)
        where p.is_latest
    ),
    attributes as (
        select customer_id,
            first(struct_pack(first_name, middle_name, last_name) {_BEST})
                filter (where first_name is not null or last_name is not null) as name,
            first(email {_BEST}) filter (where email is not null) as email,
            first(phone {_BEST}) filter (where phone is not null) as phone,
            first(struct_pack(address_line1, address_line2, city, region, postal_code, country) {_BEST})
                filter (where address_line1 is not null or postal_code is not null or city is not null) as address,
            first(country {_BEST}) filter (where country is not null) as any_country,
            first(date_of_birth {_BEST}) filter (where date_of_birth is not null) as date_of_birth,
            list(distinct email order by email) filter (where email is not null) as emails,
            list(distinct phone order by phone) filter (where phone is not null) as phones,
            count(*) as record_count,
            min(loaded_at) as first_loaded_at,
            max(updated_at) as updated_at
        from members group by customer_id
    ),
    orders as (
        select m.customer_id, count(*) as order_count, sum(t.amount) as lifetime_revenue,
               min(t.occurred_at) as first_order_at, max(t.occurred_at) as last_order_at
        from clean.transactions t join cdp.identity_map m using (source, source_record_id)
        group by 1
    ),
    activity as (
        select m.customer_id, count(*) as event_count, min(e.occurred_at) as first_event_at,
               max(e.occurred_at) as last_seen_at
        from clean.events e join cdp.identity_map m using (source, source_record_id)
        group by 1
    ),
    consent as (
        select m.customer_id{"," if purposes else ""}
            {consent_columns}
        from clean.consent_statements s join cdp.identity_map m using (source, source_record_id)
        group by 1
    ),
    customers as (
        select customer_id, list(distinct source order by source) as sources
        from cdp.identity_map group by 1
    )
    select k.customer_id,
        a.name.first_name, a.name.middle_name, a.name.last_name,
        a.email, a.phone,
        a.address.address_line1, a.address.address_line2, a.address.city, a.address.region,
        a.address.postal_code, coalesce(a.address.country, a.any_country) as country,
        a.date_of_birth,
        coalesce(a.emails, []::varchar[]) as emails, coalesce(a.phones, []::varchar[]) as phones,
        k.sources, coalesce(a.record_count, 0) as record_count,
        least(a.first_loaded_at, o.first_order_at, v.first_event_at) as first_seen_at,
        a.updated_at,
        coalesce(o.order_count, 0) as order_count,
        coalesce(o.lifetime_revenue, 0)::double as lifetime_revenue,
        (o.lifetime_revenue / nullif(o.order_count, 0))::double as average_order_value,
        o.first_order_at, o.last_order_at,
        date_diff('day', o.last_order_at::date, current_date)::bigint as days_since_last_order,
        coalesce(v.event_count, 0) as event_count, v.last_seen_at,
        current_timestamp::timestamp as profile_built_at{", " + consent_select if purposes else ""}
    from customers k
    left join attributes a using (customer_id)
    left join orders o using (customer_id)
    left join activity v using (customer_id)
    left join consent c using (customer_id)
    order by k.customer_id
    """


def build_profiles(conn: duckdb.DuckDBPyConnection, config: CDPConfig) -> None:
    """Rebuild `cdp.golden_profiles` with exactly the documented column order and types."""
    columns = profile_columns(config.consent_purposes)
    casts = ", ".join(f'"{c}"::{t} as "{c}"' for c, t in columns.items())
    conn.execute(
        f"create or replace table cdp.golden_profiles as select {casts} "
        f"from ({build_profiles_sql(config.consent_purposes)})"
    )


def build_profiles_asset(config: CDPConfig) -> dg.AssetsDefinition:
    deps = [IDENTITY_CLUSTERS]
    if config.sources_with_role("events"):
        deps.append(EVENTS)
    if config.sources_with_role("transactions"):
        deps.append(TRANSACTIONS)

    @dg.asset(
        key=GOLDEN_PROFILES,
        group_name=GROUP,
        description="One golden profile per customer: best attributes by source trust then recency, traits, consent.",
        deps=deps,
        kinds={"duckdb"},
        owners=["team:data-engineering"],
        code_version="1",
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_UNIQUE,
                asset=GOLDEN_PROFILES,
                blocking=True,
                description="Exactly one profile per customer id of cdp.identity_map.",
            ),
        ],
    )
    def golden_profiles(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            build_profiles(conn, config)
            profiles, distinct_ids = conn.execute(
                "select count(*), count(distinct customer_id) from cdp.golden_profiles"
            ).fetchone()
            customers = conn.execute("select count(distinct customer_id) from cdp.identity_map").fetchone()[0]
            stats = conn.execute(
                """select count(*) filter (where email is not null), count(*) filter (where order_count > 0),
                          coalesce(sum(lifetime_revenue), 0)
                   from cdp.golden_profiles"""
            ).fetchone()
            preview = masked_preview(
                conn,
                "select customer_id, first_name, last_name, email, city, order_count, lifetime_revenue "
                "from cdp.golden_profiles where record_count > 1 order by customer_id",
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(profiles)),
                "profiles_with_email": int(stats[0]),
                "profiles_with_orders": int(stats[1]),
                "total_revenue": dg.MetadataValue.float(float(stats[2])),
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
            ],
        )

    return golden_profiles
