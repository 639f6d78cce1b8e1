"""Imports point one way: the application on top, the core at the bottom.

    bikematch.__main__             `python -m bikematch`: the command line's entry
    bikematch.app                  orchestration, cluster running, eval, calibrate,
                                   report, search, demo, the command line
    embedder                       batched embedding (uses perception_models)
    scrapers, perception_models    crawling; the models
    bikematch.core (and bikematch) settings, database, migrations, the listing record

A module may import its own package and the layers below it, never one above or a
sibling of its own layer. Function-level imports count as much as module-level ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bikematch.core.settings import PROJECT_ROOT

LAYERS = {
    "bikematch.__main__": 4,
    "bikematch.app": 3,
    "embedder": 2,
    "scrapers": 1,
    "perception_models": 1,
    "bikematch.core": 0,
    "bikematch": 0,  # the package itself: its __init__ holds the version alone
}
PACKAGES = ("bikematch", "scrapers", "embedder", "perception_models")


def package_of(module: str) -> str | None:
    """The layer's package a dotted module name belongs to (longest match)."""
    for package in sorted(LAYERS, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(line, imported module) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:  # `from bikematch import app` imports bikematch.app
                yield node.lineno, f"{node.module}.{alias.name}"


def upward_imports() -> list[str]:
    wrong = set()
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            source = package_of(module_name(path))
            for line, target in imports(path):
                target_package = package_of(target)
                if target_package is None or target_package == source:
                    continue
                if LAYERS[target_package] >= LAYERS[source] and not (
                    source == "bikematch.core" and target_package == "bikematch"
                ):
                    where = path.relative_to(PROJECT_ROOT)
                    wrong.add(f"{where}:{line}: {source} imports {target_package}")
    return sorted(wrong)


def test_every_import_points_down_the_layers():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a core module importing the application is caught."""
    fake_root = tmp_path
    for package in PACKAGES:
        (fake_root / package).mkdir()
    (fake_root / "bikematch" / "core").mkdir()
    (fake_root / "bikematch" / "core" / "db.py").write_text(
        "def f():\n    from bikematch.app.cli import main\n"
    )
    (fake_root / "scrapers" / "spider.py").write_text("from embedder import job\n")
    monkeypatch.setattr(f"{__name__}.PROJECT_ROOT", fake_root)
    assert upward_imports() == [
        "bikematch/core/db.py:2: bikematch.core imports bikematch.app",
        "scrapers/spider.py:1: scrapers imports embedder",
    ]
