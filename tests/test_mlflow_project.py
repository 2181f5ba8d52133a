"""End to end: the real `mlflow run . --env-manager local` trains, evaluates and logs one run."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import PLUMBING_CNN
from mlflow.tracking import MlflowClient

from asl_mlops.data.sign_mnist import load_csv
from asl_mlops.labels import labels_to_indices

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def mlflow_run(args: list[str], store: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`mlflow run <repo> --env-manager local ARGS` against the tracking store `store`."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([str(bin_dir / "mlflow"), "run", str(ROOT), "--env-manager", "local", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_mlflow_run_main_entry_point(demo_dir, mlflow_store, tmp_path):
    """`mlflow run . -P epochs=3` on `asl-mlops data synth`'s set, every other setting at its default
    (grouped validation, augmentation, weight averaging), learns it."""
    synthetic_dir = demo_dir
    done = mlflow_run(["--experiment-name", "e2e",
                       "-P", f"train_data={synthetic_dir / 'sign_mnist_train.csv'}",
                       "-P", f"test_data={synthetic_dir / 'sign_mnist_test.csv'}",
                       "-P", f"cache_dir={tmp_path / 'cache'}", "-P", f"epochs={EPOCHS}"], mlflow_store, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # the model's config agrees with the run's params (MLflow logs it as params too, and warns on a clash)
    assert "Failed to log model config as params" not in done.stderr, done.stderr[-3000:]

    runs = mlflow.search_runs(experiment_names=["e2e"])
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"
    run_id = runs.loc[0, "run_id"]
    client = MlflowClient()
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["epochs"] == str(EPOCHS) and params["augment"] == "true"
    assert params["architecture"] == "auto" and params["resolved_architecture"] == "cnn"  # as asked, as trained
    assert params["ema"] == "true" and params["val_split"] == "grouped" and params["batch_size"] == "128"
    assert params["ensemble"] == "auto" and params["ensemble_members"] == "2"  # the default: two networks
    assert params["train_data_hash"] == load_csv(synthetic_dir / "sign_mnist_train.csv").content_hash
    assert int(params["trainable_params"]) > 0 and int(params["total_params"]) >= int(params["trainable_params"])
    for key in ("epoch_loss", "epoch_accuracy", "epoch_val_loss", "epoch_val_accuracy", "epoch_learning_rate",
                "member1_epoch_val_accuracy"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(EPOCHS)), key
    assert metrics["test_accuracy"] >= 0.9

    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/training_curves.png", "plots/test_confusion_matrix.png", "plots/test_misclassified.png"} <= plots

    # The run's one model, the recognizer, has its signature and input example, and (what is registered and
    # served, with test-time augmentation) predicts the test set with the logged accuracy.
    logged = mlflow.models.get_model_info(f"runs:/{run_id}/recognizer")
    assert logged.signature is not None and logged.saved_input_example_info is not None
    test = load_csv(synthetic_dir / "sign_mnist_test.csv")
    recognizer = mlflow.pyfunc.load_model(f"runs:/{run_id}/recognizer").unwrap_python_model()
    probabilities = recognizer.read(test.images).probabilities
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels_to_indices(test.labels)))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)


@pytest.mark.e2e
def test_mlflow_run_with_bad_data_fails_and_leaves_no_running_run(synthetic_dir, mlflow_store, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,pixel1\n3,4\n")
    done = mlflow_run(["--experiment-name", "bad", "-P", f"train_data={bad}",
                       "-P", f"test_data={synthetic_dir / 'sign_mnist_test.csv'}"], mlflow_store, tmp_path, 300)
    assert done.returncode != 0
    assert "bad.csv" in done.stderr and "Traceback (most recent call last)" not in done.stderr.split("ExecutionException")[0]
    runs = mlflow.search_runs(experiment_names=["bad"])
    assert "RUNNING" not in set(runs["status"])
    assert not any(client_artifacts for client_artifacts in
                   (MlflowClient().list_artifacts(r) for r in runs["run_id"]))


@pytest.mark.e2e
def test_mlflow_run_tune_entry_point_sweeps_and_registers(synthetic_dir, mlflow_store, tmp_path):
    from asl_mlops.registry import CHAMPION
    from asl_mlops.tuning.runs import ROLE_TAG, STUDY_TAG

    done = mlflow_run(["-e", "tune", "--experiment-name", "tune",
                       "-P", f"train_data={synthetic_dir / 'sign_mnist_train.csv'}",
                       "-P", f"test_data={synthetic_dir / 'sign_mnist_test.csv'}",
                       "-P", f"cache_dir={tmp_path / 'cache'}", "-P", "epochs=2", "-P", "batch_size=32",
                       "-P", "augment=false", "-P", "ema=false", "-P", "n_trials=2", "-P", "study_name=e2e",
                       "-P", f"cnn_filters={PLUMBING_CNN}", "-P", "tta=false", "-P", "ensemble=1",
                       "-P", "pruner=none", "-P", "model_name=e2e-recognizer"], mlflow_store, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["tune"], output_format="list")
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags[STUDY_TAG] == "e2e" and parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {(c.data.params["cnn_filters"], c.data.params["tta"]) for c in children} == {(PLUMBING_CNN, "false")}
    assert parent.data.metrics["best_val_accuracy"] == max(c.data.metrics["val_accuracy"] for c in children)
    assert (tmp_path / "optuna.db").exists()  # default storage: beside the SQLite MLflow store
    version = MlflowClient().get_model_version("e2e-recognizer", "1")
    assert version.run_id in {c.info.run_id for c in children}
    # the sweep ran the validation gate on it: champion if it passed, else still challenger (2 epochs may not pass)
    alias = CHAMPION if version.tags["validation_status"] == "passed" else "challenger"
    assert str(MlflowClient().get_model_version_by_alias("e2e-recognizer", alias).version) == "1"
