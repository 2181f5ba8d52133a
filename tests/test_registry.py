"""The model registry: registration from finished runs, the no-regression `champion` rule, the CLI."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
from click.testing import CliRunner
from conftest import needs_postgres
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from asl_mlops.cli import main
from asl_mlops.errors import InputError
from asl_mlops.registry import (
    Registration,
    CHAMPION,
    LOCK_SUFFIX,
    champion_decision,
    current_champion,
    CHALLENGER,
    is_better,
    promote_if_better,
    register,
    registry_lock,
)

NAME = "asl-recognizer"


class Echo(mlflow.pyfunc.PythonModel):
    """A stand-in model: registration only needs a logged model, not a trained one."""

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def finished_run(val_accuracy: float, val_loss: float | None = 0.2, data_hash: str = "hash-a",
                 status: str = "FINISHED") -> tuple[str, str]:
    """A run shaped like train_and_evaluate's (metrics, data hash, a logged model); returns (run_id, model_uri).
    `val_loss=None` leaves out val_loss."""
    with mlflow.start_run() as run:
        mlflow.log_params({"val_data_hash": data_hash, "architecture": "cnn", "learning_rate": 0.002})
        mlflow.log_metrics({"val_accuracy": val_accuracy, "test_accuracy": val_accuracy - 0.01})
        if val_loss is not None:
            mlflow.log_metric("val_loss", val_loss)
        info = mlflow.pyfunc.log_model(name="recognizer", python_model=Echo(), pip_requirements=[])
    if status != "FINISHED":
        MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id, info.model_uri


def register_and_decide(run_id: str, model_uri: str, name: str, **kwargs) -> Registration:
    """Register as challenger, then decide as the gate does when every other check passed (the gate itself, with
    real models, is tests/test_gate.py)."""
    registration = register(run_id, model_uri, name, **kwargs)
    if not registration.registered:
        return registration
    return promote_if_better(name, registration.version, passed=True)


def version(tags: dict[str, str], number: str = "3") -> ModelVersion:
    return ModelVersion(NAME, number, creation_timestamp=0, tags=[ModelVersionTag(k, v) for k, v in tags.items()])


def champ(val_accuracy: str | None = "0.9", val_loss: str | None = "0.3", data_hash: str = "a") -> ModelVersion:
    tags = {"val_accuracy": val_accuracy, "val_loss": val_loss, "val_data_hash": data_hash}
    return version({k: v for k, v in tags.items() if v is not None})


@pytest.mark.parametrize("champion, val, loss, data_hash, promote, words", [
    (None, 0.5, 0.3, "a", True, "no champion yet; val_accuracy 0.5000, val_loss 0.3000"),
    (champ(), 0.95, 0.9, "a", True, "val_accuracy 0.9500 > champion v3's 0.9000 on the same data"),
    (champ(), 0.8, 0.1, "a", False, "kept champion v3: val_accuracy 0.8000 < its 0.9000"),
    # an exact tie on accuracy goes to the lower loss; a tie on both keeps the champion
    (champ(), 0.9, 0.3, "a", False, "val_accuracy 0.9000 = its 0.9000, val_loss 0.3000 >= 0.3000"),
    (champ(), 0.9, 0.4, "a", False, "val_accuracy 0.9000 = its 0.9000, val_loss 0.4000 >= 0.3000"),
    (champ(), 0.9, 0.2, "a", True, "val_accuracy 0.9000 = champion v3's 0.9000, val_loss 0.2000 < 0.3000"),
    # full precision: differences past the 6th digit decide, and the message shows the digits that do
    (champ("0.9708"), 0.97080001, 0.9, "a", True, "val_accuracy 0.97080001 > champion v3's 0.97080000"),
    (champ("0.97080001"), 0.9708, 0.1, "a", False, "val_accuracy 0.97080000 < its 0.97080001"),
    (champ(val_loss="0.3"), 0.9, 0.29999999, "a", True, "val_loss 0.29999999 < 0.30000000"),
    # a tie that no loss can break keeps the champion
    (champ(val_loss=None), 0.9, 0.1, "a", False, "the champion has no val_loss to break the tie"),
    (champ(), 0.9, None, "a", False, "this version has no val_loss to break the tie"),
    (champ(), 0.99, 0.1, "b", False, "other data"),
    (champ(val_accuracy=None), 0.99, 0.1, "a", False, "no val_accuracy tag"),
])
def test_champion_decision(champion, val, loss, data_hash, promote, words):
    decision = champion_decision(val, loss, data_hash, champion)
    assert decision.promote is promote and words in decision.reason, decision.reason


@pytest.mark.parametrize("val, min_gain, promote, words", [
    (0.93, 0.02, True, "val_accuracy 0.9300 >= champion v3's 0.9000 + 0.02 on the same data"),
    (0.91, 0.02, False, "gains +0.0100 over its 0.9000 on the same data, less than min_gain 0.02"),
    (0.90, 0.01, False, "less than min_gain"),  # a tie never passes a positive min_gain, whatever the loss
])
def test_champion_decision_with_a_minimum_gain(val, min_gain, promote, words):
    decision = champion_decision(val, 0.1, "a", champ(), min_gain=min_gain)
    assert decision.promote is promote and words in decision.reason, decision.reason
    assert not champion_decision(0.99, 0.1, "b", champ(), min_gain=min_gain).promote  # other data: never


@pytest.mark.parametrize("new, old, better", [
    ((0.95, 0.9), (0.9, 0.1), True),  # accuracy first, whatever the loss
    ((0.9, 0.1), (0.95, 0.9), False),
    ((0.9, 0.1), (0.9, 0.2), True),  # then the lower loss
    ((0.9, 0.2), (0.9, 0.1), False),
    ((0.9, 0.1), (0.9, 0.1), False),  # a full tie keeps the incumbent
    ((0.9, None), (0.9, 0.1), False),
    ((0.9, 0.1), (0.9, None), False),
    ((0.97080001, None), (0.9708, None), True),
])
def test_is_better_is_accuracy_then_loss(new, old, better):
    assert is_better(*new, *old) is better


def test_champion_moves_only_on_improvement_with_the_same_data(mlflow_store):
    client = MlflowClient()
    first = register_and_decide(*finished_run(0.90), NAME)
    assert (first.version, first.promoted) == ("1", True)
    better = register_and_decide(*finished_run(0.95), NAME, tags={"trial_number": 7}, description="better one")
    assert (better.version, better.promoted) == ("2", True)
    worse_run, worse_uri = finished_run(0.93)
    worse = register_and_decide(worse_run, worse_uri, NAME)
    assert (worse.version, worse.promoted) == ("3", False)
    other_data = register_and_decide(*finished_run(0.99, data_hash="hash-b"), NAME)
    assert (other_data.version, other_data.promoted) == ("4", False)
    assert str(current_champion(NAME).version) == "2"

    v2 = client.get_model_version(NAME, "2")
    assert v2.description.startswith("better one\n\nFinal metrics") and v2.tags["trial_number"] == "7"
    # the run's final metrics, which MLflow's registry keeps nowhere else on the version
    assert "| val_accuracy | 0.95 | validation rows |" in v2.description
    assert "| val_loss | 0.2 | validation rows |" in v2.description
    assert "| test_accuracy | 0.94 | test data |" in v2.description
    assert v2.tags["val_accuracy"] == "0.95" and v2.tags["test_accuracy"] == repr(0.95 - 0.01)
    assert v2.tags["val_loss"] == "0.2"
    assert v2.tags["val_data_hash"] == "hash-a" and v2.tags["learning_rate"] == "0.002"
    # the decision, with both numbers, on the version and on the run that produced it
    assert "0.9300 < its 0.9500" in client.get_model_version(NAME, "3").tags["champion_decision"]
    assert "0.9300 < its 0.9500" in mlflow.get_run(worse_run).data.tags["champion_decision"]
    assert "other data" in other_data.decision and "0.9900" in other_data.decision


def test_champion_keeps_its_alias_on_a_tie_and_moves_on_a_strictly_better_model(mlflow_store):
    client = MlflowClient()
    first = register_and_decide(*finished_run(0.9708, val_loss=0.12), NAME)
    assert (first.version, first.promoted) == ("1", True)
    tie = register_and_decide(*finished_run(0.9708, val_loss=0.12), NAME)
    assert (tie.version, tie.promoted) == ("2", False)
    assert "kept champion v1: val_accuracy 0.9708 = its 0.9708, val_loss 0.1200 >= 0.1200" in tie.decision
    higher_loss = register_and_decide(*finished_run(0.9708, val_loss=0.13), NAME)
    assert (higher_loss.version, higher_loss.promoted) == ("3", False)
    assert "val_loss 0.1300 >= 0.1200" in higher_loss.decision
    no_loss = register_and_decide(*finished_run(0.9708, val_loss=None), NAME)
    assert (no_loss.version, no_loss.promoted) == ("4", False)
    assert "val_loss" not in client.get_model_version(NAME, "4").tags
    assert str(current_champion(NAME).version) == "1"

    # 0.97080001 and 0.9708 are the same to 6 digits; the higher one wins even with a higher loss
    better_acc = register_and_decide(*finished_run(0.97080001, val_loss=0.5), NAME)
    assert (better_acc.version, better_acc.promoted) == ("5", True)
    assert "val_accuracy 0.97080001 > champion v1's 0.97080000" in better_acc.decision
    v5 = client.get_model_version(NAME, "5").tags
    assert (float(v5["val_accuracy"]), float(v5["val_loss"])) == (0.97080001, 0.5)
    # the same accuracy with a loss lower only past the 6th digit
    lower_loss = register_and_decide(*finished_run(0.97080001, val_loss=0.49999999), NAME)
    assert (lower_loss.version, lower_loss.promoted) == ("6", True)
    assert "val_loss 0.49999999 < 0.50000000" in lower_loss.decision
    assert str(current_champion(NAME).version) == "6"
    assert lower_loss.decision in client.get_model_version(NAME, "6").tags["champion_decision"]


def test_a_model_without_the_champion_alias_has_no_champion(mlflow_store):
    run_id, model_uri = finished_run(0.9)
    mlflow.register_model(model_uri, NAME)  # registered, but the alias was never set
    assert current_champion(NAME) is None
    assert current_champion("no-such-model") is None
    registered = register_and_decide(*finished_run(0.8), NAME)
    assert (registered.version, registered.promoted) == ("2", True)
    assert "no champion yet" in registered.decision
    with pytest.raises(MlflowException, match="name"):  # other errors are not taken for "no champion"
        current_champion("")


def test_only_cleanly_finished_runs_are_registered(mlflow_store):
    with pytest.raises(ValueError, match="FAILED"):
        register_and_decide(*finished_run(0.99, status="FAILED"), NAME)
    assert MlflowClient().search_registered_models() == []


def test_a_run_is_registered_once(mlflow_store):
    run = finished_run(0.9)
    assert register_and_decide(*run, NAME).version == register_and_decide(*run, NAME).version == "1"


def test_registry_show_and_promote_cli(mlflow_store):
    register_and_decide(*finished_run(0.95), NAME)
    register_and_decide(*finished_run(0.90), NAME)
    runner = CliRunner()
    shown = runner.invoke(main, ["registry", "show"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split()[:5] == ["version", "aliases", "val_acc", "test_acc", "val_data"]
    assert lines[1].split()[:4] == ["2", CHALLENGER, "0.9000", "0.8900"]  # not promoted: keeps challenger
    assert lines[1].split()[6] == "-"  # never validated (the gate did not run)
    assert lines[2].split()[:4] == ["1", CHAMPION, "0.9500", "0.9400"]

    promoted = runner.invoke(main, ["registry", "promote", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert str(current_champion(NAME).version) == "2"
    assert CHALLENGER not in MlflowClient().get_registered_model(NAME).aliases  # v2 was the challenger
    assert "promoted by hand (champion was v1)" in promoted.output

    missing = runner.invoke(main, ["registry", "promote", "9"])
    assert missing.exit_code == 2 and "has no version 9" in missing.output
    unknown = runner.invoke(main, ["registry", "show", "--model-name", "nope"])
    assert unknown.exit_code == 2 and "no registered model named 'nope'" in unknown.output


@pytest.mark.slow
def test_train_register_registers_after_the_run(mlflow_store, fast_config, monkeypatch):
    args = ["train", "--train-data", fast_config.train_data, "--test-data", fast_config.test_data,
            "--cache-dir", fast_config.cache_dir, "--epochs", "1", "--batch-size", "32", "--ema", "false", "--ensemble", "1",
            "--register", "true", "--model-name", "from-train"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    version = MlflowClient().get_model_version("from-train", "1")
    assert version.tags["source"] == "asl-mlops train"
    assert mlflow.get_run(version.run_id).info.status == "FINISHED"
    # the gate ran on the run's test data (a 1-epoch model may fail it) and printed its verdict
    assert version.tags["validation_status"] in ("passed", "failed") and "validation.accuracy" in version.tags
    assert "from-train v1: validation" in result.output and "| check | value | threshold | result |" in result.output


# --- concurrency: the registration lock, interrupted decisions --------------------------------------

@pytest.mark.slow
@needs_postgres
def test_concurrent_registrations_always_leave_the_better_model_champion(mlflow_server):
    """Two registrations at once on a real tracking server (PostgreSQL), repeated: the better one wins
    every time, both versions are decided, and the lock is gone."""
    client = MlflowClient()
    better = finished_run(0.9708, val_loss=0.1)
    worse = finished_run(0.9271, val_loss=0.3)
    better_run = better[0]
    for attempt in range(6):
        name = f"race-{attempt}"
        order = [better, worse][:: 1 if attempt % 2 else -1]
        barrier = threading.Barrier(2)

        def register(run_id: str, model_uri: str) -> None:
            barrier.wait()
            register_and_decide(run_id, model_uri, name)

        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(register, *args) for args in order]:
                future.result()
        champion = current_champion(name)
        assert champion is not None and champion.run_id == better_run, f"attempt {attempt}: worse model won"
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 2 and all("champion_decision" in v.tags for v in versions)
        assert not client.search_registered_models(f"name = '{name}{LOCK_SUFFIX}'")


def test_an_expired_registration_lock_is_taken_over_and_a_live_one_waited_for(mlflow_store):
    client = MlflowClient()
    lock = f"{NAME}{LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"holder": "dead-host:1", "expires": repr(time.time() - 1)})
    assert register_and_decide(*finished_run(0.9), NAME).promoted  # took over the dead holder's lease
    assert not client.search_registered_models(f"name = '{lock}'")

    client.create_registered_model(lock, tags={"holder": "busy-host:2", "expires": repr(time.time() + 60)})
    with pytest.raises(InputError, match="another registration has held its lock"):
        with registry_lock(NAME, client, wait=0.5):
            pass
    client.delete_registered_model(lock)


def test_promote_works_when_the_model_has_no_champion_alias(mlflow_store):
    run_id, model_uri = finished_run(0.9)
    mlflow.register_model(model_uri, NAME)  # the alias was never set
    promoted = CliRunner().invoke(main, ["registry", "promote", "1"])
    assert promoted.exit_code == 0, promoted.output
    assert "promoted by hand (champion was unset)" in promoted.output
    assert str(current_champion(NAME).version) == "1"
