"""The lab still runs: every benchmarks/ script in its `--tiny` mode (a few synthetic rows or real hand photos, one
short training), as a subprocess in a temporary folder, exits 0 and writes its JSON, with its provenance and its
figures' top-level keys, to the `--out` the test gives. What the scripts import from the package exists (read from
the source, so a renamed module fails here in seconds, heavy scripts included).

The four cheapest scripts run in the fast subset, in about 30 s together; the others, which train, serve or trace
Keras models, cost 10 s to 2 min of CPU each and are marked slow."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL_HANDS, postgres_unavailable
from test_docs import defined_in, resolves

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

#: Each script's top-level keys (besides its provenance), and what it needs beyond the venv: "hands" (real hand
#: photos and the hand model), "postgres".
FAST: dict[str, tuple[set[str], str]] = {
    "split.py": ({"families", "grouped", "random"}, ""),
    "standin_relatives.py": ({"runs", "misread_photos_nearest"}, ""),
    "schema.py": ({"cases", "verdict"}, ""),
    "detection.py": ({"searches", "closeups"}, "hands"),
}
SLOW: dict[str, tuple[set[str], str]] = {
    "tta_views.py": ({"models", "view_sets"}, ""),  # no training, but importing Keras and tracing cost 10-20 s
    "selection.py": ({"data", "models", "selection", "seeds"}, ""),
    "levers.py": ({"trained", "levers", "tta_errors_by_photo"}, ""),
    "mechanisms.py": ({"errors", "steps"}, ""),
    "train.py": ({"input", "cnn"}, ""),
    "trunk.py": ({"uncached", "cached", "per_epoch_ratio"}, ""),
    "sweep.py": ({"default_run", "sweeps"}, ""),
    "serve.py": ({"cold_start_s", "single", "batches"}, ""),
    "gate.py": ({"gate", "versions"}, ""),
    "workers.py": ({"runs", "settings"}, "postgres"),
    "hands.py": ({"variants"}, "hands"),
    "photo_train.py": ({"metrics", "params", "wall_seconds"}, "hands"),
    "photo_serve.py": ({"hand", "no_hand"}, "hands"),
    "teach.py": ({"figures", "live"}, "hands"),
}
#: Scripts whose tiny mode another test runs (it needs what that test has already started).
ELSEWHERE = {"page_camera.py": "tests/serving/test_page.py::test_the_page_camera_benchmark_runs_in_its_tiny_mode"}
#: Modules the scripts import, not scripts: no tiny mode.
MODULES = {"provenance.py", "tiny.py"}


def scripts() -> set[str]:
    return {path.name for path in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__":' in path.read_text()}


def test_every_script_has_a_tiny_mode_and_a_smoke_test():
    assert scripts() == set(FAST) | set(SLOW) | set(ELSEWHERE), "add the script to FAST, SLOW or ELSEWHERE"
    assert {path.name for path in BENCHMARKS.glob("*.py")} - scripts() == MODULES
    assert [name for name in scripts() if '"--tiny"' not in (BENCHMARKS / name).read_text()] == []


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda path: path.name)
def test_what_a_script_imports_exists(path: Path):
    """Each import from the package names one of its modules or a name a module defines, and each import from a
    sibling script (`from photo_serve import free_port`) a name the sibling defines."""
    wrong = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "asl_mlops":
            wrong += [f"{node.lineno}: {node.module}.{a.name}" for a in node.names if not resolves(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.ImportFrom) and node.module and (BENCHMARKS / f"{node.module}.py").is_file():
            sibling = defined_in(ast.parse((BENCHMARKS / f"{node.module}.py").read_text()).body)
            wrong += [f"{node.lineno}: {node.module}.{a.name}" for a in node.names if a.name not in sibling]
        elif isinstance(node, ast.Import):
            wrong += [f"{node.lineno}: {a.name}" for a in node.names
                      if a.name.split(".")[0] == "asl_mlops" and not resolves(a.name)]
    assert not wrong, f"{path.name} imports names that do not exist (renamed?):\n" + "\n".join(wrong)


def missing(needs: str, request: pytest.FixtureRequest) -> str | None:
    """Why what the script needs is missing here, or None."""
    if needs == "hands":
        if not (REAL_HANDS / "manifest.csv").is_file():
            return f"needs real hand photos in {REAL_HANDS} (synthetic photos hold no hand)"
        request.getfixturevalue("hand_model")  # skips without the hand model
    if needs == "postgres":
        return postgres_unavailable()
    return None


def run_tiny(script: str, keys: set[str], needs: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Run `script --tiny --out` in tmp_path; check it exits 0 and its JSON records provenance and `keys`."""
    why = missing(needs, request)
    if why:
        pytest.skip(why)
    out = tmp_path / "out" / script.replace(".py", ".json")
    (tmp_path / "tmp").mkdir()
    # The script chooses its own MLflow store (a temporary one): none of this test's environment. Its temporary
    # folders go under tmp_path, so none outlives pytest's own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny", "--out", str(out)], cwd=tmp_path,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(tmp_path / "tmp")},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} --tiny exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    results = json.loads(out.read_text())
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from provenance import recorded
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert recorded(results) is not None, f"{script} records no provenance"
    assert keys <= set(results), f"{script}'s JSON lacks {sorted(keys - set(results))}"


@pytest.mark.parametrize("script", sorted(FAST))
def test_a_cheap_script_runs_in_its_tiny_mode(script: str, tmp_path: Path, request: pytest.FixtureRequest):
    run_tiny(script, *FAST[script], tmp_path, request)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SLOW))
def test_a_script_that_trains_or_serves_runs_in_its_tiny_mode(script: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest):
    run_tiny(script, *SLOW[script], tmp_path, request)
