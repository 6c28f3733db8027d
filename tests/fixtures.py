"""Helpers the tests share: the demo configuration for a test folder, a generated and materialized
platform to query, known bad CRM rows, seeded broken CSV lines, and a hand-made warehouse resolved by the
identity stage.

Plain functions and classes, imported by the test modules; the pytest fixtures built on them are in
conftest.py.
"""

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from cdp_assets.identity.assets import resolve
from demo.configs import DEMO_DESTINATION, relocated_config
from demo.generate import generate
from resources.config import CDPConfig, load_config
from resources.sql import Sql
from resources.warehouse import bootstrap

REPO = Path(__file__).resolve().parents[1]


def write_config(folder: Path, destination_url: str = DEMO_DESTINATION, **overrides: object) -> Path:
    """The demo configuration under `folder`, loading files as soon as they land (no settle time)."""
    path = relocated_config(folder, destination_url, **overrides)
    raw = yaml.safe_load(path.read_text())
    raw["landing"]["settle_seconds"] = 0
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class Platform:
    """A platform on a test folder: its configuration, definitions and instance, queried read-only."""

    folder: Path
    config: CDPConfig
    defs: dg.Definitions
    instance: dg.DagsterInstance
    truth: Path

    def refresh(self) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=self.instance)

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.config.warehouse_path), read_only=True) as conn:
            return conn.execute(query, params or []).fetchall()

    def scalar(self, query: str, params: list | None = None):
        return self.sql(query, params)[0][0]


CRM_HEADER = (
    "ContactId,First Name,Last Name,Email,Phone,Mailing Street,Mailing City,Mailing State,"
    "Mailing Postal Code,Mailing Country,Birthdate,Email Opt In,Last Modified\n"
)
# Known bad values, one per line, so tests need not hope the generator sprinkled them.
KNOWN_BAD_CRM = CRM_HEADER + (
    "KB-1,Ann,Lee,ann.lee@,(212) 736-5000,1 Elm St,Boston,MA,02134,US,01/02/1980,true,2025-01-01T00:00:00Z\n"
    "KB-2,Bo,Chan,bo@example.org,(212) 736-5001,1 Elm St,Boston,MA,02134,US,02/30/1985,true,2025-01-01T00:00:00Z\n"
    "KB-3,Cy,Diaz,cy@example.org,0000000000,1 Elm St,Boston,MA,02134,Narnia,,maybe,2025-01-01T00:00:00Z\n"
    ",Di,Eng,di@example.org,,,,,,,,,2025-01-01T00:00:00Z\n"
)


def make_platform(
    folder: Path, instance: dg.DagsterInstance, destination_url: str, people: int = 400, seed: int = 7
) -> Platform:
    """`people` generated people plus the known bad CRM rows under `folder`, not yet materialized."""
    truth = folder / "ground_truth.csv"
    generate(people=people, seed=seed, out_dir=folder / "landing", truth_path=truth)
    (folder / "landing" / "crm" / "known_bad.csv").write_text(KNOWN_BAD_CRM)
    config = load_config(write_config(folder, destination_url))
    return Platform(folder, config, build_definitions(config), instance, truth)


def identity_warehouse(tmp_path: Path, records: list[dict], identity: dict | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse of person records with their e-mail and phone identifiers, resolved by identity."""
    raw = {"sources": [{"name": "crm", "format": "csv", "glob": "*.csv", "role": "person", "record_id": "id"}]}
    if identity:
        raw["identity"] = identity
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    conn = duckdb.connect(":memory:")
    bootstrap(conn)
    for i, r in enumerate(records):
        conn.execute(
            """insert into clean.person_records (source, source_record_id, file, row_number, is_latest, first_name,
               last_name, date_of_birth, email, email_match_key, phone, address_key, postal_code, city)
               values ('crm', ?, 'f.csv', ?, true, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [r["id"], i + 2, r.get("first"), r.get("last"), r.get("dob"), r.get("email"), r.get("email"),
             r.get("phone"), r.get("address"), r.get("zip"), r.get("city")],
        )  # fmt: skip
        for id_type in ("email", "phone"):
            if r.get(id_type):
                conn.execute(
                    "insert into clean.person_identifiers values ('crm', ?, ?, ?, 'f.csv', ?)",
                    [r["id"], id_type, r[id_type], i + 2],
                )
        for id_type, value in r.get("ids", {}).items():
            conn.execute(
                "insert into clean.person_identifiers values ('crm', ?, ?, ?, 'f.csv', ?)",
                [r["id"], id_type, value, i + 2],
            )
    resolve(Sql(conn), config)
    return conn


def customers(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Source record id -> customer id, from the identity map."""
    return dict(conn.execute("select source_record_id, customer_id from cdp.identity_map").fetchall())


def wait_for(condition: Callable[[], object], what: str, timeout: float = 180, every: float = 0.2) -> object:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds.

    For what other processes bring about (a daemon failing a run, a lock changing hands): the wait is on
    the condition, bounded by the deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


# A one-source platform of hand-written CRM rows, for tests of how customer ids behave end to end.
CRM_PEOPLE_HEADER = "id,first,last,email,phone\n"
OVERRIDES_HEADER = "action,record,other,author,reason\n"
FAST_RETRY = {"max_attempts": 4, "base_delay_seconds": 0.01, "max_delay_seconds": 0.05, "timeout_seconds": 2}


def crm_platform_config(
    folder: Path,
    destination_url: str,
    overrides: str | None = None,
    segments: dict[str, str] | None = None,
    webhook: bool = False,
    webhook_fields: dict[str, str] | None = None,
) -> CDPConfig:
    """`folder/cdp.yaml`: a CRM CSV source (`landing/crm/*.csv`, CRM_PEOPLE_HEADER), the segments given
    (name -> condition; default `everyone`), a mirror REST destination of the first segment on the demo
    destination at `destination_url` (and a webhook, if asked, sending `webhook_fields`, by default the
    e-mail), and the override lines given, if any."""
    segments = segments or {"everyone": "record_count >= 1"}
    first = next(iter(segments))
    destinations: list[dict[str, object]] = [
        {
            "name": "crm_mirror",
            "type": "rest",
            "segment": first,
            "upsert_url": f"{destination_url}/rest/crm/upsert",
            "delete_url": f"{destination_url}/rest/crm/delete",
            "mode": "mirror",
            "fields": {"email": "email", "first_name": "first_name"},
            "retry": FAST_RETRY,
        }
    ]
    if webhook:
        destinations.append(
            {
                "name": "hook",
                "type": "webhook",
                "segment": first,
                "url": f"{destination_url}/webhook/hook",
                "mode": "mirror",
                "fields": webhook_fields or {"email": "email"},
                "retry": FAST_RETRY,
            }
        )
    raw: dict[str, object] = {
        "warehouse": {"path": str(folder / "warehouse.duckdb")},
        "landing": {"path": str(folder / "landing"), "settle_seconds": 0},
        "sources": [
            {
                "name": "crm",
                "format": "csv",
                "glob": "crm/*.csv",
                "role": "person",
                "record_id": "id",
                "fields": {"first_name": "first", "last_name": "last", "email": "email", "phone": "phone"},
                "identifiers": [{"path": "email", "type": "email"}, {"path": "phone", "type": "phone"}],
            }
        ],
        "segments": [{"name": name, "where": where} for name, where in segments.items()],
        "destinations": destinations,
    }
    if overrides is not None:
        (folder / "overrides.csv").write_text(OVERRIDES_HEADER + overrides)
        raw["identity"] = {"overrides": "overrides.csv"}
    path = folder / "cdp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def materialize_stages(
    config_path: Path, instance: dg.DagsterInstance, stages: tuple[str, ...]
) -> tuple[dg.ExecuteInProcessResult, dg.Definitions]:
    """Materialize the assets of `stages` (key prefixes: raw, clean, identity, profiles, ...) of the
    configuration at `config_path`, checks included; the run must succeed."""
    defs = build_definitions(load_config(config_path))
    chosen = [a for a in defs.assets if a.key.path[0] in stages]
    result = dg.materialize(chosen, instance=instance, resources=defs.resources, selection=dg.AssetSelection.all())
    assert result.success
    return result, defs


def check_evaluation(
    result: dg.ExecuteInProcessResult, check: str, asset: str | None = None
) -> dg.AssetCheckEvaluation:
    """The one evaluation of `check` in a run (on the asset whose key ends in `asset`, where several have it)."""
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == check
        and (asset is None or e.event_specific_data.asset_key.path[-1] == asset)
    ]
    return evaluation


def nasty_csv(rng: random.Random, lines: int) -> str:
    """Seeded CSV lines of every kind a broken export holds, the odd ones among plain rows: values across
    lines, unterminated and stray quotes, rows of too many fields, carriage returns inside values, blank
    lines and blank quoted values, accented text."""
    odd = [
        "",
        '{n},Ann,"Lee","one\ntwo, with ""quotes""\nthree"',
        '{n},"open,Lee,3',
        "{n},too,many,fields,here",
        '"{n}" x,a,b,c',
        '"   \n   "',
        "{n},a\rb,c,d",
        '{n},a,b,"x"y"',
        '",x,y',
        '{n},"a""b",c,"d\r\ne"',
        '{n},Zoë,"Ørsted\n",é',
        '{n},"',
        "   ",
    ]
    out = ["id,first,last,note"]
    for n in range(lines):
        if rng.random() < 0.15:
            out.append(rng.choice(odd).format(n=n))
        else:
            out.append(f"r{n},Ann{'x' * rng.randrange(0, 20)},Lee,{n}")
    return "\n".join(out) + rng.choice(["", "\n"])


def raw_json_warehouse(tmp_path: Path, sources: list[dict], raw_rows: dict[str, list[dict]]) -> tuple[CDPConfig, Sql]:
    """A configuration of `sources` and an in-memory warehouse whose raw tables hold `raw_rows` (source ->
    records, one JSON line each of file `<source>/a.jsonl`)."""
    path = tmp_path / "cdp.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    config = load_config(path)
    conn = duckdb.connect(":memory:")
    bootstrap(conn)
    for table, rows in raw_rows.items():
        conn.execute(f"create table raw.{table} (_file varchar, _row_number bigint, _loaded_at timestamp, record json)")
        conn.executemany(
            f"insert into raw.{table} values ('{table}/a.jsonl', ?, now()::timestamp, ?)",
            [[i + 1, json.dumps(r)] for i, r in enumerate(rows)],
        )
    return config, Sql(conn)
