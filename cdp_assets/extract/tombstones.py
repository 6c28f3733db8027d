"""Erased people stay erased: rows of a newly loaded file that carry an erased identifier are set aside.

An erasure leaves a tombstone for each record id and identifier value only the erased person carried: a
keyed hash (resources/privacy.py), never the value. When a file is loaded, each row's record id, identifiers
and e-mail and phone fields are put in the form the warehouse compares them in (the identifier types'
normalisers, as cleaning does), hashed with the same key and looked up; a row that matches is deleted before
its load commits and quarantined with the reason `erased person` and the hash as its value. So a replayed or
new file cannot bring the person back, and their values are not stored even in the raw table.

The tombstones are kept twice: in `privacy.tombstones` and in a ledger file beside the privacy requests
(`tombstones.jsonl`, keyed hashes only). A warehouse lost and rebuilt from the landing folder, or an engine
switched (an empty warehouse), would otherwise forget them, and the next file holding an erased person
would bring them back; each extract makes the two hold the same tombstones first.
"""

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd

from cdp_assets.extract.fields import record_id_sql, value_sql
from cdp_assets.extract.readers import Reject
from resources.config import CDPConfig, FieldSpec, SourceConfig
from resources.durable import replace_atomically
from resources.identifiers import NORMALISERS, contact_kinds
from resources.privacy import keyed_hash, keyed_hash_sql, record_kind
from resources.sql import Sql
from resources.tables import TOMBSTONES

REASON = "erased person"
# The ledger's name in the privacy requests folder (a request file is a CSV there: this is no request).
LEDGER = "tombstones.jsonl"


class LedgerError(ValueError):
    """The tombstone ledger cannot be read; the message names the file and line."""


def ledger_path(config: CDPConfig) -> Path:
    """Where the tombstones are kept outside the warehouse (see the module's docstring)."""
    return config.privacy_requests_path / LEDGER


def _read_ledger(path: Path) -> dict[str, tuple[str, str, str]]:
    """hash -> (kind, request_id, erased_at) of every tombstone in the ledger. A line that is not one stops
    the run: skipping it would let an erased person back in."""
    if not path.exists():
        return {}
    kept: dict[str, tuple[str, str, str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            kept[entry["hash"]] = (entry["kind"], entry["request_id"], entry["erased_at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                f"{path} line {number} is not a tombstone ({type(exc).__name__}: {exc}); each line is "
                '{"hash", "kind", "request_id", "erased_at"} as an erasure wrote it: restore the file from a '
                "backup rather than delete the line, or the erased person it keeps out may load again"
            ) from None
    return kept


def reconcile_ledger(sql: Sql, config: CDPConfig) -> int:
    """Make `privacy.tombstones` and the ledger hold the same tombstones, their union; returns how many the
    table took from the ledger (those a lost or new warehouse had forgotten)."""
    path = ledger_path(config)
    on_file = _read_ledger(path)
    in_table = {
        h: (k, r, at.isoformat() if isinstance(at, datetime) else str(at))
        for h, k, r, at in sql.rows(f"select hash, kind, request_id, erased_at from {TOMBSTONES.name}")
    }
    restored = [(h, *entry) for h, entry in on_file.items() if h not in in_table]
    if restored:
        frame = pd.DataFrame(restored, columns=["hash", "kind", "request_id", "erased_at"])
        with sql.registered("ledger_frame", frame):
            sql.execute(
                f"insert into {TOMBSTONES.name} select hash, kind, request_id, erased_at::timestamp "
                "from ledger_frame on conflict do nothing"
            )
    if any(h not in on_file for h in in_table):
        union = {**on_file, **in_table}
        text = "".join(
            json.dumps({"hash": h, "kind": k, "request_id": r, "erased_at": at}) + "\n"
            for h, (k, r, at) in sorted(union.items())
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, lambda staging: staging.write_text(text, encoding="utf-8"), mode=0o600)
    return len(restored)


def tombstone_hashes(sql: Sql) -> set[str]:
    """Every tombstone; small next to any file (one to a few per erased identifier)."""
    return {h for (h,) in sql.rows(f"select hash from {TOMBSTONES.name}")}


def identifier_checks(
    config: CDPConfig, source: SourceConfig
) -> list[tuple[str, str, str, Callable[[str], str | None] | None]]:
    """(field label, SQL of its raw text, tombstone kind, how a value becomes its match form, None when the text
    is its match form) per check."""
    checks: list[tuple[str, str, str, Callable[[str], str | None] | None]] = [
        ("record id", record_id_sql(source), record_kind(source.name), None)
    ]
    for ident in source.identifiers:
        normaliser = NORMALISERS[config.identity.type_config(ident.type).normalize]
        expr = value_sql(source, FieldSpec(path=[ident.path]))
        if normaliser.kept_as_written:
            checks.append((ident.path, expr, ident.type, None))
        else:
            checks.append(
                (ident.path, expr, ident.type, lambda v, n=normaliser: n.match_key(v, source.default_country))
            )
    for kind in contact_kinds():
        spec = source.fields.get(kind)
        if spec is not None and spec.path:
            normaliser = NORMALISERS[kind]
            checks.append(
                (
                    " | ".join(spec.path),
                    value_sql(source, spec),
                    kind,
                    lambda v, n=normaliser: n.match_key(v, source.default_country),
                )
            )
    return checks


def erased_rows(
    sql: Sql, config: CDPConfig, source: SourceConfig, table: str, file: str, *, key: bytes, hashes: set[str]
) -> list[Reject]:
    """Delete the file's rows in `table` that carry a tombstoned value; their quarantine rows (hash, not value)."""
    found: dict[int, Reject] = {}
    for label, expr, kind, match in identifier_checks(config, source):
        if match is None:
            # Taken as written: hashed and looked up in the database.
            digest, params = keyed_hash_sql(key, kind, expr)
            for row_number, hashed in sql.rows(
                f"""select _row_number, hashed from (
                        select _row_number, {digest} as hashed from {table} where _file = ? and {expr} <> '')
                    where hashed in (select hash from {TOMBSTONES.name} where kind = ?)""",
                [*params, file, kind],
            ):
                found.setdefault(int(row_number), Reject(int(row_number), REASON, hashed, label))
            continue
        values = [v for (v,) in sql.rows(f"select distinct {expr} from {table} where _file = ?", [file]) if v]
        hits = {}
        for value in values:
            matched = match(value)
            if matched is not None and (digest := keyed_hash(key, kind, matched)) in hashes:
                hits[value] = digest
        if not hits:
            continue
        for row_number, value in sql.rows(
            f"select _row_number, {expr} from {table} where _file = ? and list_contains(?, {expr})",
            [file, list(hits)],
        ):
            found.setdefault(int(row_number), Reject(int(row_number), REASON, hits[value], label))
    if found:
        sql.execute(f"delete from {table} where _file = ? and list_contains(?, _row_number)", [file, sorted(found)])
    return [found[n] for n in sorted(found)]
