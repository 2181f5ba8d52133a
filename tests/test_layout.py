"""The package is layered by stage: a module imports only from its own stage or the stages below it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asl_mlops"

#: Lowest first. A module of one stage may import from its own stage and any stage listed before it.
LAYERS = ("errors", "config", "labels", "files", "quiet_import", "tracking", "registry", "data", "hands", "training",
          "serving", "validation", "train", "teach", "tuning", "cli", "__main__")


def stage(module: str) -> str:
    """asl_mlops.data.photos -> data; asl_mlops.registry -> registry."""
    return module.split(".")[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """asl_mlops modules `path` imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asl_mlops."):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("asl_mlops."))
    return found


def test_every_module_belongs_to_a_known_stage():
    assert {stage(m) for m in modules() if m != "asl_mlops"} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(m for m in modules() if m != "asl_mlops"))
def test_module_imports_only_its_own_stage_or_lower_ones(module):
    known = modules()
    own = LAYERS.index(stage(module))
    upward = sorted(target for target in imports(known[module]) if target in known and target != "asl_mlops"
                    and LAYERS.index(stage(target)) > own)
    assert not upward, f"{module} imports from a later stage: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from asl_mlops.serving.app import serve\n")
    assert "asl_mlops.serving.app" in imports(sample)
