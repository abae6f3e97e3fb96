"""The module structure docs/design.md describes is the code's: every import goes to a
lower layer (so there are no cycles), and no module reads another module's private
(underscore) names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dirqueue"
DESIGN = ROOT / "docs" / "design.md"


def _layers() -> dict[str, int]:
    text = DESIGN.read_text(encoding="utf-8")
    table = text.split("<!-- layers: the test reads this table -->", 1)[1]
    layers: dict[str, int] = {}
    for match in re.finditer(r"^\| (\d+) \| (.+) \|$", table, re.M):
        for name in re.findall(r"`([\w]+)`", match.group(2)):
            layers[name] = int(match.group(1))
    return layers


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import of a dirqueue module in ``path``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [alias.name for alias in node.names]
            if node.module is None:  # from . import _fs, _lock
                found.extend((name, []) for name in names)
            else:
                found.append((node.module, names))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_every_module_is_in_the_documented_layers() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set(_layers()), "docs/design.md's layer table and src/ differ"


def test_every_import_goes_to_a_lower_layer() -> None:
    layers = _layers()
    upward = [
        f"{path.stem} (layer {layers[path.stem]}) imports {module} (layer {layers[module]})"
        for path in sorted(PACKAGE.glob("*.py"))
        for module, _ in _imports(path)
        if layers[module] >= layers[path.stem]
    ]
    assert upward == []


def test_no_module_uses_another_modules_private_names() -> None:
    leaks: list[str] = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, names in _imports(path):
            leaks.extend(
                f"{path.stem}: {module}.{name}" for name in names if _private(name)
            )
        aliases = {module for module, names in _imports(path) if not names}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                leaks.append(f"{path.stem}: {node.value.id}.{node.attr}")
    assert leaks == []
