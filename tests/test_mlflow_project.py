"""End to end: the real `mlflow run . --env-manager local` trains, evaluates and logs one run."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from asl_mlops.data import load_csv
from asl_mlops.labels import labels_to_indices
from asl_mlops.preprocess import to_model_input

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


@pytest.mark.e2e
def test_mlflow_run_main_entry_point(synthetic_dir, mlflow_store, tmp_path):
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "run", str(ROOT), "--env-manager", "local", "--experiment-name", "e2e",
               "-P", f"train_data={synthetic_dir / 'sign_mnist_train.csv'}",
               "-P", f"test_data={synthetic_dir / 'sign_mnist_test.csv'}",
               "-P", f"cache_dir={tmp_path / 'cache'}", "-P", f"epochs={EPOCHS}", "-P", "batch_size=32",
               "-P", "augment=false", "-P", "ema=false", "-P", "seed=0"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = mlflow.search_runs(experiment_names=["e2e"])
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"
    run_id = runs.loc[0, "run_id"]
    client = MlflowClient()
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["epochs"] == str(EPOCHS) and params["architecture"] == "cnn" and params["augment"] == "false"
    assert params["train_data_hash"] == load_csv(synthetic_dir / "sign_mnist_train.csv").content_hash
    assert int(params["trainable_params"]) > 0 and int(params["total_params"]) >= int(params["trainable_params"])
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(EPOCHS)), key
    assert metrics["test_accuracy"] >= 0.9

    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/training_curves.png", "plots/test_confusion_matrix.png", "plots/test_misclassified.png"} <= plots

    # The logged model (with its signature and input example) predicts the test set with the logged accuracy.
    logged = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    assert logged.signature is not None and logged.saved_input_example_info is not None
    test = load_csv(synthetic_dir / "sign_mnist_test.csv")
    model = mlflow.tensorflow.load_model(f"runs:/{run_id}/model")
    probabilities = model.predict(to_model_input(test.images, "cnn"), verbose=0)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels_to_indices(test.labels)))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)


@pytest.mark.e2e
def test_mlflow_run_with_bad_data_fails_and_leaves_no_running_run(synthetic_dir, mlflow_store, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,pixel1\n3,4\n")
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run([str(mlflow_cli), "run", str(ROOT), "--env-manager", "local", "--experiment-name", "bad",
                           "-P", f"train_data={bad}", "-P", f"test_data={synthetic_dir / 'sign_mnist_test.csv'}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "bad.csv" in done.stderr and "Traceback (most recent call last)" not in done.stderr.split("ExecutionException")[0]
    runs = mlflow.search_runs(experiment_names=["bad"])
    assert "RUNNING" not in set(runs["status"])
    assert not any(client_artifacts for client_artifacts in
                   (MlflowClient().list_artifacts(r) for r in runs["run_id"]))
