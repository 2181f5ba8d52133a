"""The model registry: registration from finished runs, the no-regression `champion` rule, the CLI."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.tracking import MlflowClient

from asl_mlops.cli import main
from asl_mlops.registry import CHAMPION, champion_decision, current_champion, register_if_better

NAME = "asl-recognizer"


class Echo(mlflow.pyfunc.PythonModel):
    """A stand-in model: registration only needs a logged model, not a trained one."""

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def finished_run(val_accuracy: float, data_hash: str = "hash-a", status: str = "FINISHED") -> tuple[str, str]:
    """A run shaped like train_and_evaluate's (metrics, data hash, a logged model); returns (run_id, model_uri)."""
    with mlflow.start_run() as run:
        mlflow.log_params({"val_data_hash": data_hash, "architecture": "cnn", "learning_rate": 0.002})
        mlflow.log_metrics({"final_val_accuracy": val_accuracy, "test_accuracy": val_accuracy - 0.01})
        info = mlflow.pyfunc.log_model(name="recognizer", python_model=Echo(), pip_requirements=[])
    if status != "FINISHED":
        MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id, info.model_uri


def version(tags: dict[str, str], number: str = "3") -> ModelVersion:
    return ModelVersion(NAME, number, creation_timestamp=0, tags=[ModelVersionTag(k, v) for k, v in tags.items()])


@pytest.mark.parametrize("champion, val, data_hash, promote, words", [
    (None, 0.5, "a", True, "no champion yet"),
    (version({"val_accuracy": "0.9", "val_data_hash": "a"}), 0.95, "a", True, "0.9500 > champion v3's 0.9000"),
    (version({"val_accuracy": "0.9", "val_data_hash": "a"}), 0.9, "a", False, "0.9000 <= its 0.9000"),
    (version({"val_accuracy": "0.9", "val_data_hash": "a"}), 0.8, "a", False, "0.8000 <= its 0.9000"),
    (version({"val_accuracy": "0.9", "val_data_hash": "a"}), 0.99, "b", False, "other data"),
    (version({"val_data_hash": "a"}), 0.99, "a", False, "no val_accuracy tag"),
])
def test_champion_decision(champion, val, data_hash, promote, words):
    decision = champion_decision(val, data_hash, champion)
    assert decision.promote is promote and words in decision.reason


def test_champion_moves_only_on_improvement_with_the_same_data(mlflow_store):
    client = MlflowClient()
    first = register_if_better(*finished_run(0.90), NAME)
    assert (first.version, first.promoted) == ("1", True)
    better = register_if_better(*finished_run(0.95), NAME, tags={"trial_number": 7}, description="better one")
    assert (better.version, better.promoted) == ("2", True)
    worse_run, worse_uri = finished_run(0.93)
    worse = register_if_better(worse_run, worse_uri, NAME)
    assert (worse.version, worse.promoted) == ("3", False)
    other_data = register_if_better(*finished_run(0.99, data_hash="hash-b"), NAME)
    assert (other_data.version, other_data.promoted) == ("4", False)
    assert str(current_champion(NAME).version) == "2"

    v2 = client.get_model_version(NAME, "2")
    assert v2.description == "better one" and v2.tags["trial_number"] == "7"
    assert v2.tags["val_accuracy"] == "0.950000" and v2.tags["test_accuracy"] == "0.940000"
    assert v2.tags["val_data_hash"] == "hash-a" and v2.tags["learning_rate"] == "0.002"
    # the decision, with both numbers, on the version and on the run that produced it
    assert "0.9300 <= its 0.9500" in client.get_model_version(NAME, "3").tags["champion_decision"]
    assert "0.9300 <= its 0.9500" in mlflow.get_run(worse_run).data.tags["champion_decision"]
    assert "other data" in other_data.decision and "0.9900" in other_data.decision


def test_only_cleanly_finished_runs_are_registered(mlflow_store):
    with pytest.raises(ValueError, match="FAILED"):
        register_if_better(*finished_run(0.99, status="FAILED"), NAME)
    assert MlflowClient().search_registered_models() == []


def test_a_run_is_registered_once(mlflow_store):
    run = finished_run(0.9)
    assert register_if_better(*run, NAME).version == register_if_better(*run, NAME).version == "1"


def test_registry_show_and_promote_cli(mlflow_store):
    register_if_better(*finished_run(0.95), NAME)
    register_if_better(*finished_run(0.90), NAME)
    runner = CliRunner()
    shown = runner.invoke(main, ["registry", "show"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split()[:5] == ["version", "aliases", "val_acc", "test_acc", "val_data"]
    assert lines[1].split()[:4] == ["2", "-", "0.9000", "0.8900"]
    assert lines[2].split()[:4] == ["1", CHAMPION, "0.9500", "0.9400"]

    promoted = runner.invoke(main, ["registry", "promote", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert str(current_champion(NAME).version) == "2"
    assert "promoted by hand (champion was v1)" in promoted.output

    missing = runner.invoke(main, ["registry", "promote", "9"])
    assert missing.exit_code == 2 and "has no version 9" in missing.output
    unknown = runner.invoke(main, ["registry", "show", "--model-name", "nope"])
    assert unknown.exit_code == 2 and "no registered model named 'nope'" in unknown.output


@pytest.mark.slow
def test_train_register_registers_after_the_run(mlflow_store, fast_config, monkeypatch):
    args = ["train", "--train-data", fast_config.train_data, "--test-data", fast_config.test_data,
            "--cache-dir", fast_config.cache_dir, "--epochs", "1", "--batch-size", "32", "--ema", "false",
            "--register", "true", "--model-name", "from-train"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    champion = current_champion("from-train")
    assert champion is not None and champion.tags["source"] == "asl-mlops train"
    assert mlflow.get_run(champion.run_id).info.status == "FINISHED"
    assert "from-train v1 promoted: no champion yet" in result.output
