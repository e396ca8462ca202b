"""The package's stages import only downward: a stage may use the ones below it, never one above."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "armor"
LAYERS = [  # bottom first; a module may import its own layer and the ones before it
    {"config", "software", "sparsity", "normalize", "proxy_loss", "damping", "hub"},
    {"optimizer"},
    {"methods"},
    {"pipeline"},
    {"evaluation"},
    {"inference"},
    {"prefetch"},
    {"reporting"},
    {"bench"},
    {"api", "logs"},  # entry points
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _stage(path: Path) -> str:
    """A module's stage: its folder under armor/, or its own name for a top-level module."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_stages(path: Path) -> set[str]:
    """The armor stages a module imports anywhere in it (function-level imports included)."""
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "armor" and len(parts) > 1:
                stages.add(parts[1])
    return stages


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" and _stage(p) in LEVEL),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_stage_imports_only_its_own_layer_and_those_below(path):
    stage = _stage(path)
    above = sorted(s for s in _imported_stages(path) if LEVEL.get(s, -1) > LEVEL[stage])
    assert above == [], f"{path.relative_to(PACKAGE)} ({stage}) imports {above} from above it"


def test_every_stage_has_a_layer():
    stages = {_stage(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert stages <= set(LEVEL), stages - set(LEVEL)
