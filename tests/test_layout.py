"""The package is layered by stage: a module imports only from its own stage or the stages below it, and stages
that share a floor import nothing from each other."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asl_mlops"

#: Floors, lowest first. A module of one stage may import from its own stage and any stage on a lower floor. The
#: stages of one floor (a tuple) import nothing from each other: training and serving both stand on the
#: recognizers, and serving is HTTP only, so it never imports training.
LAYERS = ("errors", "config", "labels", "files", "quiet_import", "tracking", "registry", "data", "hands",
          "recognizers", ("training", "serving"), "gate", "train", "teach", "tuning", "cli", "__main__")


def stage(module: str) -> str:
    """asl_mlops.data.photos -> data; asl_mlops.registry -> registry."""
    return module.split(".")[1]


def floor(stage_name: str) -> int:
    """The floor of a stage: its place in LAYERS (stages sharing a tuple share a floor)."""
    for number, stages in enumerate(LAYERS):
        if stage_name in (stages if isinstance(stages, tuple) else (stages,)):
            return number
    raise KeyError(stage_name)


def not_allowed(module: str, target: str) -> bool:
    """Whether `module` may not import `target`: a higher floor, or another stage of its own floor."""
    return floor(stage(target)) > floor(stage(module)) or (
        floor(stage(target)) == floor(stage(module)) and stage(target) != stage(module))


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
    known = {name for stages in LAYERS for name in (stages if isinstance(stages, tuple) else (stages,))}
    assert {stage(m) for m in modules() if m != "asl_mlops"} <= known


@pytest.mark.parametrize("module", sorted(m for m in modules() if m != "asl_mlops"))
def test_module_imports_only_its_own_stage_or_lower_ones(module):
    known = modules()
    wrong = sorted(target for target in imports(known[module]) if target in known and target != "asl_mlops"
                   and not_allowed(module, target))
    assert not wrong, f"{module} imports from a later stage or a stage beside it: {wrong}"


def test_serving_imports_nothing_from_training_and_both_stand_on_the_recognizers():
    assert not_allowed("asl_mlops.serving.app", "asl_mlops.training.evaluate")
    assert not_allowed("asl_mlops.training.evaluate", "asl_mlops.serving.app")
    assert not not_allowed("asl_mlops.serving.app", "asl_mlops.recognizers.requests")
    assert not not_allowed("asl_mlops.training.evaluate", "asl_mlops.recognizers.sign_mnist")
    assert not_allowed("asl_mlops.recognizers.sign_mnist", "asl_mlops.training.models")


def test_the_check_sees_an_upward_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from asl_mlops.serving.app import serve\n")
    assert "asl_mlops.serving.app" in imports(sample)
