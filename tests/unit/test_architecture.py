"""Dependencies point inward: the domain and application layers stay free of infrastructure."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

import recolab

PACKAGE_ROOT = Path(recolab.__file__).resolve().parent
INNER_LAYERS = ("domain", "application")
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


def _package_of(path: Path) -> str:
    """The package a module's relative imports start from."""
    parts = path.relative_to(PACKAGE_ROOT.parent).parent.parts
    return ".".join(parts)


def _imports(source: str, package: str) -> set[str]:
    """Absolute names of every module `source` imports (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                names.add(".".join([*base, node.module] if node.module else base))
            else:
                names.add(node.module or "")
    return names


def _violations(layer: str, allowed: Callable[[str], bool]) -> list[str]:
    files = sorted((PACKAGE_ROOT / layer).rglob("*.py"))
    assert files, f"no Python files under recolab/{layer}"
    return [
        f"{path.relative_to(PACKAGE_ROOT.parent)} imports {name}"
        for path in files
        for name in sorted(_imports(path.read_text(encoding="utf-8"), _package_of(path)))
        if not allowed(name)
    ]


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _not_heavy(name: str) -> bool:
    return not any(_is_under(name, heavy) for heavy in HEAVY)


def _domain_may_import(name: str) -> bool:
    top = name.partition(".")[0]
    return top in sys.stdlib_module_names or top == "numpy" or _is_under(name, "recolab.domain")


def _outside_outer_layers(name: str) -> bool:
    outer = ("recolab.application", "recolab.adapters", "recolab.bootstrap", "recolab.config")
    return not any(_is_under(name, package) for package in outer)


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


@pytest.mark.parametrize("layer", INNER_LAYERS)
def test_inner_layers_do_not_import_infrastructure(layer: str) -> None:
    assert _violations(layer, _not_heavy) == []


def test_domain_imports_only_the_standard_library_numpy_and_itself() -> None:
    assert _violations("domain", _domain_may_import) == []


def test_domain_does_not_import_outer_layers() -> None:
    assert _violations("domain", _outside_outer_layers) == []


def test_importing_inner_layers_loads_no_infrastructure() -> None:
    assert _heavy_modules_loaded_by("import recolab.domain, recolab.application") == []


def test_the_checks_can_fail() -> None:
    # Guards the guards: a scanner that saw nothing would let every check above pass.
    source = (
        "import os.path\nimport pandas as pd\nfrom sqlalchemy.orm import Session\n"
        "from . import values\nfrom ..adapters.cache import RedisCache\nfrom .model import User\n"
    )
    names = _imports(source, "recolab.domain")
    assert names == {
        "os.path",
        "pandas",
        "sqlalchemy.orm",
        "recolab.domain",
        "recolab.adapters.cache",
        "recolab.domain.model",
    }
    assert sorted(n for n in names if not _not_heavy(n)) == ["pandas", "sqlalchemy.orm"]
    assert sorted(n for n in names if not _domain_may_import(n)) == [
        "pandas",
        "recolab.adapters.cache",
        "sqlalchemy.orm",
    ]
    assert [n for n in names if not _outside_outer_layers(n)] == ["recolab.adapters.cache"]
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
