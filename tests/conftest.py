"""Pytest fixtures and hooks: a small generated customer base materialized once, the servers tests talk to,
and the rule that every test carries exactly one tier marker. Shared helpers are in tests/fixtures.py."""

import dagster as dg
import pytest

from demo.destination_server import DestinationServer
from tests.fixtures import Platform, make_platform


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
