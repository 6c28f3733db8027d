"""The code's shape: imports flow sensors → cdp_assets → resources, and no module imports itself back.
The collector, a process of its own, reads only the configuration (resources), never the stages.

Read from the source with `ast`, so a cycle hidden behind a late import inside a function counts too;
imports under `if TYPE_CHECKING:` are for the type checker only and do not.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cdp_assets", "resources", "sensors", "collector")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules a file imports at run time (anywhere in the file, outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    return {
        module: {name for name in _imports(path) if name in files and name != module} for module, path in files.items()
    }


GRAPH = _graph()


@pytest.mark.parametrize(
    ("package", "may_import"),
    [
        ("resources", {"resources"}),
        ("cdp_assets", {"cdp_assets", "resources", "sensors"}),
        ("sensors", {"resources"}),
        ("collector", {"collector", "resources"}),
    ],
)
def test_imports_flow_one_way(package: str, may_import: set[str]):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in may_import
    )
    assert wrong == []


def test_no_import_cycles():
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


def test_each_stage_is_one_package():
    stages = {"extract", "clean", "identity", "profiles", "segments", "syncs"}
    present = {p.name for p in (REPO / "cdp_assets").iterdir() if (p / "assets.py").exists()}
    assert stages <= present
    loose = sorted(
        p.name
        for p in (REPO / "cdp_assets").glob("*.py")
        if p.name not in {"__init__.py", "definitions.py", "metadata.py"}
    )
    assert loose == []


def _engine_imports(path: Path) -> set[str]:
    """Database engines a file imports (outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & {"duckdb", "pyspark"}


def test_stage_code_runs_sql_only_through_the_runner():
    """Stages and sensors never hold a connection: every statement goes through resources/sql.py, the one
    place a second engine plugs in."""
    offenders = sorted(
        str(path.relative_to(REPO))
        for package in ("cdp_assets", "sensors")
        for path in (REPO / package).rglob("*.py")
        if _engine_imports(path)
    )
    assert offenders == []
