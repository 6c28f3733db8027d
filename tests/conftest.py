"""Pytest fixtures and hooks: a small generated customer base materialized once, the servers tests talk to,
and the rule that every test carries exactly one tier marker. Shared helpers are in tests/fixtures.py."""

import socket
from pathlib import Path

import dagster as dg
import pytest

import __main__
from demo.destination_server import DestinationServer
from tests.fixtures import Platform, make_platform

# The suite runs in pytest-xdist workers, whose __main__ module has neither a spec nor a file. pyspark's
# Spark Connect package, which Great Expectations imports when pyspark is installed, takes that for a
# doctest run and exits the process (pyspark/sql/connect/utils.py, check_dependencies): give it a name.
if getattr(__main__, "__spec__", None) is None and not hasattr(__main__, "__file__"):
    __main__.__file__ = "pytest-xdist worker"


@pytest.fixture(scope="session")
def instance() -> dg.DagsterInstance:
    """Dagster's in-memory instance: its runs and events are what the tests query, and kept in memory a
    run's event writes cost a fraction of what SQLite files on disk do (about 2 s of each small refresh).
    Tests of what reaches Dagster's storage on disk make a persistent instance of their own."""
    with dg.DagsterInstance.ephemeral() as inst:
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


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a SparkSession; pyspark is optional
    """One local Spark session (a JVM) for every Spark test. Without pyspark or Java the Spark tests are
    skipped on a developer's machine, but fail under CI, which installs both (`make test`, .ci/run)."""
    import os
    import shutil

    from resources.spark.udfs import BUILD_DIR, JAR_NAME

    found = {
        "pyspark": _has_pyspark(),
        "java": shutil.which("java"),
        "javac (to build the UDF jar)": shutil.which("javac") or (BUILD_DIR / JAR_NAME).exists(),
    }
    missing = [what for what, present in found.items() if not present]
    if missing:
        message = f"the Spark tests need {' and '.join(missing)}: make test installs pyspark, .ci/run a JDK"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from resources.spark.runner import spark_session

    session = spark_session(master="local[2]", warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"))
    yield session
    session.stop()


def _has_pyspark() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyspark") is not None


TIERS = ("unit", "stage", "dagster", "e2e", "spark")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse the run when a test has no tier marker or more than one (before `-m` deselects anything)."""
    wrong = []
    for item in items:
        tiers = [mark.name for mark in item.iter_markers() if mark.name in TIERS]
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one tier marker ({', '.join(TIERS)}; see pyproject.toml): "
            "`pytestmark = pytest.mark.<tier>` for a file of one tier, `@pytest.mark.<tier>` per test otherwise\n"
            + "\n".join(wrong)
        )
    # `make test`'s two workers (pytest-xdist, --dist loadfile --no-loadscope-reorder) each take the next
    # file in this order when they finish one: the costliest files first, so that none of them starts last
    # and keeps one worker busy long after the other is done (the Spark pipeline's file alone is about a
    # quarter of the suite's work; xdist's own order, files with more tests first, handed it out last). A
    # file costs what its costliest test's markers say (_COST_ORDER).
    cost: dict[Path, int] = {}
    for item in items:
        cost[item.path] = min(cost.get(item.path, len(_COST_ORDER)), _cost_rank(item))
    items.sort(key=lambda item: cost[item.path])


# From the costliest kind of test to the cheapest: whole runs on Spark in other processes, other slow
# tests, the tiers that start other processes or run Dagster, then the rest.
_COST_ORDER = (("spark", "slow"), ("slow",), ("e2e",), ("spark",), ("dagster",), ("stage",), ("unit",))


def _cost_rank(item: pytest.Item) -> int:
    """The place of `item` in _COST_ORDER: the first entry whose markers it all carries."""
    marks = {mark.name for mark in item.iter_markers()}
    return next((rank for rank, needed in enumerate(_COST_ORDER) if marks.issuperset(needed)), len(_COST_ORDER))


@pytest.fixture(autouse=True)
def _unit_tests_open_no_sockets(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that connects to or serves on a socket belongs to another tier."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{request.node.nodeid} is marked unit but opens a network socket: mark it stage or e2e")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket.socket, "bind", refuse)
