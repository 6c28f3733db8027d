"""Change detection and delivery bookkeeping for row-level destination syncs.

Each run compares the rows a destination should hold now with the rows it last *acknowledged*, by
primary key, and sends only the difference. The acknowledged state moves forward batch by batch, and only
for rows the destination accepted, so a crash at any point loses no change and never marks an unsent row
as sent: the next run's diff simply contains it again. A batch's answer adds its accepted rows to
`syncs.acknowledged`, and the sync folds them into `syncs.destination_state` once, when it ends (and, after
a run killed before that, when the next sync, erasure or access request begins): on an engine whose tables
are written anew to change a row (Spark's parquet tables), changing the state at every batch would cost
each batch a pass over every destination's acknowledged rows. Rows the
destination refused stay in `syncs.pending` and go first in every later run until they succeed or are
superseded, and every row's fate is written to `syncs.changelog`.

Every batch gets its idempotency key from the destination's batch sequence (`syncs.batch_sequence`) and
is written to `syncs.in_flight` before its first request. A batch whose answer never came (the
destination may have applied it) stays there and is resent with the same key before the next run plans
anything, so the destination can recognise the replay; an answered batch leaves it.
"""

import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

import pyarrow as pa

from resources.config import (
    CDPConfig,
    FileDestinationConfig,
    HashedAudienceDestinationConfig,
    RowDestinationConfig,
)
from resources.config.destinations import MERGED_FROM, RestDestinationConfig
from resources.destinations import Change, batch_id, merged_keys
from resources.hashing import IdentifierKind, hash_rows
from resources.identifiers import hashed_kind
from resources.sql import Scratch, Sql
from resources.tables import (
    ACKNOWLEDGED,
    BATCH_SEQUENCE,
    CUSTOMER_ALIASES,
    HASHED_ROWS,
    ID_REGISTRY,
    IN_FLIGHT,
    SUPPRESSIONS,
)
from resources.warehouse import sql_literal, utc_now


def ensure_tables(sql: Sql) -> None:
    """Create the batch bookkeeping tables if missing; cheap and idempotent."""
    sql.execute(BATCH_SEQUENCE.create_sql() + IN_FLIGHT.create_sql() + HASHED_ROWS.create_sql())


# Batch numbers are reserved from `syncs.batch_sequence` this many at a time, so numbering a batch writes
# nothing of its own (on Spark each write of the table rewrites it). Numbers a run reserved and did not use
# are skipped: the numbering has gaps, never a number given twice.
RESERVED_NUMBERS = 64


class BatchOpener:
    """Opens one sync's batches: each gets the destination's next batch number and its key, and is recorded
    as in flight before it is first sent, so that if its answer is lost, even to a crash, the next run
    resends it with this key. The batch is one row (its changes a list), so recording it costs little next
    to the request."""

    def __init__(self, sql: Sql, destination: str) -> None:
        self._sql, self._destination = sql, destination
        self._epoch, self._next, self._last = "", 1, 0

    def _reserve(self) -> None:
        sql, destination = self._sql, self._destination
        with sql.transaction():
            sql.execute(
                "insert into syncs.batch_sequence values (?, ?, 0) on conflict do nothing",
                [destination, secrets.token_hex(8)],
            )
            sql.execute(
                "update syncs.batch_sequence set last_sequence = last_sequence + ? where destination = ?",
                [RESERVED_NUMBERS, destination],
            )
            # Read back in the same transaction rather than with `returning`, which Spark's DML lacks.
            numbered = sql.row(
                "select epoch, last_sequence from syncs.batch_sequence where destination = ?", [destination]
            )
        assert numbered is not None  # the insert above made sure the destination has its row
        self._epoch, self._last = numbered[0], int(numbered[1])
        self._next = self._last - RESERVED_NUMBERS + 1

    def open(self, changes: list[Change]) -> str:
        """The new batch's key, once the batch is recorded in `syncs.in_flight`."""
        if self._next > self._last:
            self._reserve()
        sequence, self._next = self._next, self._next + 1
        key = batch_id(self._destination, self._epoch, sequence, changes)
        rows = pa.StructArray.from_arrays(
            [
                pa.array([c.key for c in changes], pa.string()),
                pa.array([c.operation for c in changes], pa.string()),
                pa.array([c.row_hash for c in changes], pa.string()),
                pa.array([c.payload for c in changes], pa.string()),
            ],
            names=["key", "operation", "row_hash", "row_json"],
        )
        opened = pa.table({"changes": pa.ListArray.from_arrays([0, len(changes)], rows)})
        # Registered outside the transaction: forgetting a frame inside one a failed statement aborted would
        # raise anew and hide that statement's error.
        with self._sql.registered("opened_frame", opened), self._sql.transaction():
            self._sql.execute(
                "insert into syncs.in_flight select ?, ?, ?, ?, changes from opened_frame",
                [self._destination, key, sequence, utc_now()],
            )
        return key


def batches_in_flight(sql: Sql, destination: str) -> list[tuple[str, list[Change]]]:
    """Batches sent earlier without an answer, oldest first, each with its key and its rows as sent."""
    return [
        (key, [Change(c["key"], c["operation"], row_hash=c["row_hash"], payload=c["row_json"]) for c in changes])
        for key, changes in sql.rows(
            "select batch_id, changes from syncs.in_flight where destination = ? order by sequence", [destination]
        )
    ]


# Which diff categories each sync mode sends, and as what operation.
_MODES: dict[str, dict[str, str]] = {
    "insert": {"new": "add"},
    "update": {"new": "update", "changed": "update"},
    "upsert": {"new": "add", "changed": "update"},
    "mirror": {"new": "add", "changed": "update", "left": "remove"},
    "delete": {"new": "remove"},
}


def can_remove(destination: RowDestinationConfig) -> bool:
    """Whether the destination can be sent a removal: every kind can but a REST API without a delete_url."""
    return not (isinstance(destination, RestDestinationConfig) and destination.delete_url is None)


# A plan's changes are read from the warehouse this many rows at a time (see `Plan.changes`).
PAGE_ROWS = 50_000


class Plan:
    """What one run will send, and what it will not (and why).

    The changes stay in the warehouse, in the plan's table, and are read a page at a time as they are sent
    (`chunks`): a first sync of millions of members holds one page in this process, not the segment, and on
    Spark no table passes whole through the driver. Only the keys failed earlier (`syncs.pending`, which
    waits for a destination to take them) are held here, to send them first."""

    def __init__(self, sql: Sql, table: str, rejected_table: str, retracting: bool) -> None:
        self._sql, self.table, self.rejected_table, self._retracting = sql, table, rejected_table, retracting
        self.skipped_for_consent = 0
        # Consented members without a value in a required field (see complete_sql): not sent.
        self.missing_required = 0
        # Rows refused (of them, `without_identifiers` only for having no identifier value: NO_IDENTIFIER).
        self.rejected = self.without_identifiers = 0
        self.superseded = 0
        # Keys that left whose hashed identifiers a member still wanted holds (see plan_sync): marked gone,
        # not sent.
        self.absorbed = 0
        self.retrying: set[str] = set()
        # Rows of the table that are sent, by kind (retractions aside: each comes with a changed row's update).
        self.upserts = self.removals = 0

    def changes(self, removals_first: bool = False) -> Iterator[Change]:
        """The changes in the order they are sent: removals first when `removals_first` (a hashed audience's
        retractions before the other removals) or last, and within each, the keys failed earlier first, then
        by key."""
        for kind in ("remove", "upsert") if removals_first else ("upsert", "remove"):
            # A kind with no row reads no page (on Spark each page is a job); retractions come with updates.
            if kind == "remove" and self._retracting and self.upserts:
                changed = "category = 'changed' and held_json is not null"
                for page in self._pages(changed, "0", "key, row_json, held_json"):
                    yield from _retractions(page)
            if not (self.removals if kind == "remove" else self.upserts):
                continue
            where = "operation = 'remove'" if kind == "remove" else "operation in ('add', 'update')"
            for page in self._pages(where, "retry_last", "key, operation, row_hash, row_json"):
                yield from (Change(k, op, row_hash=h, payload=j) for k, op, h, j in page)

    def chunks(self, rows: int, removals_first: bool = False) -> Iterator[list[Change]]:
        """`changes` in lists of at most `rows` changes of one kind (upserts or removals), so that the
        batches `deliver` cuts from consecutive chunks are the batches it would cut from all the changes
        when `rows` is a multiple of the batch size."""
        chunk: list[Change] = []
        for change in self.changes(removals_first):
            if chunk and (len(chunk) >= rows or (change.operation == "remove") != (chunk[0].operation == "remove")):
                yield chunk
                chunk = []
            chunk.append(change)
        if chunk:
            yield chunk

    def _pages(self, where: str, rank: str, columns: str) -> Iterator[list[tuple]]:
        """The rows of the plan's table matching `where`, by (`rank`, key), PAGE_ROWS at a time, each page
        read after the last one's rows (a key is once in the table): the warehouse runs other statements
        between pages (each batch's bookkeeping), which a result still being fetched would not survive."""
        after: list[object] = []
        while True:
            past = f"and ({rank} > ? or ({rank} = ? and key > ?))" if after else ""
            page = self._sql.rows(
                f"select {columns}, {rank} as page_rank, key as page_key from {self.table} where {where} {past}"
                f" order by page_rank, page_key limit {PAGE_ROWS}",
                after,
            )
            if not page:
                return
            yield [row[:-2] for row in page]
            if len(page) < PAGE_ROWS:
                return
            last_rank, last_key = page[-1][-2:]
            after = [last_rank, last_rank, last_key]


# The current ids of the suppressed customers (a suppression follows its customer through a merge).
SUPPRESSED_IDS = f"""select coalesce(r.current_id, s.customer_id) from {SUPPRESSIONS.name} s
    left join {ID_REGISTRY.name} r on r.customer_id = s.customer_id"""


def consented_sql(purpose: str | None) -> str:
    """Whether golden profile `p` may be sent to a destination of `purpose`: unknown consent is not
    consent, and a destination without a purpose takes everyone (the suppression list aside)."""
    consented = f'coalesce(p."consent_{purpose}", false)' if purpose else "true"
    # The suppression list stops every sync, whatever its purpose: a suppressed member counts as not consented.
    return f"{consented} and p.customer_id not in ({SUPPRESSED_IDS})"


def complete_sql(destination: FileDestinationConfig | RowDestinationConfig) -> str:
    """Whether golden profile `p` has a value in each of the destination's `required` fields: a member without
    one (an SMS tool's member with no phone) is not sent. Blank text is no value."""
    tests = [f"nullif(trim(p.\"{column}\"::varchar), '') is not null" for column in destination.required_columns()]
    return " and ".join(tests) or "true"


def current_rows(sql: Sql, destination: RowDestinationConfig, current: str) -> None:
    """Temp table `current(key, consented, complete, row_json)`: what the destination should hold now, the rows
    with `consented and complete`; a member not consented is kept to be removed, one not complete (see
    `complete_sql`) to be counted. Its name is the caller's, which owns (and drops) it."""
    source = "cdp.golden_profiles p"
    if destination.segment:
        source += (
            " join cdp.segment_membership m on m.customer_id = p.customer_id"
            f" and m.segment = {sql_literal(destination.segment)}"
        )
    consented = consented_sql(destination.purpose)
    fields = ", ".join(f'{sql_literal(name)}: p."{column}"' for name, column in destination.fields.items())
    sql.create_table_as(
        current,
        f"""select p."{destination.primary_key}"::varchar as key, {consented} as consented,
                   {complete_sql(destination)} as complete, to_json({{{fields}}})::varchar as row_json
            from {source}""",
        temporary=True,
    )


# Bump when what a hashed row holds changes (resources/hashing.py's rules, the payload's layout): rows kept
# in syncs.hashed_rows under another version are hashed again.
HASHING_VERSION = "1"


def hashing_settings(destination: HashedAudienceDestinationConfig, kinds: dict[str, IdentifierKind]) -> str:
    """What a hashed row depends on besides its clear values, as a short digest: the hashed fields and their
    `kinds`, the normalisation options and this module's code version. A row hashed under other settings
    is hashed again."""
    options = [HASHING_VERSION, kinds, destination.gmail_dots, destination.default_region, destination.phone_plus]
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def hash_identifiers(sql: Sql, destination: HashedAudienceDestinationConfig, current: str, tables: Scratch) -> str:
    """Replace clear identifiers by SHA-256 in table `current` (see `current_rows`), in place; returns a
    select of the rows rejected (key, reason), over `tables`' tables. A bad value is dropped from its row;
    a row left with no identifier at all is rejected with the reasons, never the whole batch.

    Normalising a phone number and hashing are Python's (`hashed_outcomes`). That cost 2.2 s for the
    53,841 consented champions of the 1M-people demo, 0.3 s when they are kept, so each member's outcome is
    kept in `syncs.hashed_rows` with the digest of its clear row: a later run hashes only the members whose
    clear row changed (new members, a new e-mail) and reads the rest; more than a page of them are hashed
    where they are (`Sql.map_arrow`: on Spark, on its executors), fewer in this process. Rows whose key is
    missing or shared are hashed every time (they are rejected later anyway)."""
    kinds: dict[str, IdentifierKind] = {
        name: hashed_kind(column)  # type: ignore  # never None: the configuration refuses other columns
        for name, column in destination.fields.items()
        if name.endswith("_sha256")
    }
    name, settings = destination.name, hashing_settings(destination, kinds)
    clear, hashed, outcomes = tables("clear"), tables("hashed"), tables("outcomes")
    sql.execute("delete from syncs.hashed_rows where destination = ? and settings <> ?", [name, settings])
    # Each consented row with its kept outcome, where its key is its own and its clear row is unchanged.
    sql.create_table_as(
        clear,
        f"""select c.*, h.row_json as kept_json, h.rejected as kept_rejected, h.key is not null as hit
            from (select key, row_json, md5(row_json) as clear_hash,
                         key is not null and count(*) over (partition by key) = 1 as cacheable
                  from {current} where consented and complete) c
            left join syncs.hashed_rows h
                   on h.destination = ? and c.cacheable and h.key = c.key and h.clear_hash = c.clear_hash""",
        [name],
        temporary=True,
    )
    hashing = partial(
        hashed_outcomes,
        kinds=kinds,
        gmail_dots=destination.gmail_dots,
        default_region=destination.default_region,
        phone_plus=destination.phone_plus,
    )
    missed = f"""select key, row_json, clear_hash, case when cacheable then 'yes' else 'no' end as cacheable
                 from {clear} where not hit"""
    # Members all kept (a re-sync with nothing new) start no hashing. Up to a page of them (a delta's new
    # and changed members) are hashed in this process, as they are sent, sparing Spark a job and its
    # Python workers (seconds); more are hashed where they are (`map_arrow`: on Spark, on the executors).
    misses = int(sql.value(f"select count(*) from {clear} where not hit"))
    if misses > PAGE_ROWS:
        sql.map_arrow(hashed, missed, hashing, HASHED_OUTCOME)
    elif misses:
        with sql.registered("hashed_frame", hashing(sql.arrow(missed))) as frame:
            sql.create_table_as(hashed, f"select * from {frame}", temporary=True)
    kept = f"select key, kept_json as row_json, kept_rejected as rejected from {clear} where hit"
    sql.create_table_as(
        outcomes,
        f"select key, row_json, rejected from {hashed} union all {kept}" if misses else kept,
        temporary=True,
    )
    # The kept outcomes follow the members: a key that left the audience, or changed, has its old row go.
    sql.execute(
        f"""delete from syncs.hashed_rows h where destination = ? and not exists
            (select 1 from {clear} c where c.cacheable and c.key = h.key and c.clear_hash = h.clear_hash)""",
        [name],
    )
    if misses:
        sql.execute(
            f"""insert or replace into syncs.hashed_rows
               select ?, key, clear_hash, ?, row_json, rejected from {hashed} where cacheable = 'yes'""",
            [name, settings],
        )
    sql.create_table_as(
        current,
        f"""select key, true as consented, true as complete, row_json from {outcomes} where rejected is null
           union all select key, consented, complete, row_json from {current} where not (consented and complete)""",
        temporary=True,
    )
    return f"select key, rejected as reason from {outcomes} where rejected is not null"


# Why a hashed audience leaves out a member with no identifier value at all (no e-mail, no phone): such a member
# cannot be in any audience, and there is nothing to fix, so unlike a value that cannot be read (`no usable
# identifier: ...`, a data problem to fix at the source) it does not fail the sync's `every_change_delivered`.
NO_IDENTIFIER = "no identifier to match by: every identifier field is empty"

# What `hashed_outcomes` gives for each row: the clear row's key, digest and whether it is kept (`yes`), and
# the hashed row or why it was rejected.
HASHED_OUTCOME = ("key", "clear_hash", "cacheable", "row_json", "rejected")


def hashed_outcomes(
    rows: pa.Table, *, kinds: dict[str, IdentifierKind], gmail_dots: bool, default_region: str, phone_plus: bool
) -> pa.Table:
    """The hashed row, or the reason it is rejected, for each clear row of `rows` (columns key, row_json,
    clear_hash, cacheable): `hash_identifiers`' Python part, row by row, so that it gives the same for a row
    whichever rows come with it (Spark calls it for each batch an executor holds)."""
    clear = [json.loads(row_json) for row_json in rows.column("row_json").to_pylist()]
    kept, rejects = (
        hash_rows(clear, kinds, gmail_dots=gmail_dots, default_region=default_region, phone_plus=phone_plus)
        if kinds
        else (clear, [])
    )
    # hash_rows reports every field of a row it drops, and fewer of a row it keeps.
    problems: dict[int, list[tuple[str, str]]] = {}
    for index, field_name, reason in rejects:
        problems.setdefault(index, []).append((field_name, reason))
    dropped = {index for index, found in problems.items() if len(found) == len(kinds)}
    payloads: list[str | None] = []
    reasons: list[str | None] = []
    outcomes = iter(kept)
    for index, row in enumerate(clear):
        if index in dropped:
            shown = [
                f"{field_name}: {reason} ({str(value)[:1]}***)"
                for field_name, reason in problems[index]
                if (value := row.get(field_name)) not in (None, "")
            ]
            payloads.append(None)
            reasons.append("no usable identifier: " + "; ".join(shown) if shown else NO_IDENTIFIER)
        else:
            payloads.append(json.dumps(next(outcomes), sort_keys=True))
            reasons.append(None)
    return pa.table(
        {
            "key": rows.column("key").cast(pa.string()),
            "clear_hash": rows.column("clear_hash").cast(pa.string()),
            "cacheable": rows.column("cacheable").cast(pa.string()),
            "row_json": pa.array(payloads, pa.string()),
            "rejected": pa.array(reasons, pa.string()),
        }
    )


def _retractions(rows: list[tuple]) -> list[Change]:
    """For a hashed audience, the removals of the hashes a changed member no longer has (an old e-mail's):
    the audience holds members by their hashes, so adding the new ones would leave the old ones targeted
    for good. Only the stale values are removed (a phone that stayed is kept); the client sends these
    before the updates (HashedAudienceClient.removals_first). `rows` are (key, row_json, held_json) of
    changed rows."""
    retractions = []
    for key, row_json, held_json in rows:
        now = json.loads(row_json)
        kept = {str(v) for v in now.values() if v is not None}
        stale = {
            field: value
            for field, value in json.loads(held_json).items()
            if value is not None and str(value) not in kept
        }
        if stale:
            retractions.append(Change(key, "remove", payload=json.dumps(stale)))
    return retractions


@contextmanager
def plan_sync(sql: Sql, config: CDPConfig, destination: RowDestinationConfig) -> Iterator[Plan]:
    """Diff what the destination should hold against what it acknowledged, following the sync mode.

    The rows wanted now, the diff and the plan are this step's own temporary tables, dropped when the block
    ends: the caller sends the plan's changes inside it."""
    # The diff is against everything acknowledged: the batches resent before the plan, and what a killed
    # run's destination accepted, are folded into the state first.
    fold_acknowledged(sql, destination.name)
    with sql.scratch("sync_plan") as tables:
        current, rejected = tables("current"), tables("rejected")
        categories = dict(_MODES[destination.mode])
        # A member whose consent was revoked (or who was suppressed) is removed in every mode that adds rows,
        # not only in mirror: the tool would otherwise keep contacting someone who said no. A REST destination
        # without a delete_url cannot remove anyone; its members stay as they were.
        if destination.mode != "delete" and can_remove(destination):
            categories["revoked"] = "remove"
        plan = Plan(
            sql,
            tables("plan"),
            rejected,
            retracting=destination.type == "hashed_audience" and "changed" in categories,
        )
        current_rows(sql, destination, current)
        refused = [
            f"""select key, case when key is null then 'missing primary key' else 'duplicate primary key' end as reason
                from {current} where consented and complete
                qualify key is null or count(*) over (partition by key) > 1"""
        ]
        if destination.type == "hashed_audience":
            refused.insert(0, hash_identifiers(sql, destination, current, tables))
        sql.create_table_as(
            rejected,
            " union all ".join(f"select key, reason from ({q}) r{i}" for i, q in enumerate(refused)),
            temporary=True,
        )
        name = sql_literal(destination.name)
        # A webhook keyed by customer id hears a merge as one update of the surviving key: the survivor's row
        # is sent (changed or not) naming the ids merged into it that the destination still holds
        # (MERGED_FROM), whose own rows are not sent (category 'merged') and leave the acknowledged state with
        # the survivor's (record_batch). So every key has one event per sync. Other clients delete the old
        # key with what the destination holds for it (an API with a fixed schema, an audience's member
        # fields, refuses a field it does not know) and upsert the survivor.
        folding = destination.type == "webhook" and destination.primary_key == "customer_id" and "left" in categories
        merges, survivor, merged = "", "false", "false"
        if folding:
            merges = f"""merged as (
                    select h.key as alias, a.customer_id as survivor from have h
                    join {CUSTOMER_ALIASES.name} a on a.alias_id = h.key and a.status = 'merged'
                    join want s on s.key = a.customer_id
                    where h.present and not exists (select 1 from want w where w.key = h.key)
                ),
                survivors as (select survivor as key, list(alias order by alias) as aliases from merged group by 1),"""
            survivor = "w.key in (select key from survivors)"
            merged = "h.key in (select alias from merged)"
        # An audience holds members by their hashed identifiers, not by key: a row that leaves (a customer
        # merged into another) with exactly the identifiers of a row still wanted is the same member, and
        # removing it would remove that one. It is not sent; its key is only marked gone (`absorbed`).
        held_elsewhere = "false"
        if destination.type == "hashed_audience":
            held_elsewhere = "exists (select 1 from want w where w.row_json = h.row_json)"
        # Each row of the diff with its operation in this mode (null: not sent) and whether it failed before
        # (`retry_last` 0: sent first).
        operation = " ".join(f"when {sql_literal(c)} then {sql_literal(op)}" for c, op in categories.items())
        row_json, operation_sql, survivors_join = "d.row_json", f"case d.category {operation} end", ""
        if folding:
            row_json = (
                "case when s.key is null then d.row_json else "
                f"json_merge_patch(d.row_json, json_object({sql_literal(MERGED_FROM)}, s.aliases))::varchar end"
            )
            operation_sql = f"case when s.key is null then {operation_sql} else 'update' end"
            survivors_join = "left join survivors s on s.key = d.key"
        sql.create_table_as(
            plan.table,
            f"""with want as (
                    select key, row_json, md5(row_json) as row_hash from {current}
                    where consented and complete and key is not null qualify count(*) over (partition by key) = 1
                ),
                have as (select * from syncs.destination_state where destination = {name}),
                {merges}
                diff as (
                    select w.key, w.row_json, w.row_hash,
                           case when h.key is null or not h.present then 'new' else 'changed' end as category,
                           case when h.present then h.row_json end as held_json
                    from want w left join have h using (key)
                    where h.key is null or h.present is distinct from ({destination.mode != "delete"})
                       or (h.present and h.row_hash <> w.row_hash) or {survivor}
                    union all
                    select h.key, h.row_json, h.row_hash,
                           case when {held_elsewhere} then 'held' when {merged} then 'merged'
                                when h.key in (select key from {current} where not consented) then 'revoked'
                                else 'left' end, null
                    from have h
                    where h.present and not exists (select 1 from want w where w.key = h.key)
                )
                select d.key, {row_json} as row_json, d.row_hash, d.category, d.held_json,
                       {operation_sql} as operation, case when p.key is null then 1 else 0 end as retry_last
                from diff d
                {survivors_join}
                left join (select distinct key from syncs.pending where destination = {name}) p on p.key = d.key""",
            temporary=True,
        )
        # One query for every count (on Spark each is a job).
        counts = sql.row(
            f"""select (select count(*) from {current} where not consented),
                       (select count(*) from {current} where consented and not complete),
                       (select count(*) from {rejected}),
                       (select count(*) from {rejected} where reason = {sql_literal(NO_IDENTIFIER)}),
                       coalesce(sum(case when operation in ('add', 'update') then 1 else 0 end), 0),
                       coalesce(sum(case when operation = 'remove' then 1 else 0 end), 0),
                       coalesce(sum(case when category = 'held' then 1 else 0 end), 0),
                       coalesce(sum(case when operation is not null and retry_last = 0 then 1 else 0 end), 0)
                from {plan.table}"""
        )
        assert counts is not None  # an aggregate gives one row
        plan.skipped_for_consent, plan.missing_required = int(counts[0]), int(counts[1])
        plan.rejected, plan.without_identifiers = int(counts[2]), int(counts[3])
        plan.upserts, plan.removals = int(counts[4]), int(counts[5])
        plan.absorbed = int(counts[6]) if "left" in categories else 0
        retrying = int(counts[7])
        pending = {k for (k,) in sql.rows(f"select key from syncs.pending where destination = {name}")}
        if retrying:
            plan.retrying = {
                k for (k,) in sql.rows(f"select key from {plan.table} where operation is not null and retry_last = 0")
            }
        superseded = sorted(pending - plan.retrying)
        plan.superseded = len(superseded)
        if superseded:
            with sql.registered("superseded_frame", pa.table({"key": pa.array(superseded, pa.string())})):
                sql.execute(
                    f"delete from syncs.pending where destination = {name}"
                    " and key in (select key from superseded_frame)"
                )
        yield plan


def record_batch(
    sql: Sql,
    destination: str,
    run_id: str,
    batch: str,
    accepted: list[Change],
    failed: list[tuple[Change, str]],
    pending: set[str] | None = None,
) -> None:
    """Acknowledge accepted rows (into the journal the sync folds when it ends) and queue failed ones, in one
    transaction per answered batch; the batch is no longer in flight (a refused batch that is split may settle
    no row: its parts are new batches). `pending`: the keys that may be in `syncs.pending`, when the caller
    knows them (None: any may be); accepted rows are looked for there only if one of them is (on Spark
    the look is a job of its own)."""
    now = utc_now()
    # A row naming the keys merged into its own (a webhook's, see plan_sync) is their removal too: the
    # destination folded them into it. Its own fields are recorded without them.
    rows: list[tuple[str, str, str | None, str]] = []
    for change in accepted:
        merged, fields = merged_keys(change)
        rows.append((change.key, change.operation, change.row_hash, fields))
        rows += [(key, "remove", None, json.dumps({"merged_into": change.key})) for key in merged]
    # The frames are registered outside the transaction (see `BatchOpener.open`), and only those the batch needs.
    with ExitStack() as frames:
        if accepted:
            accepted_frame = pa.table(
                {
                    "key": pa.array([r[0] for r in rows], pa.string()),
                    "operation": pa.array([r[1] for r in rows], pa.string()),
                    "row_hash": pa.array([r[2] for r in rows], pa.string()),
                    "row_json": pa.array([r[3] for r in rows], pa.string()),
                    "row_in_batch": pa.array(range(len(rows)), pa.int64()),
                }
            )
            frames.enter_context(sql.registered("accepted_frame", accepted_frame))
        if failed:
            failed_frame = pa.table(
                {
                    "key": pa.array([c.key for c, _ in failed], pa.string()),
                    "operation": pa.array([c.operation for c, _ in failed], pa.string()),
                    "error": pa.array([e[:1000] for _, e in failed], pa.string()),
                }
            )
            frames.enter_context(sql.registered("failed_frame", failed_frame))
        frames.enter_context(sql.transaction())
        if accepted:
            # Added to the journal the sync folds when it ends (`fold_acknowledged`), in the batch's order.
            sql.execute(
                f"""insert into {ACKNOWLEDGED.name}
                   select ?, key, row_hash, row_json, operation <> 'remove', ?,
                          (select max(sequence) from syncs.in_flight where destination = ? and batch_id = ?),
                          row_in_batch
                   from accepted_frame""",
                [destination, now, destination, batch],
            )
        sql.execute("delete from syncs.in_flight where destination = ? and batch_id = ?", [destination, batch])
        if accepted and (pending is None or any(r[0] in pending for r in rows)):
            sql.execute(
                "delete from syncs.pending where destination = ? and key in (select key from accepted_frame)",
                [destination],
            )
        if accepted:
            sql.execute(
                "insert into syncs.changelog select ?, ?, key, operation, 'sent', null, ? from accepted_frame",
                [destination, run_id, now],
            )
        if failed:
            sql.execute(
                """insert or replace into syncs.pending
                   select ?, f.key, f.operation, f.error, coalesce(p.attempts, 0) + 1,
                          coalesce(p.first_failed_at, ?), ?
                   from failed_frame f left join syncs.pending p on p.destination = ? and p.key = f.key""",
                [destination, now, now, destination],
            )
            sql.execute(
                "insert into syncs.changelog select ?, ?, key, operation, 'failed', error, ? from failed_frame",
                [destination, run_id, now],
            )


def fold_acknowledged(sql: Sql, destination: str | None = None) -> int:
    """Fold the rows destinations accepted (`syncs.acknowledged`) into `syncs.destination_state`, the last
    word on each key winning, and empty the journal, in one transaction; returns the rows folded. For one
    destination, or for all (`None`: before an erasure or an access request reads what destinations hold).
    A run killed before its sync folded leaves the journal to the next caller, so no acknowledged row is
    lost and none is folded twice."""
    where, params = ("where destination = ?", [destination]) if destination is not None else ("", [])
    waiting = int(sql.value(f"select count(*) from {ACKNOWLEDGED.name} {where}", params))
    if not waiting:
        return 0
    with sql.transaction():
        sql.execute(
            f"""insert or replace into syncs.destination_state
                select destination, key, row_hash, row_json, present, acknowledged_at from {ACKNOWLEDGED.name}
                {where}
                qualify row_number() over (
                    partition by destination, key order by sequence desc, row_in_batch desc) = 1""",
            params,
        )
        sql.execute(f"delete from {ACKNOWLEDGED.name} {where}", params)
    return waiting


def rows_held(sql: Sql, destination: str) -> int:
    """How many rows the destination is recorded to hold (acknowledged, not removed since)."""
    fold_acknowledged(sql, destination)
    return int(
        sql.value("select count(*) from syncs.destination_state where destination = ? and present", [destination])
    )


def forget_rows_held(sql: Sql, destination: str) -> int:
    """Forget what the destination is recorded to hold, when it is known to hold none of it (its table is
    gone): the next plan then sends every row it should hold. Returns how many rows it was recorded to hold."""
    held = rows_held(sql, destination)
    sql.execute("delete from syncs.destination_state where destination = ?", [destination])
    return held


def record_absorbed(sql: Sql, destination: str, run_id: str, plan: Plan) -> None:
    """Mark the plan's absorbed keys gone from the destination's acknowledged state, without sending them:
    the member they were is still wanted under another key (see plan_sync)."""
    if not plan.absorbed:
        return
    now = utc_now()
    held = f"select key from {plan.table} where category = 'held'"
    with sql.transaction():
        sql.execute(
            f"""update syncs.destination_state set present = false, acknowledged_at = ?
               where destination = ? and key in ({held})""",
            [now, destination],
        )
        sql.execute(
            f"insert into syncs.changelog select ?, ?, key, 'remove', 'absorbed', ?, ? from ({held})",
            [destination, run_id, "its hashed identifiers are a member still in the audience", now],
        )


def record_rejected(sql: Sql, destination: str, run_id: str, plan: Plan) -> None:
    """Changelog rows for the rows the plan rejected (no usable identifier, a missing or shared key)."""
    if plan.rejected:
        sql.execute(
            f"insert into syncs.changelog select ?, ?, key, null, 'rejected', reason, ? from {plan.rejected_table}",
            [destination, run_id, utc_now()],
        )


def record_outcome(
    sql: Sql,
    destination: str,
    run_id: str,
    status: str,
    rows: list[tuple[str | None, str | None, str]],
) -> None:
    """Changelog rows for what was not delivered in batches: rejected, deferred, superseded, dry run."""
    if not rows:
        return
    now = utc_now()
    frame = pa.table(
        {
            "key": pa.array([r[0] for r in rows], pa.string()),
            "operation": pa.array([r[1] for r in rows], pa.string()),
            "error": pa.array([r[2] for r in rows], pa.string()),
        }
    )
    with sql.registered("outcome_frame", frame):
        sql.execute(
            "insert into syncs.changelog select ?, ?, key, operation, ?, error, ? from outcome_frame",
            [destination, run_id, status, now],
        )
