"""Dependencies point inward, each layer imports only what it may, and no import cycle exists.

The rules (DESIGN.md, README "Architecture"):
- domain: the standard library, numpy and itself;
- application: the standard library, numpy, the domain and itself: no infrastructure;
- ml: no SQL, MLflow, Prefect, BentoML, Redis, Great Expectations; none of the outer layers;
- adapters: anything but the entry points (bootstrap, cli, serving, flows);
- serving and flows: only recolab.bootstrap, recolab.application, recolab.config and their
  own modules (third-party libraries are theirs to use);
- no import cycle among recolab, serving and flows modules (deferred imports count; imports
  under `if TYPE_CHECKING:` do not, since they never run).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

import recolab

PACKAGE_ROOT = Path(recolab.__file__).resolve().parent
REPO = PACKAGE_ROOT.parent
FIRST_PARTY = ("recolab", "serving", "flows")
HEAVY = (
    "sqlalchemy",
    "torch",
    "lightning",
    "pytorch_lightning",
    "mlflow",
    "prefect",
    "bentoml",
    "redis",
    "pandas",
    "great_expectations",
    "psycopg",
    "psycopg2",
)
NOT_FOR_ML = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg2",
    "mlflow",
    "prefect",
    "bentoml",
    "redis",
    "great_expectations",
    "fastapi",
    "starlette",
    "recolab.adapters",
    "recolab.application",
    "recolab.bootstrap",
    "recolab.cli",
    "serving",
    "flows",
)
ENTRY_POINTS = ("recolab.bootstrap", "recolab.cli", "serving", "flows")


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    return ".".join(path.relative_to(REPO).parent.parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (imports that never run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(source: str, package: str, *, runtime_only: bool = False) -> set[str]:
    """Absolute names of every module `source` imports (relative imports resolved); for
    `from a import b`, both `a` and `a.b` (b may be a submodule or a name in a)."""
    tree = ast.parse(source)
    nodes = _runtime_nodes(tree) if runtime_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _sources(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}"
    return files


def _violations(folder: str, allowed: Callable[[str], bool]) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _sources(folder)
        for name in sorted(_imports(path.read_text(encoding="utf-8"), _package_of(path)))
        if not allowed(name)
    ]


def _is_first_party(name: str) -> bool:
    return any(_is_under(name, top) for top in FIRST_PARTY)


def _stdlib_numpy_or(*own: str) -> Callable[[str], bool]:
    def allowed(name: str) -> bool:
        top = name.partition(".")[0]
        return (
            top in sys.stdlib_module_names
            or top == "numpy"
            or any(_is_under(name, package) for package in own)
        )

    return allowed


def _ml_may_import(name: str) -> bool:
    return not any(_is_under(name, banned) for banned in NOT_FOR_ML)


def _adapters_may_import(name: str) -> bool:
    return not any(_is_under(name, entry) for entry in ENTRY_POINTS)


def _entry_point_may_import(own: str) -> Callable[[str], bool]:
    allowed = ("recolab.bootstrap", "recolab.application", "recolab.config", own)

    def check(name: str) -> bool:
        return not _is_first_party(name) or any(_is_under(name, a) for a in allowed)

    return check


def test_domain_imports_only_the_standard_library_numpy_and_itself() -> None:
    assert _violations("recolab/domain", _stdlib_numpy_or("recolab.domain")) == []


def test_application_imports_only_the_standard_library_numpy_the_domain_and_itself() -> None:
    allowed = _stdlib_numpy_or("recolab.domain", "recolab.application")
    assert _violations("recolab/application", allowed) == []


def test_ml_imports_no_persistence_tracking_orchestration_or_serving() -> None:
    assert _violations("recolab/ml", _ml_may_import) == []


def test_adapters_import_no_entry_point() -> None:
    assert _violations("recolab/adapters", _adapters_may_import) == []


@pytest.mark.parametrize("folder", ["serving", "flows"])
def test_entry_points_import_only_bootstrap_application_config_and_themselves(
    folder: str,
) -> None:
    assert _violations(folder, _entry_point_may_import(folder)) == []


def test_settings_are_built_only_in_config_bootstrap_and_the_cli() -> None:
    homes = {"recolab/config.py", "recolab/bootstrap.py", "recolab/cli.py"}
    builders = [
        str(path.relative_to(REPO))
        for folder in FIRST_PARTY
        for path in _sources(folder)
        if str(path.relative_to(REPO)) not in homes
        and any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Settings"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    ]
    assert builders == []


def _graph() -> dict[str, set[str]]:
    """Module -> first-party modules it imports at run time (names resolved to files)."""
    paths = {_module_name(p): p for top in FIRST_PARTY for p in _sources(top)}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        names = _imports(path.read_text(encoding="utf-8"), _package_of(path), runtime_only=True)
        # `from a import b` names both a and a.b: keep the most specific one that is a module.
        targets = {n for n in names if n in paths}
        targets -= {n for n in targets if any(t.startswith(n + ".") for t in targets)}
        graph[module] = targets - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 50, "the scanner found too few modules"
    assert _cycles(graph) == []


def test_no_source_file_over_500_lines() -> None:
    long = {
        str(path.relative_to(REPO)): n
        for top in FIRST_PARTY
        for path in _sources(top)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}


def _heavy_modules_loaded_by(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_importing_inner_layers_loads_no_infrastructure() -> None:
    assert _heavy_modules_loaded_by("import recolab.domain, recolab.application") == []


def test_the_checks_can_fail() -> None:
    # Guards the guards: a scanner that saw nothing would let every check above pass.
    source = (
        "import os.path\nimport pandas as pd\nfrom sqlalchemy.orm import Session\n"
        "from . import values\nfrom ..adapters.cache import RedisCache\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recolab.ml import x\n"
    )
    names = _imports(source, "recolab.domain")
    assert {"os.path", "pandas", "sqlalchemy.orm", "recolab.domain.values"} <= names
    assert "recolab.adapters.cache" in names and "recolab.ml.x" in names
    assert "recolab.ml.x" not in _imports(source, "recolab.domain", runtime_only=True)
    domain_rule = _stdlib_numpy_or("recolab.domain")
    assert sorted(n for n in names if not domain_rule(n)) == [
        "pandas",
        "recolab.adapters.cache",
        "recolab.adapters.cache.RedisCache",
        "recolab.ml",
        "recolab.ml.x",
        "sqlalchemy.orm",
        "sqlalchemy.orm.Session",
    ]
    assert not _ml_may_import("sqlalchemy") and not _ml_may_import("recolab.adapters.sql")
    assert _ml_may_import("torch") and _ml_may_import("recolab.domain.model")
    serving_rule = _entry_point_may_import("serving")
    assert not serving_rule("recolab.adapters.runtime.security")
    assert serving_rule("recolab.bootstrap") and serving_rule("fastapi")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert "redis" in _heavy_modules_loaded_by("import redis")


def test_ports_are_protocols_named_by_role() -> None:
    from recolab.domain import ports

    classes = [
        obj
        for obj in vars(ports).values()
        if isinstance(obj, type) and obj.__module__ == ports.__name__
    ]
    assert classes
    for cls in classes:
        assert Protocol in cls.__bases__, f"{cls.__name__} is not a typing.Protocol"
        assert not (cls.__name__.startswith("I") and cls.__name__[1].isupper()), cls.__name__
