"""Shared fixtures: a small generated customer base, a configuration pointing at it, one materialization."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from cdp_assets.definitions import FULL_REFRESH, build_definitions
from demo.configs import DEMO_DESTINATION, relocated_config
from demo.destination_server import DestinationServer
from demo.generate import generate
from resources.config import CDPConfig, load_config

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
    folder: Path
    config: CDPConfig
    defs: dg.Definitions
    instance: dg.DagsterInstance
    truth: Path

    def refresh(self) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(FULL_REFRESH).execute_in_process(instance=self.instance)

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        import duckdb

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
    truth = folder / "ground_truth.csv"
    generate(people=people, seed=seed, out_dir=folder / "landing", truth_path=truth)
    (folder / "landing" / "crm" / "known_bad.csv").write_text(KNOWN_BAD_CRM)
    config = load_config(write_config(folder, destination_url))
    return Platform(folder, config, build_definitions(config), instance, truth)


@pytest.fixture(scope="session")
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def dsn() -> str:
    """A real PostgreSQL server for the postgres destination (see tests/postgres_server.py)."""
    from tests.postgres_server import postgres_dsn

    with postgres_dsn() as server:
        yield server


@pytest.fixture(scope="session")
def destination_server() -> DestinationServer:
    """The demo destination, fault-free, on a free port: the HTTP syncs of the demo configuration go here."""
    with DestinationServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture(scope="session")
def platform(
    tmp_path_factory: pytest.TempPathFactory, instance: dg.DagsterInstance, destination_server: DestinationServer
) -> Platform:
    """A platform materialized once on 400 generated people; tests only read it."""
    built = make_platform(tmp_path_factory.mktemp("platform"), instance, destination_server.url)
    result = built.refresh()
    assert result.success
    return built
