"""What identity read and wrote in its last run, so a run whose inputs have not changed since does no work.

Identity's result is a function of the cleaned records and identifiers, the identity configuration (with
the overrides file's content and the rules' code version), the kept matching model and the id registry.
The registry is identity's own output, and so is the model (trained inside the identity run), so when
the cleaned tables, the configuration and the model are as the last run left them, a run would give the
same customers with the same ids: it is skipped (`mode: unchanged`) and the tables are kept.

"As the last run left them" is decided by content, not by which files cleaning read: a fingerprint (row
count and the sum of row hashes, order-free) of what identity reads of the cleaned tables, so a change made
by any step (a file cleaned again, an erasure) is seen. Only what it reads: each person record's latest
version in the columns of PERSON_COLUMNS, every identifier as (record, type, value), and which activity
records there are. A record sent again with changes identity never reads (a consent flag, a new
`updated_at`, a field no identifier or comparison uses), or new events of a known browser giving no new
identifier, leave the fingerprint as it was, so identity keeps its result while profiles take the change.
The identity map's own fingerprint is kept too: a map changed or dropped since (by hand, by a restore) is
resolved again rather than trusted.
"""

import json
from dataclasses import dataclass

from cdp_assets.identity.matching.model import TRAINING_TABLE, model_in_use
from cdp_assets.identity.overrides import OverrideReport
from resources.config import CDPConfig
from resources.sql import Sql
from resources.tables import ACTIVITY_ROLES, ROLES
from resources.warehouse import sql_literal, utc_now

RESOLVED_INPUTS = "identity.resolved_inputs"
# Tables every identity run writes: a run is skipped only when they are all there.
IDENTITY_OUTPUTS = (
    "cdp.identity_map",
    "identity.evidence",
    "identity.review",
    "identity.model",
    "identity.blocked_identifiers",
    "identity.shared_identifiers",
    "identity.shared_identifier_groups",
    "identity.links",
)
# The columns of a person record's latest version that identity reads (its `person_latest`): the sharing
# and bridge checks and the matching features are made of them, and of the identifiers.
PERSON_COLUMNS = (
    "first_name",
    "last_name",
    "date_of_birth",
    "email_match_key",
    "phone",
    "address_key",
    "postal_code",
    "city",
)
# (table, columns, rows) of what identity reads: the latest person records' columns above, and identifiers as
# (record, type, value) wherever the row that gave them was. With them, the set of activity records (see
# read_inputs).
_READ = [
    ("clean.person_records", ", ".join(("source", "source_record_id", *PERSON_COLUMNS)), "is_latest"),
    *((f"clean.{role}_identifiers", "source, source_record_id, id_type, id_value", "true") for role in ROLES),
]


def activity_records(sql: Sql, out: str) -> None:
    """Temp table `out` (source, source_record_id, role): every activity record once. The fingerprint reads
    it, and a run numbers it as its activity nodes (resolve): made once for both, since making millions of
    event rows distinct is most of the work of each. Kept apart from the numbering too: at 3.5M activity
    records, making them distinct and numbering them took 2.3 s in one statement, 1.3 s in two."""
    sql.create_table_as(
        out,
        " union all ".join(
            f"select distinct source, source_record_id, {sql_literal(role)} as role from clean.{role}"
            for role in ACTIVITY_ROLES
        ),
        temporary=True,
    )


@dataclass(frozen=True)
class IdentityInputs:
    """Fingerprints of what one identity run read (`records`, `settings`) and of what it left (`model`,
    `outputs`): a later run whose fingerprints are all equal would write the same tables."""

    records: str
    settings: str
    model: str = ""
    outputs: str = ""


def _content(sql: Sql, table: str, columns: str, where: str = "true") -> str:
    count, total = sql.row(f"select count(*), coalesce(sum(hash({columns})), 0) from {table} t where {where}") or (0, 0)
    return f"{count}:{total}"


def read_inputs(sql: Sql, config: CDPConfig, code_version: str, settings: str, activity: str) -> IdentityInputs:
    """The fingerprints of identity's inputs now: the cleaned tables' content, and `settings` (the identity
    configuration's fingerprint) with the overrides file's content, the rules' `code_version` and the
    roles that have sources. `activity` is a temp table name of the caller's, filled with activity_records:
    identity numbers activity records and reads none of their other columns, nor how many rows each has,
    so new events of a browser already known, with no identifier it had not given, leave it as it was."""
    activity_records(sql, activity)
    of_role = "(select source, source_record_id from {} where role = {})"
    read = [
        *_READ,
        *((of_role.format(activity, sql_literal(role)), "source, source_record_id", "true") for role in ACTIVITY_ROLES),
    ]
    records = "|".join(_content(sql, table, columns, where) for table, columns, where in read)
    roles = [role for role in ROLES if config.sources_with_role(role)]
    # The overrides as read (an unreadable file fails here, as the run would).
    described = json.dumps([code_version, settings, roles, repr(config.identity_overrides())])
    return IdentityInputs(records=records, settings=described)


def with_outputs(sql: Sql, inputs: IdentityInputs) -> IdentityInputs:
    """`inputs` with the fingerprints of the model in use and of the identity map as they are now."""
    model = model_in_use(sql) or "none"
    outputs = _content(sql, "cdp.identity_map", "t") if sql.table_exists("cdp.identity_map") else "missing"
    return IdentityInputs(inputs.records, inputs.settings, model, outputs)


def why_resolve(sql: Sql, now: IdentityInputs, retrain: bool, current: IdentityInputs) -> str | None:
    """Why this run must resolve identity, or None when nothing it reads changed since the last run;
    `current` is with_outputs(sql, now), which the caller also asks map_as_left about."""
    if retrain:
        return "retraining the matching model was requested"
    if not sql.table_exists(RESOLVED_INPUTS):
        return "no earlier identity run is recorded"
    last = sql.row(f"select records, settings, model, outputs from {RESOLVED_INPUTS}")
    if last is None:
        return "no earlier identity run is recorded"
    if any(not sql.table_exists(table) for table in IDENTITY_OUTPUTS):
        return "an identity table is missing"
    if last[1] != now.settings:
        return "the identity configuration, the overrides or the rules changed"
    if last[0] != now.records:
        return "the cleaned records changed"
    if last[2] != current.model:
        return "the matching model changed"
    if last[3] != current.outputs:
        return "cdp.identity_map changed since the last identity run"
    return None


def settings_as_last_run(sql: Sql, now: IdentityInputs) -> bool:
    """Whether the last run completed with the configuration, overrides and rules of `now`: what it scored
    and kept can then be built on (see matching/pairs.py)."""
    if not sql.table_exists(RESOLVED_INPUTS):
        return False
    return sql.value(f"select settings from {RESOLVED_INPUTS}") == now.settings


def map_as_left(sql: Sql, current: IdentityInputs) -> bool:
    """Whether `cdp.identity_map` is what the last completed run left (its fingerprint in `current`, from
    with_outputs, is the one kept): only then is it the record ids' twin, which a run may bring up to date
    by rewriting only the records whose id changed. A map edited, restored or half-written since is
    written whole."""
    if not sql.table_exists(RESOLVED_INPUTS):
        return False
    return sql.value(f"select outputs from {RESOLVED_INPUTS}") == current.outputs


def record_run(sql: Sql, config: CDPConfig, inputs: IdentityInputs, report: OverrideReport, run_id: str | None) -> None:
    """Remember what this run read and left, after it has written every table. Of the overrides report
    only line numbers and sides are kept: a side's text may be an e-mail address, and is the file's
    anyway (read again by `last_override_report`)."""
    done = with_outputs(sql, inputs)
    by_line = {o.line: o for o in config.identity_overrides()}
    sides = [(line, "record" if by_line[line].record.text == text else "other") for line, text in report.unresolved]
    overrides = json.dumps({"applied": report.applied, "unresolved": sides, "refused": report.refused})
    sql.create_table_as(
        RESOLVED_INPUTS,
        """select cast(? as varchar) as records, cast(? as varchar) as settings, cast(? as varchar) as model,
                  cast(? as varchar) as outputs, cast(? as varchar) as overrides, cast(? as varchar) as run_id,
                  cast(? as timestamp) as resolved_at""",
        [done.records, done.settings, done.model, done.outputs, overrides, run_id, utc_now()],
    )


def last_override_report(sql: Sql, config: CDPConfig) -> OverrideReport:
    """What the overrides did in the last run: the same file on the same records does it again."""
    text = sql.value(f"select overrides from {RESOLVED_INPUTS}")
    kept = json.loads(text) if text else {}
    by_line = {o.line: o for o in config.identity_overrides()}

    def side_text(line: int, side: str) -> str:
        named = by_line[line].record if side == "record" else by_line[line].other
        return named.text if named else ""

    return OverrideReport(
        applied=int(kept.get("applied", 0)),
        unresolved=[(int(line), side_text(int(line), side)) for line, side in kept.get("unresolved", [])],
        refused=[(int(line), str(why)) for line, why in kept.get("refused", [])],
    )


def kept_model(sql: Sql) -> dict[str, object]:
    """The metadata's account of the model for a run that kept everything: the model in use, as trained."""
    if not sql.table_exists(TRAINING_TABLE):
        return {}
    trained_at = sql.value(f"select trained_at from {TRAINING_TABLE}")
    return {"model_training": "kept", "model_trained_at": trained_at} if trained_at else {}
