"""A hand-made warehouse of person records, resolved by the identity stage, for the identity tests."""

from pathlib import Path

import duckdb
import yaml

from cdp_assets.identity.assets import resolve
from resources.config import load_config
from resources.warehouse import bootstrap


def warehouse(tmp_path: Path, records: list[dict], identity: dict | None = None) -> duckdb.DuckDBPyConnection:
    """Write person records with their e-mail and phone identifiers and resolve them."""
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
    resolve(conn, config)
    return conn


def customers(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(conn.execute("select source_record_id, customer_id from cdp.identity_map").fetchall())
