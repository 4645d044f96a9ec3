"""The package's layers, as the README draws them: a module may import its own subsystem and the layers below,
never a layer above or beside it. Parsed from the source, so a new upward import fails here, not in review."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "superglue_ros"

# Lowest first. Each entry: the top-level modules or folders of superglue_ros on that layer.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"version", "settings", "timing", "files"}),
    frozenset({"models", "geometry", "viz"}),
    frozenset({"data", "inference", "metrics"}),
    frozenset({"parameters"}),
    frozenset({"stream", "train", "bench"}),
    frozenset({"eval"}),
    frozenset({"ros"}),
    frozenset({"cli", "__init__"}),
    frozenset({"__main__"}),
)
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
# rclpy-generated message classes of this package, only importable in a colcon build: the ROS layer's.
GENERATED = {"msg"}


def subsystem(path: Path) -> str:
    """The top-level module or folder of superglue_ros that ``path`` belongs to."""
    first = path.relative_to(PACKAGE).parts[0]
    return first[:-3] if first.endswith(".py") else first


def imported_subsystems(path: Path) -> set[str]:
    """Top-level parts of superglue_ros that a file imports, relative imports resolved."""
    module = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "superglue_ros":
                parts = node.module.split(".")[1:]
            else:
                continue
            # `from .. import metrics` names a module, `from ..models import x` a folder
            found.update([parts[0]] if parts else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("superglue_ros."))
    return found


def test_every_subsystem_has_a_layer() -> None:
    subsystems = {subsystem(path) for path in PACKAGE.rglob("*.py")}
    assert subsystems - set(LAYER_OF) == set(), "a new top-level module or folder needs a place in LAYERS"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down(path: Path) -> None:
    own = subsystem(path)
    wrong = sorted(name for name in imported_subsystems(path) - {own} - GENERATED
                   if LAYER_OF.get(name, -1) >= LAYER_OF[own])
    assert not wrong, f"{path.relative_to(PACKAGE)} ({own}, layer {LAYER_OF[own]}) imports {wrong}, not below it"


def test_only_the_ros_layer_imports_rclpy() -> None:
    users = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                   if any(isinstance(node, (ast.Import, ast.ImportFrom))
                          and any(name.split(".")[0] == "rclpy" for name in _names(node))
                          for node in ast.walk(ast.parse(path.read_text()))))
    assert users and all(user.startswith("ros/") for user in users), users
    ros_files = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "ros").glob("*.py") if p.name != "__init__.py")
    assert ros_files == sorted(set(users) | {"ros/launch_arguments.py"}), "ros/ holds the rclpy node and launch helpers"


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if not node.level else []
    return [alias.name for alias in node.names]
