"""The module structure docs/design.md describes is the code's: every import goes to a
lower layer (so there are no cycles), and no module reads another module's private
(underscore) names.

Layers built on the engine live in subpackages (``dirqueue/tasks/``): their modules
are named ``tasks._api`` and so on in the table, and stand above every engine module
and below the CLI (``dirqueue/cli/``, named ``cli._parser`` and so on), so the engine
never imports them and they import only the engine (and their own package's lower
modules).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dirqueue"
DESIGN = ROOT / "docs" / "design.md"
#: Subpackages holding layers above the engine.
SUBPACKAGES = ("tasks", "coord", "web", "limits")
#: Every subpackage: those and the CLI (``dirqueue/cli/``), the top layer.
PACKAGES = (*SUBPACKAGES, "cli")


def _layers() -> dict[str, float]:
    text = DESIGN.read_text(encoding="utf-8")
    table = text.split("<!-- layers: the test reads this table -->", 1)[1]
    layers: dict[str, float] = {}
    for match in re.finditer(r"^\| (\d+(?:\.\d+)?) \| (.+) \|$", table, re.M):
        for name in re.findall(r"`([\w.]+)`", match.group(2)):
            layers[name] = float(match.group(1))
    return layers


def _name(path: Path) -> str:
    """``queue`` for ``dirqueue/queue.py``, ``tasks._api`` for ``dirqueue/tasks/_api.py``."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _resolve(package: list[str], level: int, module: str | None) -> str:
    """The table's name for ``from {'.' * level}{module} import ...`` in ``package``."""
    base = package[: len(package) - (level - 1)] if level > 1 else package
    parts = [*base, *(module.split(".") if module else [])]
    if len(parts) == 1 and parts[0] in PACKAGES:
        parts.append("__init__")
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import of a dirqueue module in ``path``."""
    package = list(path.relative_to(PACKAGE).parts[:-1])
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            names = [alias.name for alias in node.names]
            if node.module is None:  # from . import _fs, _lock
                found.extend((_resolve(package, node.level, name), []) for name in names)
            else:
                found.append((_resolve(package, node.level, node.module), names))
        elif isinstance(node, ast.Import):
            found.extend(
                (".".join(alias.name.split(".")[1:]) or "__init__", [])
                for alias in node.names
                if alias.name.startswith("dirqueue.")
            )
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def test_every_module_is_in_the_documented_layers() -> None:
    modules = {_name(path) for path in _modules()}
    assert modules == set(_layers()), "docs/design.md's layer table and src/ differ"


def test_every_import_goes_to_a_lower_layer() -> None:
    layers = _layers()
    upward = [
        f"{_name(path)} (layer {layers[_name(path)]}) imports {module} (layer {layers[module]})"
        for path in _modules()
        for module, _ in _imports(path)
        if layers[module] >= layers[_name(path)]
    ]
    assert upward == []


def _is_cli(name: str) -> bool:
    return name in ("__main__", "__init__") or name.split(".", maxsplit=1)[0] == "cli"


def test_layers_above_the_engine_only_import_the_engine() -> None:
    """A subpackage's modules sit above every engine module, so the engine cannot
    import them, and import nothing of the CLI's (nor another subpackage's)."""
    layers = _layers()
    engine_top = max(
        v for k, v in layers.items() if "." not in k and not _is_cli(k)
    )
    misplaced = [
        name for name, layer in layers.items()
        if name.split(".")[0] in SUBPACKAGES and layer <= engine_top
    ]
    assert misplaced == []
    wrong = [
        f"{_name(path)} imports {module}"
        for path in _modules()
        if _name(path).split(".")[0] in SUBPACKAGES
        for module, _ in _imports(path)
        if _is_cli(module)
        or ("." in module and module.split(".")[0] != _name(path).split(".")[0])
    ]
    assert wrong == []


def test_no_module_uses_another_modules_private_names() -> None:
    leaks: list[str] = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, names in _imports(path):
            leaks.extend(
                f"{_name(path)}: {module}.{name}" for name in names if _private(name)
            )
        aliases = {module.rsplit(".", 1)[-1] for module, names in _imports(path) if not names}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                leaks.append(f"{_name(path)}: {node.value.id}.{node.attr}")
    assert leaks == []
