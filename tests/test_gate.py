"""The validation gate: checks, verdict on the version, evaluation run, aliases, dry run, the CLI.

Real MLflow store, real trained recognizers (two small cnns trained once for the module), real fresh-process
serving checks. The pure parts (checks from predictions, the verdict table) have fast tests of their own."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PLUMBING_CNN
from mlflow.tracking import MlflowClient

from asl_mlops.cli import main
from asl_mlops.config import GateConfig, TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.registry import CHALLENGER, CHAMPION, current_champion, is_better, promote, register
from asl_mlops.gate import (
    Check,
    Verdict,
    compute_checks,
    log_evaluation_run,
    register_and_validate,
    validate_version,
)

#: Every check passes with these (each test makes one of them strict).
LENIENT = GateConfig(min_accuracy=0.0, min_gain=0.0, min_letter_recall=0.0, min_photo_letter_recall=0.0,
                     min_unseen_signer_accuracy=0.0,
                     max_latency_ms=60_000.0)


# --- pure: checks and the verdict table -----------------------------------------------------------------

def test_checks_name_the_worst_letter_and_compare_with_each_threshold():
    y_true = np.array(list("AABBCC"), dtype=object)
    y_pred = np.array(["A", "A", "B", "no hand", "C", "A"], dtype=object)
    gain = Check("gain", "no champion", "> 0", True)
    checks = compute_checks(y_true, y_pred, False, gain, 12.0, GateConfig(min_accuracy=0.6, max_latency_ms=10))
    by_name = {c.name: c for c in checks}
    assert [c.name for c in checks] == ["accuracy", "gain", "worst_letter_recall", "serving_latency"]
    assert (by_name["accuracy"].value, by_name["accuracy"].passed) == ("0.6667", True)
    assert (by_name["worst_letter_recall"].value, by_name["worst_letter_recall"].passed) == ("0.5000 (B)", True)
    assert not by_name["serving_latency"].passed and by_name["serving_latency"].tag() == "12.0 ms <= 10 ms fail"
    silent = compute_checks(y_true, y_pred, False, gain, float("inf"), GateConfig(), "no process answer")[-1]
    assert (silent.value, silent.passed, silent.reason) == ("no answer", False, "no process answer")
    photo = compute_checks(y_true, y_pred, True, gain, 1.0, GateConfig(min_unseen_signer_accuracy=0.7))
    assert photo[0].name == "unseen_signer_accuracy" and not photo[0].passed  # a photo with no hand is an error
    assert photo[0].reason == "0.6667 < 0.7"
    # photos have their own letter floor: B at 0.5 passes 0.25 and fails a photo floor of 0.6
    assert photo[2].passed and photo[2].threshold == ">= 0.25"
    strict = compute_checks(y_true, y_pred, True, gain, 1.0, GateConfig(min_photo_letter_recall=0.6))[2]
    assert not strict.passed and strict.reason == "B 0.5000 < 0.6"


def test_the_verdict_table_has_one_row_per_check():
    checks = (Check("accuracy", "0.9500", ">= 0.9", True), Check("gain", "-0.0100 vs v1", "> 0", False, "kept"))
    verdict = Verdict("m", "2", "t.csv", checks, "run1", False, "not promoted: failed gain (kept)", 9.0, 4.0)
    assert verdict.table().splitlines() == ["| check | value | threshold | result |", "|---|---|---|---|",
                                            "| accuracy | 0.9500 | >= 0.9 | pass |",
                                            "| gain | -0.0100 vs v1 | > 0 | fail |"]
    assert (verdict.status, verdict.failed) == ("failed", ["gain"])
    assert verdict.section().startswith("### Validation gate: failed (failed: gain)")


def test_gate_settings_are_checked():
    with pytest.raises(InputError, match="min_accuracy must be in"):
        GateConfig(min_accuracy=1.5)
    with pytest.raises(InputError, match="max_latency_ms must be > 0"):
        GateConfig(max_latency_ms=0)


def test_validate_without_a_model_or_with_bad_settings_is_a_usage_error(mlflow_store):
    result = CliRunner().invoke(main, ["registry", "validate", "--model-name", "nothing-here"])
    assert result.exit_code == 2 and "error: no MLflow tracking store at" in result.output  # tests/test_next_steps.py
    result = CliRunner().invoke(main, ["registry", "validate", "--min-letter-recall", "2"])
    assert result.exit_code == 2 and "min_letter_recall must be in [0, 1]" in result.output


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def test_the_evaluation_run_logs_no_inferred_class_count(mlflow_store, capfd):
    """mlflow.models.evaluate says "number of classes is inferred as 25" on every call, label list given or not
    (24 letters and 'no hand'); the gate's run keeps the counts in its artifacts and says nothing."""
    with mlflow.start_run() as run:
        mlflow.log_metric("val_accuracy", 0.5)
        info = mlflow.pyfunc.log_model(name="recognizer", python_model=Echo(), pip_requirements=[])
    version = MlflowClient().get_model_version("photos", register(run.info.run_id, info.model_uri, "photos").version)
    letters = np.array(list("ABCDEFGHIKLMNOPQRSTUVWXY") * 2, dtype=object)
    predicted = letters.copy()
    predicted[0] = "no hand"
    capfd.readouterr()
    run_id = log_evaluation_run(version, "photos/test", letters, predicted, GateConfig(), {})
    err = capfd.readouterr().err
    assert "inferred" not in err and "Testing metrics" not in err, err
    matrix = MlflowClient().list_artifacts(run_id)
    assert any(a.path.startswith("confusion_matrix") for a in matrix), [a.path for a in matrix]
    assert mlflow.get_run(run_id).data.metrics["letter_recall/A"] == 0.5


# --- real models ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path):
    """A SQLite store with two finished runs of small cnns on the same data and split: (store URI, its folder,
    (the worse run, the better run))."""
    from served_model import using_store

    from asl_mlops.train import train_and_evaluate

    root = tmp_path_factory.mktemp("gate")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = TrainConfig(train_data=str(synthetic_dir / "sign_mnist_train.csv"),
                         test_data=str(synthetic_dir / "sign_mnist_test.csv"), cache_dir=str(root / "cache"),
                         epochs=3, batch_size=32, ema=False, augment=False, cnn_filters=PLUMBING_CNN, ensemble=1)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        with using_store(uri), pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_EXPERIMENT_NAME", "gate-tests")  # as the CLI chooses it (tests/conftest.py)
            runs = [train_and_evaluate(config.replace(seed=seed)) for seed in (0, 1)]
    finally:
        os.chdir(cwd)
    worse, better = sorted(runs, key=lambda r: (r.val_accuracy, -r.val_loss))
    assert is_better(better.val_accuracy, better.val_loss, worse.val_accuracy, worse.val_loss)
    return uri, root, (worse, better)


@pytest.fixture
def store(trained, monkeypatch: pytest.MonkeyPatch):
    """The module's store, made this test's tracking and registry URI."""
    from conftest import tracking_at

    uri, root, runs = trained
    monkeypatch.chdir(root)
    yield from tracking_at(uri, monkeypatch)


def aliases(name: str) -> dict[str, str]:
    """The model's aliases, versions as strings (the SQL store gives numbers)."""
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()}


def snapshot(name: str) -> tuple:
    """Everything the gate may write about `name`: versions' tags and descriptions, aliases, runs."""
    client = MlflowClient()
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return ([(v.version, dict(v.tags), v.description) for v in versions],
            aliases(name), sorted(r.info.run_id for r in runs))


@pytest.mark.slow
def test_a_passing_challenger_becomes_champion_and_loses_the_challenger_alias(store, trained):
    client = MlflowClient()
    run = trained[2][0]
    registration = register(run.run_id, run.model_uri, "passes")
    assert aliases("passes") == {CHALLENGER: "1"}
    verdict = validate_version("passes", gate=LENIENT, promote=True)  # default version: the challenger
    assert verdict.passed and verdict.promoted and verdict.version == registration.version == "1"
    assert aliases("passes") == {CHAMPION: "1"}
    version = client.get_model_version("passes", "1")
    assert version.tags["validation_status"] == "passed"
    assert version.tags["validation.accuracy"].endswith(">= 0 pass")
    assert version.tags["champion_decision"].startswith("promoted: passed every check; no champion yet")
    assert "| check | value | threshold | result |" in version.description
    assert version.description.startswith("Trained by MLflow run")  # the registration's description is kept
    # the evaluation run, linked both ways, with per-letter metrics and a confusion matrix
    evaluation = client.get_run(version.tags["validation_run_id"])
    assert evaluation.data.tags["model_name"] == "passes" and evaluation.data.tags["model_version"] == "1"
    assert {f"letter_recall/{letter}" for letter in "ABCY"} <= set(evaluation.data.metrics)
    assert evaluation.data.metrics["accuracy_score"] == pytest.approx(run.test.accuracy)
    assert "confusion_matrix.png" in {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    # what a version's page shows as its metrics: those of the logged model its source points at (MLflow 3); the
    # OSS store keeps none on the version itself (ModelVersion.metrics and .model_id stay None)
    assert version.metrics is None and version.source.startswith("models:/m-")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert {"val_accuracy", "test_accuracy"} <= {m.key for m in logged.metrics}


@pytest.mark.slow
@pytest.mark.parametrize("check, strict", [
    ("accuracy", {"min_accuracy": 1.0}),
    ("gain", {"min_gain": 0.5}),
    ("worst_letter_recall", {"min_letter_recall": 1.0}),
    ("serving_latency", {"max_latency_ms": 0.001}),
])
def test_a_challenger_failing_one_check_stays_unpromoted_and_the_check_is_named(store, trained, check, strict):
    client = MlflowClient()
    first, second = trained[2]  # the champion-to-be is the worse of the two: gain passes unless min_gain
    name = f"fails-{check.replace('_', '-')}"
    register(first.run_id, first.model_uri, name)
    promote("1", name)  # a champion to compare with (same validation rows)
    register(second.run_id, second.model_uri, name)
    verdict = validate_version(name, gate=dataclasses.replace(LENIENT, **strict), promote=True)
    assert verdict.failed == [check] and not verdict.promoted
    assert aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}  # it keeps challenger
    tags = client.get_model_version(name, "2").tags
    assert tags["validation_status"] == "failed" and tags[f"validation.{check}"].endswith(" fail")
    assert tags["champion_decision"].startswith(f"not promoted: failed {check} (")
    assert f"| {check} |" in client.get_model_version(name, "2").description


@pytest.mark.slow
def test_dry_run_changes_nothing(store, trained):
    run = trained[2][1]
    register(run.run_id, run.model_uri, "dry")
    before = snapshot("dry")
    result = CliRunner().invoke(main, ["registry", "validate", "--model-name", "dry", "--dry-run", "--promote",
                                       "--min-letter-recall", "0", "--min-accuracy", "0"])
    assert result.exit_code == 0, result.output
    assert "| check | value | threshold | result |" in result.output and "dry run, nothing written" in result.output
    assert snapshot("dry") == before
    assert current_champion("dry") is None


@pytest.mark.slow
def test_validate_cli_exit_codes_and_registry_show(store, trained):
    run = trained[2][0]
    register(run.run_id, run.model_uri, "cli")
    failed = CliRunner().invoke(main, ["registry", "validate", "--model-name", "cli", "--version", "1",
                                       "--min-letter-recall", "1", "--promote"])
    assert failed.exit_code == 1, failed.output
    assert "failed: worst_letter_recall" in failed.output
    missing_data = CliRunner().invoke(main, ["registry", "validate", "--model-name", "cli", "--data", "nope.csv"])
    assert missing_data.exit_code == 2 and "--data nope.csv: no such file" in missing_data.output
    passed = CliRunner().invoke(main, ["registry", "validate", "--model-name", "cli", "--min-letter-recall", "0",
                                       "--min-accuracy", "0", "--promote"])
    assert passed.exit_code == 0, passed.output
    shown = CliRunner().invoke(main, ["registry", "show", "--model-name", "cli"]).output.splitlines()
    assert shown[0].split()[:8] == ["version", "aliases", "val_acc", "test_acc", "val_data", "run_id", "validation",
                                    "champion_decision"]
    assert shown[1].split()[1] == CHAMPION and shown[1].split()[6] == "passed"


@pytest.mark.slow
def test_register_and_validate_runs_the_gate_once_per_run(store, trained):
    run = trained[2][0]
    verdict = register_and_validate(run.run_id, run.model_uri, "once", gate=LENIENT)
    assert verdict.promoted and verdict.version == "1"
    again = register_and_validate(run.run_id, run.model_uri, "once", gate=LENIENT)
    assert again.version == "1" and "already version 1" in again.decision
