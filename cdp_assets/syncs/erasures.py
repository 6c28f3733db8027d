"""Erasures at the destinations: each row destination's part of a privacy erasure, delivered like any sync.

An erasure leaves, per destination that acknowledged the person, a row of `privacy.destination_erasures`
(the key, and for an audience the member's hashed identifiers). It is sent through the same `deliver` as
every sync, as an `erase` change each client turns into its own form (a delete, a removed member, an
`erased` event), first by the privacy request's run and then at the start of every sync of that destination
until the destination confirms it. A destination that is down leaves only its own part pending.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa

from resources.config import RowDestinationConfig
from resources.destinations import Change, DestinationClient, RetryPolicy, deliver
from resources.sql import Sql
from resources.tables import DESTINATION_ERASURES, PRIVACY_REQUESTS
from resources.warehouse import utc_now


def pending_erasures(sql: Sql, destination: str) -> int:
    return int(
        sql.value(
            f"select count(*) from {DESTINATION_ERASURES.name} where destination = ? and status in ('pending', 'held')",
            [destination],
        )
    )


def deliver_erasures(
    sql: Sql,
    destination: RowDestinationConfig,
    client: Callable[[], DestinationClient],
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Send the destination's pending erasures; confirm what it accepted, count attempts on the rest.

    `client()` gives the client to send with; its caller owns it (and closes it)."""
    # Held erasures were queued while the destination was out of cdp.yaml: it is back, so they go now.
    sql.execute(
        f"update {DESTINATION_ERASURES.name} set status = 'pending' where destination = ? and status = 'held'",
        [destination.name],
    )
    rows = sql.rows(
        f"""select key, any_value(payload) from {DESTINATION_ERASURES.name}
            where destination = ? and status = 'pending' group by key order by key""",
        [destination.name],
    )
    if not rows:
        return {"erased": 0, "erase_pending": 0}
    changes = [Change(key, "erase", payload=payload) for key, payload in rows]
    delivery = deliver(
        client(),
        destination.name,
        changes,
        batch_size=destination.batch_size,
        policy=RetryPolicy.from_config(destination.retry),
        rate_limit=destination.rate_limit_per_second,
        sleep=sleep,
    )
    now = utc_now()
    failed = [(c.key, error) for c, error in delivery.failed]
    failed += [(c.key, delivery.unavailable or "not sent") for c in delivery.deferred]
    frame = pa.table(
        {
            "key": pa.array([c.key for c in delivery.accepted] + [k for k, _ in failed], pa.string()),
            "ok": pa.array([True] * len(delivery.accepted) + [False] * len(failed), pa.bool_()),
            # A destination's error may quote the row; only its kind is kept (the first line, cut short).
            "error": pa.array([None] * len(delivery.accepted) + [e.splitlines()[0][:200] for _, e in failed]),
        }
    )
    with sql.registered("erasure_outcome", frame), sql.transaction():
        sql.execute(
            f"""update {DESTINATION_ERASURES.name} d set
                    status = case when o.ok then 'confirmed' else 'pending' end,
                    attempts = d.attempts + 1,
                    error = o.error,
                    confirmed_at = case when o.ok then cast(? as timestamp) end,
                    payload = case when o.ok then '{{}}' else d.payload end
                from erasure_outcome o
                where d.destination = ? and d.key = o.key and d.status = 'pending'""",
            [now, destination.name],
        )
        settle_receipts(sql, now)
    return {"erased": len(delivery.accepted), "erase_pending": len(failed)}


def settle_receipts(sql: Sql, now: object) -> None:
    """Each request's per-destination confirmations; a request whose destinations all confirmed is
    completed. A completed request's map is brought up to date too: an erasure held for a destination out
    of the configuration is confirmed once the destination is back."""
    sql.execute(
        f"""update {PRIVACY_REQUESTS.name} r set
                destinations = d.confirmations,
                status = case when d.waiting = 0 then 'completed' else 'pending' end,
                completed_at = case when d.waiting = 0 then coalesce(r.completed_at, cast(? as timestamp)) end
            from (
                select request_id,
                       map_from_entries(list({{'key': destination, 'value': case
                           when waiting > 0 then 'pending'
                           when held > 0 then 'not configured: nothing sent; held until it is configured again'
                           else 'confirmed ' || strftime(confirmed, '%Y-%m-%dT%H:%M:%S') end}}
                           order by destination)) as confirmations,
                       sum(waiting) as waiting
                from (
                    select request_id, destination, count(*) filter (where status = 'pending') as waiting,
                           count(*) filter (where status = 'held') as held, max(confirmed_at) as confirmed
                    from {DESTINATION_ERASURES.name} group by all
                ) group by request_id
            ) d
            where r.request_id = d.request_id and r.status in ('pending', 'completed')""",
        [now],
    )
    # A person no destination held is done once the warehouse and files are.
    sql.execute(
        f"""update {PRIVACY_REQUESTS.name} r set status = 'completed', completed_at = cast(? as timestamp)
            where r.status = 'pending'
              and not exists (select 1 from {DESTINATION_ERASURES.name} d where d.request_id = r.request_id)""",
        [now],
    )
