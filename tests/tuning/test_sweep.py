"""The Optuna sweep: nested MLflow runs, the best trial (accuracy, then loss) and its registration, resume
after a kill, pruning, bad options.

Real MLflow (SQLite) and Optuna (SQLite, PostgreSQL if reachable) stores, synthetic data, 1-3 epochs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import PLUMBING_CNN, needs_postgres
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asl_mlops.cli import main
from asl_mlops.config import GateConfig, RegistryConfig, SweepConfig, TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.registry import CHAMPION, current_champion
from asl_mlops.tuning import space as space_module
from asl_mlops.tuning import storage as storage_module
from asl_mlops.tuning import sweep as sweep_module
from asl_mlops.tuning import workers as workers_module
from asl_mlops.tuning.runs import ROLE_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG
from asl_mlops.tuning.space import TrialRunLink
from asl_mlops.tuning.sweep import best_trial, log_study_summary, run_sweep

pytestmark = pytest.mark.slow

def base_config(synthetic_dir: Path, cache_dir: Path, **changes) -> TrainConfig:
    config = TrainConfig(train_data=str(synthetic_dir / "sign_mnist_train.csv"),
                         test_data=str(synthetic_dir / "sign_mnist_test.csv"),
                         cache_dir=str(cache_dir), epochs=2, batch_size=32, ema=False, seed=0,
                         cnn_filters=PLUMBING_CNN, tta=False, ensemble=1)
    return config.replace(**changes)


def study_runs(study_name: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'")


# --- a 4-trial sweep, shared by the tests below ----------------------------------------------------

@pytest.fixture(scope="module")
def swept(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 4-trial sweep (no pruner) in a fresh MLflow store, default Optuna storage; yields its result."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        sweep = SweepConfig(n_trials=4, study_name="s1", pruner="none")
        base = base_config(synthetic_dir, tmp / "cache")
        result = run_sweep(base, sweep, gate=LENIENT_GATE)
        yield {"result": result, "sweep": sweep, "base": base, "dir": tmp, "uri": uri}
        while mlflow.active_run():
            mlflow.end_run()


#: Thresholds every small sweep model here passes but the gain (tests/test_gate.py tests the gate's checks).
LENIENT_GATE = GateConfig(min_accuracy=0.0, min_letter_recall=0.0, max_latency_ms=60_000.0)


def new_tags(registration) -> dict[str, str]:
    return MlflowClient().get_model_version(registration.model_name, registration.version).tags


def children_of(parent_run_id: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_sweep_has_one_parent_and_one_nested_run_per_trial(swept):
    result = swept["result"]
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[ROLE_TAG] == "sweep"
    assert parent.data.params["epochs"] == "2" and parent.data.params["n_trials"] == "4"
    assert "learning_rate" not in parent.data.params  # swept, so not a fixed setting of the parent
    children = children_of(result.parent_run_id)
    assert sorted(r.info.run_name for r in children) == [f"trial-{i}" for i in range(4)]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags[STATE_TAG] == "COMPLETE" and child.data.tags[STUDY_TAG] == "s1"
        assert len(MlflowClient().get_metric_history(child.info.run_id, "epoch_val_accuracy")) == 2  # per epoch
        assert "val_accuracy" in child.data.metrics and "test_accuracy" in child.data.metrics
    assert result.states == {"COMPLETE": 4}


def test_objective_is_grouped_validation_accuracy(swept):
    from asl_mlops.training.inputs import prepare_data

    grouped = prepare_data(swept["base"]).params  # the default split: whole families held out
    assert swept["base"].val_split == "grouped"
    study = optuna.load_study(study_name="s1", storage=swept["result"].storage)
    values = {t.user_attrs["mlflow_run_id"]: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    for child in children_of(swept["result"].parent_run_id):
        assert child.data.params["val_split"] == "grouped"
        assert child.data.params["val_data_hash"] == grouped["val_data_hash"]
        assert values[child.info.run_id] == child.data.metrics["val_accuracy"]


def test_default_storage_is_beside_the_mlflow_store(swept):
    assert (swept["dir"] / "optuna.db").exists()
    assert swept["result"].storage == f"sqlite:///{swept['dir'] / 'optuna.db'}"


def test_trial_params_are_within_bounds(swept):
    sweep = swept["sweep"]
    for child in children_of(swept["result"].parent_run_id):
        p = {k: float(child.data.params[k]) for k in ("learning_rate", "decay_rate", "l2")}
        assert sweep.learning_rate_min <= p["learning_rate"] <= sweep.learning_rate_max
        assert sweep.decay_rate_min <= p["decay_rate"] <= sweep.decay_rate_max
        assert sweep.l2_min <= p["l2"] <= sweep.l2_max
    assert len({child.data.params["learning_rate"] for child in children_of(swept["result"].parent_run_id)}) == 4


def test_parent_logs_best_params_of_best_child(swept):
    result = swept["result"]
    parent = mlflow.get_run(result.parent_run_id)
    children = sorted(children_of(result.parent_run_id), key=lambda r: int(r.data.tags[TRIAL_TAG]))
    # the registry's ordering: highest accuracy, then lowest loss; max keeps the earliest of full ties
    best_child = max(children, key=lambda r: (r.data.metrics["val_accuracy"], -r.data.metrics["val_loss"]))
    assert parent.data.tags["best_run_id"] == best_child.info.run_id == result.best_run_id
    assert parent.data.metrics["best_val_accuracy"] == best_child.data.metrics["val_accuracy"] == result.best_value
    assert parent.data.metrics["best_val_loss"] == best_child.data.metrics["val_loss"] == result.best_val_loss
    for name in ("learning_rate", "decay_rate", "l2"):
        assert float(parent.data.params[f"best_{name}"]) == pytest.approx(float(best_child.data.params[name]))


def test_parent_logs_trials_csv_and_figures(swept):
    parent_id = swept["result"].parent_run_id
    paths = {a.path for a in MlflowClient().list_artifacts(parent_id, "optuna")}
    assert {"optuna/trials.csv", "optuna/optimization_history.png", "optuna/param_importances.png",
            "optuna/slice.png", "optuna/parallel_coordinate.png"} <= paths
    trials = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=parent_id, artifact_path="optuna/trials.csv"))
    assert len(trials) == 4 and set(trials["state"]) == {"COMPLETE"}
    # both numbers of the ordering, per trial: value is the final val_accuracy, then the final val_loss
    for child in children_of(parent_id):
        row = trials[trials["number"] == int(child.data.tags[TRIAL_TAG])].iloc[0]
        assert row["value"] == pytest.approx(child.data.metrics["val_accuracy"], rel=1e-12)
        assert row["user_attrs_val_loss"] == pytest.approx(child.data.metrics["val_loss"], rel=1e-12)


def test_best_model_is_registered_as_champion_and_predicts(swept, synthetic_dir: Path):
    result = swept["result"]
    assert result.registration is not None and result.registration.promoted
    champion = current_champion("asl-recognizer")
    assert champion.run_id == result.best_run_id
    assert champion.tags["study_name"] == "s1" and champion.tags["trial_number"] == str(result.best_trial)
    assert float(champion.tags["val_accuracy"]) == result.best_value  # full precision
    assert float(champion.tags["val_loss"]) == result.best_val_loss
    assert "test_accuracy" in champion.tags and champion.tags["val_data_hash"]
    model = mlflow.pyfunc.load_model(f"models:/asl-recognizer@{CHAMPION}")
    test = pd.read_csv(synthetic_dir / "sign_mnist_test.csv")
    predicted = model.predict(test.drop(columns="label"))
    accuracy = float(np.mean(predicted["label"].to_numpy() == test["label"].to_numpy()))
    assert accuracy > 0.5, accuracy  # chance is 1/24


def test_rerun_of_a_finished_study_runs_no_new_trial_and_makes_no_empty_run(swept):
    runs_before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    again = run_sweep(swept["base"], swept["sweep"])
    assert again.states == {"COMPLETE": 4} and again.best_run_id == swept["result"].best_run_id
    assert again.parent_run_id == swept["result"].parent_run_id  # reported from the sweep run that ran it
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == runs_before
    assert again.registration.version == swept["result"].registration.version  # not registered twice


def test_resuming_with_other_settings_is_refused(swept):
    with pytest.raises(InputError, match="epochs 2 -> 3"):
        run_sweep(swept["base"].replace(epochs=3), swept["sweep"])


def test_a_study_from_before_a_setting_existed_resumes_with_that_settings_default():
    study = optuna.create_study()
    study.set_user_attr("settings", {"epochs": 2})  # recorded before label_smoothing existed
    storage_module.check_same_settings(study, {"epochs": 2, "label_smoothing": 0.0})  # its default: resumes
    with pytest.raises(InputError, match="label_smoothing 0.0 -> 0.1"):
        storage_module.check_same_settings(study, {"epochs": 2, "label_smoothing": 0.1})
    # settings as a study records them: booleans as 'true'/'false'
    storage_module.check_same_settings(study, {"epochs": 2, "recompute_batchnorm": "true"})
    with pytest.raises(InputError, match="recompute_batchnorm 'true' -> 'false'"):
        storage_module.check_same_settings(study, {"epochs": 2, "recompute_batchnorm": "false"})


def test_second_sweep_that_cannot_win_keeps_the_champion(swept):
    client = MlflowClient()
    champion = current_champion("asl-recognizer")
    client.set_model_version_tag("asl-recognizer", champion.version, "val_accuracy", "1.0")  # unbeatable:
    client.set_model_version_tag("asl-recognizer", champion.version, "val_loss", "0.0")  # a tie keeps it
    result = run_sweep(swept["base"].replace(epochs=1), swept["sweep"].replace(n_trials=1, study_name="s2"),
                       gate=LENIENT_GATE)
    registration = result.registration
    assert registration is not None and not registration.promoted
    assert int(registration.version) == int(champion.version) + 1
    assert current_champion("asl-recognizer").version == champion.version
    assert registration.decision.startswith(f"not promoted: failed gain (kept champion v{champion.version}")
    assert new_tags(registration)["validation.gain"].endswith(" fail")
    assert "its 1.0000" in registration.decision
    new = client.get_model_version("asl-recognizer", registration.version)
    assert new.tags["champion_decision"] == registration.decision
    assert registration.decision in mlflow.get_run(result.best_run_id).data.tags["champion_decision"]


# --- the best trial: accuracy, then loss ----------------------------------------------------------

def finished_trial(val_accuracy: float, val_loss: float | None, learning_rate: float) -> optuna.trial.FrozenTrial:
    attrs = {"mlflow_run_id": f"run-{learning_rate}"}
    if val_loss is not None:
        attrs["val_loss"] = val_loss
    return optuna.trial.create_trial(
        value=val_accuracy, params={"learning_rate": learning_rate},
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)},
        user_attrs=attrs)


def study_of(*trials: optuna.trial.FrozenTrial) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    return study


def test_best_trial_breaks_an_accuracy_tie_by_the_lower_loss(mlflow_store):
    study = study_of(finished_trial(0.9, 0.3, 1e-3), finished_trial(0.97080001, 0.6, 2e-3),
                     finished_trial(0.9708, 0.1, 3e-3), finished_trial(0.97080001, 0.5, 4e-3),
                     finished_trial(0.97080001, 0.5, 5e-3))
    best = best_trial(study)
    assert best.number == 3  # highest accuracy (past the 6th digit), then lowest loss, then earliest
    assert study.best_trial.number == 1  # what Optuna alone picks: the first of the accuracy ties

    with mlflow.start_run() as parent:  # what the sweep logs as best, and so registers
        assert log_study_summary(study).number == 3
    logged = mlflow.get_run(parent.info.run_id).data
    assert logged.params["best_trial_number"] == "3" and logged.tags["best_run_id"] == "run-0.004"
    assert (logged.metrics["best_val_accuracy"], logged.metrics["best_val_loss"]) == (0.97080001, 0.5)


def test_best_trial_keeps_the_earlier_trial_when_a_loss_is_missing():
    # trials from before val_loss was recorded cannot win a tie, nor lose one
    assert best_trial(study_of(finished_trial(0.9, None, 1e-3), finished_trial(0.9, 0.1, 2e-3))).number == 0
    assert best_trial(study_of(finished_trial(0.9, 0.1, 1e-3), finished_trial(0.9, None, 2e-3))).number == 0
    assert best_trial(study_of(finished_trial(0.9, None, 1e-3), finished_trial(0.91, None, 2e-3))).number == 1
    assert best_trial(optuna.create_study()) is None



def test_a_sweep_result_reports_the_study_counts_and_its_best_trial():
    study = study_of(finished_trial(0.9, 0.3, 1e-3), finished_trial(0.95, 0.2, 2e-3))
    result = sweep_module.SweepResult.of_study(study, "postgresql://u:secret@h/db", "run-1")
    assert (result.states, result.best_trial, result.best_value, result.best_val_loss, result.best_run_id) == \
        ({"COMPLETE": 2}, 1, 0.95, 0.2, "run-0.002")
    assert result.best_params == {"learning_rate": 2e-3} and "secret" not in result.storage
    assert sweep_module.SweepResult.of_study(optuna.create_study(), "sqlite://", "run-2").best_trial is None

# --- kill and resume -------------------------------------------------------------------------------

def test_killed_sweep_restarted_at_once_finishes_and_leaves_no_running_runs(mlflow_store, synthetic_dir: Path,
                                                                           tmp_path: Path):
    """SIGKILL mid-trial, then restart within the heartbeat grace period (10 s): the restarted worker waits
    for the dead trial to go stale, runs its retry, and leaves nothing RUNNING."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = tune_command(synthetic_dir, tmp_path / "cache", "--n-trials", "2", "--study-name", "kr",
                           "--storage", storage, "--heartbeat-interval", "5", "--pruner", "none", "--register", "false")
    env = dict(os.environ)
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            killed = wait_for_training_trial(storage, "kr", first, timeout=180)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert [r.info.status for r in study_runs("kr")].count("RUNNING") == 2  # parent and trial left behind

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    study = optuna.load_study(study_name="kr", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 2
    assert study.trials[killed].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].params == study.trials[killed].params  # same params again
    runs = study_runs("kr")
    assert "RUNNING" not in [r.info.status for r in runs]
    killed_run = next(r for r in runs if r.data.tags.get(TRIAL_TAG) == str(killed))
    assert killed_run.info.status == "KILLED" and killed_run.data.tags[STATE_TAG] == "FAIL"
    assert sorted(r.info.status for r in runs if r.data.tags.get(ROLE_TAG) == "sweep") == ["FINISHED", "KILLED"]


def wait_for_training_trial(storage: str, study_name: str, process: subprocess.Popen, timeout: float) -> int:
    """The number of the first trial that is RUNNING with its MLflow run started (i.e. training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sweep ended before it could be killed"
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            study = None
        for trial in study.get_trials(states=(TrialState.RUNNING,)) if study else []:
            if "mlflow_run_id" in trial.user_attrs:
                return trial.number
        time.sleep(0.5)
    raise AssertionError("no trial started training in time")


# --- pruning and failing trials --------------------------------------------------------------------

def test_bad_trial_is_pruned_and_failing_trial_does_not_stop_the_sweep(mlflow_store, synthetic_dir: Path,
                                                                       tmp_path: Path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="prune", storage=storage, direction="maximize")
    study.enqueue_trial({"learning_rate": 3e-3, "decay_rate": 0.1, "l2": 1e-5})  # good: trains to the end
    study.enqueue_trial({"learning_rate": 3e-3, "decay_rate": 0.1, "l2": 1e-5})  # raises (NaN loss, faked)
    study.enqueue_trial({"learning_rate": 1e-5, "decay_rate": 0.5, "l2": 1e-5})  # far too slow: pruned

    real = space_module.train_and_evaluate

    def nan_in_trial_1(config, data, *, run_name, nested, tags, callbacks):
        if tags[TRIAL_TAG] != "1":
            return real(config, data, run_name=run_name, nested=nested, tags=tags, callbacks=callbacks)
        with mlflow.start_run(run_name=run_name, nested=nested, tags=tags):  # as train_and_evaluate does
            next(c for c in callbacks if isinstance(c, TrialRunLink)).on_train_begin()
            raise FloatingPointError("training diverged: the loss became NaN/inf")

    monkeypatch.setattr(space_module, "train_and_evaluate", nan_in_trial_1)
    # 2 trials to finish: the failed one does not count, so the three enqueued ones are exactly the sweep
    sweep = SweepConfig(n_trials=2, study_name="prune", storage=storage, pruner="median", pruner_startup_trials=1,
                        pruner_warmup_epochs=0, learning_rate_min=1e-5)
    result = run_sweep(base_config(synthetic_dir, tmp_path / "cache", epochs=2), sweep, RegistryConfig(register=False))

    assert result.states == {"COMPLETE": 1, "FAIL": 1, "PRUNED": 1}
    trials = optuna.load_study(study_name="prune", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]
    runs = {r.data.tags[TRIAL_TAG]: r for r in study_runs("prune") if TRIAL_TAG in r.data.tags}
    assert (runs["1"].info.status, runs["1"].data.tags[STATE_TAG]) == ("FAILED", "FAIL")
    assert (runs["2"].info.status, runs["2"].data.tags[STATE_TAG]) == ("KILLED", "PRUNED")
    epochs_logged = len(MlflowClient().get_metric_history(runs["2"].info.run_id, "epoch_val_accuracy"))
    assert epochs_logged == 1  # stopped after its first epoch, before its last
    assert len(MlflowClient().get_metric_history(runs["0"].info.run_id, "epoch_val_accuracy")) == 2


# --- bad options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, field", [
    (["--n-trials", "0"], "n_trials"),
    (["--learning-rate-min", "-0.1"], "learning_rate_min"),
    (["--decay-rate-max", "-1"], "decay_rate_max"),
    (["--l2-min", "0.01", "--l2-max", "0.001"], "l2_min must be <= l2_max"),
    (["--learning-rate-min", "0.1", "--learning-rate-max", "0.01"], "learning_rate_min must be <= learning_rate_max"),
    (["--pruner", "sometimes"], "--pruner"),
    (["--storage", "not a url"], "storage"),
])
def test_bad_sweep_options_fail_before_anything_runs(args, field, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["tune", "--train-data", "missing.csv", *args])
    assert result.exit_code == 2, result.output
    assert field in result.output and "missing.csv" not in result.output
    assert not list(tmp_path.iterdir())  # no store, no study, no cache was written


# --- many workers on one study (PostgreSQL, a real MLflow server) -----------------------------------

def tune_command(synthetic_dir: Path, cache_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "asl_mlops", "tune", "--train-data", str(synthetic_dir / "sign_mnist_train.csv"),
            "--test-data", str(synthetic_dir / "sign_mnist_test.csv"), "--cache-dir", str(cache_dir),
            "--epochs", "1", "--batch-size", "32", "--ema", "false", "--seed", "0", "--cnn-filters", PLUMBING_CNN,
            "--tta", "false", "--ensemble", "1", *args]


@needs_postgres
@pytest.mark.e2e
def test_two_workers_run_exactly_the_study_budget(mlflow_server, postgres_database, synthetic_dir: Path,
                                                  tmp_path: Path):
    storage = postgres_database()  # fresh: the workers create Optuna's tables
    command = tune_command(synthetic_dir, tmp_path / "cache", "--n-trials", "4", "--study-name", "par",
                           "--storage", storage, "--heartbeat-interval", "2", "--pruner", "none", "--workers", "2")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    # a failed worker's own error (a traceback or a one-line "error:"), which the other worker's output may bury
    first_error = min((i for i in (output.find("Traceback"), output.find("\nerror:")) if i >= 0), default=-1)
    assert done.returncode == 0, (output[first_error:first_error + 4000] if first_error >= 0 else "") + output[-4000:]
    assert "Traceback" not in output and "KILLED" not in output, output[-4000:]

    trials = optuna.load_study(study_name="par", storage=storage).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4  # exactly the budget, never more
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get("over_budget") for t in trials if t.state == TrialState.FAIL)
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == 4  # no two workers proposed the same parameters

    runs = study_runs("par")
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    assert len(parents) == 2 and len({r.data.tags["optuna.sampler_seed"] for r in parents}) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}  # no live run closed, nothing left running
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in runs if TRIAL_TAG in r.data.tags) == \
        sorted(t.number for t in finished)

    best = best_trial(optuna.load_study(study_name="par", storage=storage))
    versions = MlflowClient().search_model_versions("name = 'asl-recognizer'")
    assert len(versions) == 1  # registered once, by whichever worker came first
    # the gate ran on it once (default thresholds: these 2-epoch models may fail them): champion if it passed
    version = versions[0]
    assert version.run_id == best.user_attrs["mlflow_run_id"] and "validation_status" in version.tags
    alias = CHAMPION if version.tags["validation_status"] == "passed" else "challenger"
    assert str(MlflowClient().get_model_version_by_alias("asl-recognizer", alias).version) == str(version.version)


@needs_postgres
def test_workers_starting_together_on_a_fresh_database_share_one_study(postgres_database):
    url = postgres_database()
    sweep = SweepConfig(study_name="together", storage=url, heartbeat_interval=5)

    def start(worker: int) -> int:
        storage = storage_module.open_storage(url, sweep.heartbeat_interval)
        study = storage_module.load_or_create_study(storage, sweep, space_module.make_sampler(0),
                                                    optuna.pruners.NopPruner())
        study.set_user_attr(f"worker{worker}", worker)  # through the study this worker got
        return storage.get_study_id_from_name(study.study_name)

    with ThreadPoolExecutor(4) as pool:
        study_ids = list(pool.map(start, range(4)))
    assert len(set(study_ids)) == 1
    assert len(optuna.get_all_study_names(url)) == 1
    # every worker's study is the one stored study: each wrote to it
    assert optuna.load_study(study_name="together", storage=url).user_attrs == {f"worker{i}": i for i in range(4)}


def quiet_ask(study: optuna.Study) -> optuna.Trial:
    """What another worker's `study.ask` leaves: a RUNNING trial (without Optuna's warning about heartbeats)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return study.ask()


def test_of_trials_asked_together_beyond_the_budget_the_later_ones_yield(tmp_path: Path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    first, second, third = quiet_ask(study), quiet_ask(study), quiet_ask(study)  # three workers asked together
    study.tell(first, 0.5)
    assert sweep_module.within_budget(first, n_trials=2) and sweep_module.within_budget(second, n_trials=2)
    assert not sweep_module.within_budget(third, n_trials=2)


def test_a_trial_beyond_the_budget_ends_fail_unrun_with_one_info_line(tmp_path: Path, caplog, recwarn):
    storage = storage_module.open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=5)
    study = optuna.create_study(storage=storage)
    quiet_ask(study)  # another worker's running trial holds the budget of 1
    objective_calls = []

    optuna.logging.enable_propagation()  # Optuna's own handler writes to the stderr of its import time
    try:
        caplog.clear()
        with caplog.at_level("INFO"):
            state = sweep_module.run_trial(study, storage, objective_calls.append, n_trials=1)
    finally:
        optuna.logging.disable_propagation()
    assert state is None and objective_calls == []
    refused = study.trials[1]
    assert refused.state == TrialState.FAIL and refused.user_attrs == {"over_budget": True} and refused.params == {}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "trial 1 not run: the study's 1 trials are held by other workers")]
    assert not recwarn.list  # nor Optuna's warning that its heartbeat needs optimize(): the sweep beats itself


def test_pruned_trials_count_toward_the_budget_and_failed_ones_do_not(tmp_path: Path):
    storage = storage_module.open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=5)
    study = optuna.create_study(storage=storage, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 0:
            raise optuna.TrialPruned("stopped early")
        if trial.number == 1:
            raise FloatingPointError("training diverged: the loss became NaN/inf")
        return x

    assert sweep_module.run_trials(study, storage, objective, n_trials=2, poll_seconds=0.1) == 3
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert all("x" in t.params for t in study.trials)
    with pytest.raises(KeyError):  # a bug stops the sweep, and its trial is not left RUNNING
        sweep_module.run_trials(study, storage, lambda trial: {}["bug"], n_trials=3, poll_seconds=0.1)
    assert study.trials[-1].state == TrialState.FAIL


@needs_postgres
def test_workers_asking_at_once_run_exactly_the_budget(postgres_database):
    url = postgres_database()
    sweep = SweepConfig(study_name="race", storage=url, heartbeat_interval=1)
    first_round = threading.Barrier(4)  # the 4 workers' first trials end together: 4 ask for the last 2 places

    def worker(seed: int) -> int:
        storage = storage_module.open_storage(url, sweep.heartbeat_interval)
        study = storage_module.load_or_create_study(storage, sweep, space_module.make_sampler(seed),
                                                    optuna.pruners.NopPruner())

        def objective(trial: optuna.Trial) -> float:
            if trial.number < 4:
                first_round.wait(timeout=60)
            return trial.suggest_float("x", 0.0, 1.0)

        return sweep_module.run_trials(study, storage, objective, n_trials=6, poll_seconds=0.05)

    with ThreadPoolExecutor(4) as pool:
        ran = list(pool.map(worker, range(4)))
    trials = optuna.load_study(study_name="race", storage=url).trials
    assert sum(ran) == 6 and [t.state for t in trials].count(TrialState.COMPLETE) == 6
    assert all(t.state == TrialState.COMPLETE or t.user_attrs == {"over_budget": True} for t in trials)


def test_worker_arguments_rebuild_the_same_configs(mlflow_store, tmp_path: Path):
    from asl_mlops import cli

    base = TrainConfig(epochs=3, seed=5, augment=False, val_split="random")
    sweep = SweepConfig(n_trials=7, storage="postgresql://u@h/db", workers=3, l2_max=0.01)
    registry = RegistryConfig(register=False, model_name="other-name")
    captured = {}

    def capture(base, sweep, registry):
        captured.update(base=base, sweep=sweep, registry=registry)
        return sweep_module.SweepResult("s", "x", "r", {})

    with pytest.MonkeyPatch.context() as mp:  # only the CLI parsing is under test here
        mp.setattr(sweep_module, "run_sweep", capture)
        mp.setattr("asl_mlops.tracking.check_tracking_server", lambda *a: None)
        result = CliRunner().invoke(cli.main, ["tune", *workers_module.worker_arguments(base, sweep, registry)])
    assert result.exit_code == 0, result.output
    assert captured["base"] == base
    assert captured["sweep"] == sweep.replace(workers=1)
    assert captured["registry"] == registry


@pytest.mark.parametrize("storage, words", [
    ("postgresql://postgres@127.0.0.1:5432/asl_no_such_database", "does not exist"),
    ("postgresql://postgres@127.0.0.1:1/test", "cannot open sweep storage"),
    ("nosuchdriver://host/db", "not a SQLAlchemy database URL"),
    ("mysql://root@127.0.0.1/test", "driver is not installed"),
])
def test_bad_storage_is_one_line_and_exit_2_before_any_work(storage, words, mlflow_store, tmp_path: Path):
    result = CliRunner().invoke(main, ["tune", "--train-data", "missing.csv", "--storage", storage])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and words in result.output and len(result.output.splitlines()) == 1
    assert "missing.csv" not in result.output and not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["tune", "train"])
def test_a_down_tracking_server_is_one_line_and_exit_2_at_once(command, tmp_path: Path, monkeypatch):
    from served_model import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    done = subprocess.run([sys.executable, "-m", "asl_mlops", command, "--train-data", "missing.csv"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().startswith("error: MLflow tracking server http://127.0.0.1:")
    assert "not reachable" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_several_workers_refuse_the_sqlite_storage(mlflow_store, tmp_path: Path):
    result = CliRunner().invoke(main, ["tune", "--train-data", "missing.csv", "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert "--workers 2 needs a storage that several processes can share" in result.output
