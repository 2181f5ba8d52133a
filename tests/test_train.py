"""Training: a short run on synthetic data learns, and logs everything a user looks for in MLflow."""

import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from malformed import MALFORMED_CASES
from mlflow.tracking import MlflowClient

from asl_mlops.data.sign_mnist import load_csv
from asl_mlops.errors import InputError
from asl_mlops.labels import labels_to_indices
from asl_mlops.train import train_and_evaluate
from asl_mlops.training.evaluate import predict_probabilities
from asl_mlops.training.fit import learning_rate_schedule
from asl_mlops.recognizers.preprocess import to_model_input


def test_learning_rate_schedule_is_inverse_time_decay(fast_config):
    schedule = learning_rate_schedule(fast_config.replace(learning_rate=1e-3, decay_rate=0.5))
    assert [schedule(e) for e in range(3)] == pytest.approx([1e-3, 1e-3 / 1.5, 1e-3 / 2.0])


def test_training_seeds_share_validation_rows_and_split_seed_changes_them(fast_config):
    from asl_mlops.training.inputs import prepare_data

    hashes = {(seed, split_seed): prepare_data(fast_config.replace(seed=seed, split_seed=split_seed)).params
              for seed, split_seed in ((1, 0), (2, 0), (1, 5))}
    assert hashes[1, 0]["val_data_hash"] == hashes[2, 0]["val_data_hash"]
    assert hashes[1, 0]["val_data_hash"] != hashes[1, 5]["val_data_hash"]
    # grouped by default: the synthetic fixture's images are all distinct photos, families of one
    # and val_fraction 0.05 of them held out
    assert hashes[1, 0]["families"] == 2400 and hashes[1, 0]["val_families"] == hashes[1, 0]["val_rows"] == 120


def test_batchnorm_statistics_are_recomputed_as_the_mean_over_the_training_batches():
    import keras

    from asl_mlops.config import TrainConfig
    from asl_mlops.data.synth import make_synthetic
    from asl_mlops.training.fit import reestimate_batchnorm
    from asl_mlops.training.inputs import one_hot
    from asl_mlops.training.models import build_cnn

    images = make_synthetic(300, seed=3)  # 3 batches of 100
    x, y = to_model_input(images.images), one_hot(images.labels)
    keras.utils.set_random_seed(0)
    model = build_cnn(0.0)
    bn = model.get_layer("block1_bn")
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 50.0, np.float32))  # stale statistics
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1e4, np.float32))
    reestimate_batchnorm(model, x, y, TrainConfig(batch_size=100, augment=False, seed=0))
    conv = keras.Model(model.input, model.get_layer("block1_conv").output)
    outputs = np.asarray(conv.predict(x, verbose=0))  # the pass's batches hold these rows, shuffled
    whole_mean = outputs.mean(axis=(0, 1, 2))
    # the mean of the three batches' means is the mean over all rows (equal batches), whatever the shuffle
    np.testing.assert_allclose(bn.moving_mean.numpy(), whole_mean, rtol=1e-4, atol=1e-4)
    assert np.all(bn.moving_variance.numpy() < 0.5 * 1e4) and np.all(bn.moving_variance.numpy() > 0)
    assert bn.momentum == 0.9  # the layer's own momentum is back, as saved
    weights = [w.numpy().copy() for w in model.trainable_weights]
    reestimate_batchnorm(model, x, y, TrainConfig(batch_size=100, augment=False, seed=0))
    assert all(np.array_equal(w, v.numpy()) for w, v in zip(weights, model.trainable_weights))  # no update


@pytest.mark.slow
def test_short_run_learns_and_logs_everything(fast_config, mlflow_store):
    result = train_and_evaluate(fast_config)
    assert result.test.accuracy >= 0.9  # chance is 1/24
    assert result.val_accuracy >= 0.9

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for key in ("learning_rate", "decay_rate", "l2", "epochs", "batch_size", "seed", "architecture", "weights",
                "train_data", "test_data", "augment", "brightness", "early_stopping", "val_split", "split_seed",
                "families", "val_families", "val_data_hash"):
        assert key in params, key
    assert params["trainable_params"] == str(result.trainable_params)
    assert params["train_data_hash"] == load_csv(fast_config.train_data).content_hash
    assert int(params["train_rows"]) + int(params["val_rows"]) == int(params["train_csv_rows"]) == 2400
    assert int(params["test_rows"]) == 720

    assert re.fullmatch(r"CPU: .+ \((oneDNN|Eigen)\)|GPU: .+", run.data.tags["device"])  # which CPU kernels ran
    assert "validated on" in run.data.tags["mlflow.note.content"]  # the run's description in the UI
    assert re.fullmatch(r"cnn-seed0-\d{8}-\d{6}-[0-9a-f]{6}", run.info.run_name)  # what ran, when, and a tag
    # MLflow datasets: training / validation / test, the content hash as digest
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert inputs["training"].digest == params["train_data_hash"][:16]
    assert inputs["validation"].digest == params["val_data_hash"][:16]
    assert inputs["test"].digest == params["test_data_hash"][:16]
    # ONE logged model per run, the recognizer; its model_config names the architecture
    logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{result.run_id}'", output_format="list")
    assert [m.name for m in logged] == ["recognizer"]
    assert mlflow.models.get_model_info(result.model_uri).model_id == logged[0].model_id
    # the final metrics are linked to it, per dataset (its page shows them), and a registered version of it
    # points at it, so the version's page shows the same
    registered = mlflow.register_model(result.model_uri, "linked")
    model_id = logged[0].model_id
    assert client.get_model_version("linked", registered.version).source == f"models:/{model_id}"
    assert '"name": "linked"' in mlflow.get_logged_model(model_id).tags["mlflow.modelVersions"]
    by_key = {(m.key, m.dataset_digest): m.value for m in mlflow.get_logged_model(model_id).metrics}
    assert by_key[("val_accuracy", params["val_data_hash"][:16])] == pytest.approx(result.val_accuracy)
    assert by_key[("test_accuracy", params["test_data_hash"][:16])] == pytest.approx(result.test.accuracy)
    # ...and nothing else: no per-epoch value (MLflow copies the run's metrics of the model's step onto it), each
    # final metric once per dataset
    keys = [m.key for m in mlflow.get_logged_model(model_id).metrics]
    assert sorted(keys) == sorted({"val_accuracy", "val_loss", "test_accuracy", "test_loss",
                                   "test_errors"}), keys
    description = mlflow.get_logged_model(model_id).tags["mlflow.note.content"]  # the UI's "Description"
    assert description.startswith("Sign MNIST recognizer") and f"test accuracy {result.test.accuracy:.4f}" in description
    for key in ("epoch_loss", "epoch_accuracy", "epoch_val_loss", "epoch_val_accuracy", "epoch_learning_rate",
                "epoch_seconds"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in history] == list(range(fast_config.epochs)), key
    lrs = [m.value for m in client.get_metric_history(result.run_id, "epoch_learning_rate")]
    schedule = learning_rate_schedule(fast_config)
    assert lrs == pytest.approx([schedule(e) for e in range(fast_config.epochs)], rel=1e-5)
    metrics = run.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(result.test.accuracy)
    assert math.isfinite(metrics["test_loss"])
    assert 0.0 <= metrics["test_f1_K"] <= 1.0 and "test_precision_A" in metrics and "test_recall_Y" in metrics

    artifacts = {a.path for d in ("plots", "reports") for a in client.list_artifacts(result.run_id, d)}
    assert {"plots/training_curves.png", "plots/test_confusion_matrix.png", "plots/test_misclassified.png",
            "reports/test_classification_report.txt"} <= artifacts

    # The network inside the recognizer takes raw pixels; with test-time augmentation it reproduces the
    # logged test accuracy, and the recognizer's probabilities are its probabilities.
    test = load_csv(fast_config.test_data)
    recognizer = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model()
    assert recognizer.architecture == "cnn" and recognizer.tta
    assert recognizer.model.input_shape == (None, 28, 28, 1)
    probabilities = predict_probabilities(recognizer.model, to_model_input(test.images), tta=True)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels_to_indices(test.labels)))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    np.testing.assert_allclose(recognizer.read(test.images).probabilities, probabilities, atol=1e-5)


def test_generated_run_names_differ_under_the_same_seed():
    import keras

    from asl_mlops.train import generate_run_name

    names = []
    for _ in range(3):
        keras.utils.set_random_seed(42)  # as train_and_evaluate does before naming its run
        names.append(generate_run_name())
    assert len(set(names)) == 3
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", name) for name in names)


@pytest.mark.parametrize("case", ["label_9", "truncated_row", "non_numeric"])
def test_bad_training_data_fails_before_any_run(case, fast_config, mlflow_store, tmp_path):
    write, expected = MALFORMED_CASES[case]
    bad = write(tmp_path)
    with pytest.raises(InputError, match=expected):
        train_and_evaluate(fast_config.replace(train_data=str(bad)))
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_bad_weights_file_fails_before_any_run(fast_config, mlflow_store):
    with pytest.raises(InputError, match="missing.weights.h5"):
        train_and_evaluate(fast_config.replace(architecture="resnet50", weights="missing.weights.h5"))
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_error_inside_a_run_marks_it_failed(fast_config, mlflow_store):
    class Boom(Exception):
        pass

    import keras

    class Explode(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Boom("simulated crash during training")

    with pytest.raises(Boom):
        train_and_evaluate(fast_config.replace(epochs=1), callbacks=[Explode()])
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["status"]) == ["FAILED"]


@pytest.mark.slow
def test_evaluate_command_reproduces_the_runs_test_accuracy(fast_config, mlflow_store):
    from click.testing import CliRunner

    from asl_mlops.cli import main

    result = train_and_evaluate(fast_config.replace(epochs=2))
    out = CliRunner().invoke(main, ["evaluate", "--model-uri", f"runs:/{result.run_id}/recognizer",
                                    "--data", fast_config.test_data])
    assert out.exit_code == 0, out.output
    assert f"test_accuracy={result.test.accuracy:.4f}" in out.output
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.mlflow.runName = 'evaluate'")
    assert len(runs) == 1 and runs.loc[0, "metrics.test_accuracy"] == pytest.approx(result.test.accuracy)
    assert mlflow.get_experiment(runs.loc[0, "experiment_id"]).name == "asl-mlops"  # the CLI's default experiment
    registered = CliRunner().invoke(main, ["evaluate", "--model-uri", result.model_uri, "--no-log",
                                           "--data", fast_config.test_data])
    assert registered.exit_code == 0, registered.output
    assert f"test_accuracy={result.test.accuracy:.4f}" in registered.output
    bad = CliRunner().invoke(main, ["evaluate", "--model-uri", result.model_uri, "--data", "missing.csv"])
    assert bad.exit_code == 2 and "missing.csv" in bad.output


# Run in a fresh Python process: as where asl_mlops is not installed, importing it fails there.
LOAD_WITHOUT_ASL_MLOPS = """
import json, sys
sys.modules["asl_mlops"] = None
import keras, numpy as np
path, x = sys.argv[1], np.load(sys.argv[2])
model = keras.models.load_model(path)
print(json.dumps({"optimizer": type(model.optimizer).__name__,
                  "label_smoothing": getattr(model.loss, "label_smoothing", None),
                  "predicted": np.asarray(model.predict(x, verbose=0)).argmax(axis=1).tolist()}))
"""


@pytest.mark.slow
def test_the_recognizers_keras_network_loads_without_asl_mlops(fast_config, mlflow_store, tmp_path):
    import json
    import subprocess
    import sys

    # trained with asl_mlops' optimizer; without TTA, so the plain network's accuracy is the logged one
    result = train_and_evaluate(fast_config.replace(epochs=1, ema=True, tta=False, label_smoothing=0.1))
    test = load_csv(fast_config.test_data)
    np.save(tmp_path / "x.npy", to_model_input(test.images))  # raw pixels: the network preprocesses itself
    folder = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path / "model")))
    [keras_file] = folder.rglob("*.keras")
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_ASL_MLOPS, str(keras_file), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["optimizer"] == "Adam"  # the compile config names keras' own class
    assert loaded["label_smoothing"] == pytest.approx(0.1)  # and the loss it was trained with
    labels = labels_to_indices(test.labels)
    assert np.mean(np.array(loaded["predicted"]) == labels) == pytest.approx(result.test.accuracy, abs=1e-9)


@pytest.mark.slow
def test_ensemble_is_logged_and_served_as_one_model_averaging_its_members(fast_config, mlflow_store):
    import keras

    config = fast_config.replace(ensemble=2, epochs=3, tta=False)
    result = train_and_evaluate(config)
    assert result.test.accuracy >= 0.9
    logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{result.run_id}'", output_format="list")
    assert [m.name for m in logged] == ["recognizer"]  # still one model
    network = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().model
    members = [network.get_layer("member0"), network.get_layer("member1")]
    test = load_csv(fast_config.test_data)
    x = to_model_input(test.images)
    outputs = [np.asarray(m.predict(x, verbose=0)) for m in members]
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3  # two different networks (seeds 0 and 1) ...
    np.testing.assert_allclose(network.predict(x, verbose=0), (outputs[0] + outputs[1]) / 2, atol=1e-6)  # averaged
    assert result.trainable_params == 2 * sum(int(np.prod(w.shape)) for w in members[0].trainable_weights)
    client = MlflowClient()
    for key in ("epoch_val_accuracy", "member1_epoch_val_accuracy"):  # each member's epochs are in the run
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 1, 2], key
    with pytest.raises(InputError, match="ensemble > 1 is for architecture cnn only"):
        fast_config.replace(ensemble=2, architecture="resnet50")
    keras.backend.clear_session()


@pytest.mark.slow
def test_a_photo_run_on_signer_folders_validates_on_whole_signers_and_logs_its_calibration(
        mlflow_store, hand_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Signer folders of real hands (four signers): validation holds out whole signers, never one on both sides,
    the run says who, and the logged model carries the temperature and "not sure" threshold fitted on them."""
    import shutil

    from conftest import REAL_HANDS, real_hand_photos

    from asl_mlops.config import TrainConfig
    from asl_mlops.labels import LETTERS

    if not REAL_HANDS.is_dir():
        pytest.skip(f"no real hand photos at {REAL_HANDS}")
    monkeypatch.setenv("ASL_MLOPS_HAND_MODEL", str(hand_model))
    signers = ("massey-hand1", "massey-hand2", "t32rahman", "kynmiiso")
    for signer in signers:
        for letter in LETTERS:
            (tmp_path / "train" / signer / letter).mkdir(parents=True)
            for photo in real_hand_photos(letter, signer, 2):
                shutil.copy(photo, tmp_path / "train" / signer / letter)
    test = tmp_path / "test"
    for letter in LETTERS:
        (test / letter).mkdir(parents=True)
        for photo in real_hand_photos(letter, "mandeep888", 1):
            shutil.copy(photo, test / letter)
    config = TrainConfig(train_data=str(tmp_path / "train"), test_data=str(test), cache_dir=str(tmp_path / "cache"),
                         epochs=3, val_fraction=0.25, seed=0)
    result = train_and_evaluate(config)
    run = MlflowClient().get_run(result.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["photo_layout"] == "signers" and params["signers"] == "4" and params["val_held_out"] == "signers"
    held = params["val_signers"].split(",")
    assert 1 <= len(held) < 4 and set(held) <= set(signers)
    assert int(params["train_signers"]) == 4 - len(held)  # nobody on both sides
    assert int(params["val_rows"]) == 48 * len(held)
    assert metrics["temperature"] > 0 and 0 <= metrics["not_sure_below"] <= 1
    assert {"val_coverage", "val_answered_accuracy", "test_confidently_wrong"} <= set(metrics)
    config_logged = mlflow.models.get_model_info(result.model_uri).flavors["python_function"]["config"]
    assert config_logged["temperature"] == pytest.approx(metrics["temperature"])
    assert config_logged["not_sure_below"] == pytest.approx(metrics["not_sure_below"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "plots")}
    assert "plots/test_reliability.png" in artifacts


def test_a_run_has_one_val_accuracy_linked_to_its_model(fast_config, mlflow_store):
    """Per-epoch values are epoch_val_accuracy, one a step; the run's val_accuracy (the served model's) and each final
    test figure are logged once, with the logged model and its dataset."""
    result = train_and_evaluate(fast_config.replace(epochs=2, tta=False))
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(result.run_id, "epoch_val_accuracy")] == [0, 1]
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "test_errors"):
        assert len(client.get_metric_history(result.run_id, key)) == 1, key
    linked = {m.key: m for m in mlflow.get_logged_model(result.model_uri.removeprefix("models:/")).metrics}
    assert linked["val_accuracy"].value == result.val_accuracy and linked["val_accuracy"].dataset_name
