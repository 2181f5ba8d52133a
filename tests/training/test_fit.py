"""fit: Keras' Adam with its weight average (use_ema), spanning about the last tenth of the run; resnet50 trained
with and without the trunk cache, its ImageNet mean never adapted."""

import keras
import mlflow
import numpy as np
import pytest

from asl_mlops.config import TrainConfig
from asl_mlops.data.synth import make_synthetic
from asl_mlops.training.fit import ema_momentum, fit, training_optimizer
from asl_mlops.training.inputs import PreparedData, one_hot
from asl_mlops.training.models import build_model
from asl_mlops.recognizers.preprocess import to_model_input


def moving_average(snapshots: list[np.ndarray], momentum: float) -> np.ndarray:
    """Numpy EMA of the weights after each step, as Keras keeps it: a copy at step 0, then `momentum` per step."""
    average = snapshots[0].astype(np.float64)
    for weights in snapshots[1:]:
        average = momentum * average + (1 - momentum) * weights
    return average


@pytest.mark.parametrize(("steps", "cap", "expected"), [
    (1_668, 0.999, 1 - 10 / 1_668),  # the default run (139 steps x 12 epochs): below the cap
    (100_000, 0.999, 0.999),  # a long run: the cap
    (6, 0.999, 0.0),  # fewer steps than the horizon: the average is the last weights
    (100, 0.5, 0.5),
])
def test_ema_momentum_spans_the_last_tenth_of_the_run_up_to_the_cap(steps, cap, expected):
    assert ema_momentum(TrainConfig(ema_momentum=cap), steps) == pytest.approx(expected)


def test_the_average_keeps_almost_none_of_the_initial_weights():
    steps = 1_668
    assert ema_momentum(TrainConfig(), steps) ** steps < 1e-4  # e^-10 ~ 4.5e-5
    assert 0.999 ** steps > 0.18  # what a fixed default momentum would leave


def test_training_optimizer_is_keras_adam_with_its_weight_average():
    optimizer = training_optimizer(TrainConfig(learning_rate=0.01), steps=200)
    assert type(optimizer) is keras.optimizers.Adam
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.95)
    assert not training_optimizer(TrainConfig(ema=False), steps=200).use_ema


def batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_fit_ends_with_the_weight_average_and_keras_adam(mlflow_store):
    images = make_synthetic(64, seed=0)
    x, y = to_model_input(images.images), one_hot(images.labels)
    data = PreparedData(x, y, x[:32], y[:32], x[:32], y[:32].argmax(axis=1), images.images[:32])
    # 2 steps per epoch, 12 steps: momentum 1 - 10/12, so the average differs from the last weights.
    config = TrainConfig(epochs=6, batch_size=32, augment=False, ema=True, seed=0)

    class RecordWeights(keras.callbacks.Callback):
        """The raw (trained, not averaged) weights after every step; SwapEMAWeights swaps them back
        in at each epoch's start, so they are what the model holds during the epoch."""

        def __init__(self):
            super().__init__()
            self.snapshots: list[list[np.ndarray]] = []
            self.fused: list[bool] = []  # whether BatchNorm ran on the fused op (asl_mlops.training.fused_batchnorm)

        def on_train_batch_end(self, batch, logs=None):
            self.snapshots.append([w.numpy().copy() for w in self.model.trainable_weights])
            self.fused.append(all("call" in vars(layer) for layer in batchnorms(self.model)))

    keras.utils.set_random_seed(0)
    model, recorder = build_model(config), RecordWeights()
    with mlflow.start_run() as run:
        history = fit(model, data, config, callbacks=[recorder])
    assert len(recorder.snapshots) == 12 and len(history.history["val_accuracy"]) == 6
    assert recorder.fused == [True] * 12 and not any("call" in vars(layer) for layer in batchnorms(model))
    momentum = ema_momentum(config, 12)
    final = [w.numpy() for w in model.trainable_weights]
    for i, weights in enumerate(final):
        expected = moving_average([s[i] for s in recorder.snapshots], momentum)
        np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6, err_msg=model.trainable_weights[i].path)
    # Not the last raw weights: the model ends with the average.
    assert max(abs(f - s).max() for f, s in zip(final, recorder.snapshots[-1])) > 1e-4

    # The cnn's BatchNorm statistics were recomputed for the averaged weights: the mean over the training rows.
    assert "batchnorm_seconds" in mlflow.get_run(run.info.run_id).data.metrics
    bn, conv = model.get_layer("block1_bn"), keras.Model(model.input, model.get_layer("block1_conv").output)
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.asarray(conv.predict(x, verbose=0)).mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.9

    # What a saved model names: keras' own Adam, with the run's settings and the optimizer's trained state.
    assert type(model.optimizer) is keras.optimizers.Adam
    assert model.optimizer.use_ema and int(model.optimizer.iterations.numpy()) == 12
    assert model.optimizer.get_config()["learning_rate"] == pytest.approx(1e-3 / 1.5)  # epoch 5 of the schedule


def tiny_resnet50(tmp_path, trunk_cache: bool) -> TrainConfig:
    """resnet50 for one epoch on 120 synthetic rows (24 for validation) and 24 test rows; weights=none: no download."""
    from asl_mlops.data.sign_mnist import write_csv

    write_csv(make_synthetic(120, seed=0), tmp_path / "train.csv")
    write_csv(make_synthetic(24, seed=1), tmp_path / "test.csv")
    return TrainConfig(architecture="resnet50", weights="none", trunk_cache=trunk_cache, epochs=1, batch_size=32,
                       train_data=str(tmp_path / "train.csv"), test_data=str(tmp_path / "test.csv"),
                       cache_dir=str(tmp_path / "cache"), val_split="random", val_fraction=0.2, augment=False,
                       tta=False, seed=0)


def assert_imagenet_mean(model: keras.Model) -> None:
    """resnet50's input Normalization still subtracts ImageNet's channel means (variance 1): never adapted."""
    from asl_mlops.training.models import RESNET50_MEANS_BGR

    layer = model.get_layer("imagenet_mean")
    np.testing.assert_allclose(np.ravel(layer.mean), RESNET50_MEANS_BGR, rtol=1e-6)
    np.testing.assert_allclose(np.ravel(layer.variance), 1.0, rtol=1e-6)


@pytest.mark.parametrize("trunk_cache", [True, False], ids=["trunk-cache", "no-trunk-cache"])
def test_fit_trains_resnet50_both_ways_without_adapting_its_imagenet_mean(mlflow_store, tmp_path, trunk_cache):
    """`fit` trains resnet50's tail on cached trunk features, or (no trunk cache) the whole network on raw pixels;
    either way it adapts only the keypoint network's own standardisation, so resnet50's fixed ImageNet mean (a
    Normalization layer too) is left alone."""
    from asl_mlops.training.inputs import prepare_data

    config = tiny_resnet50(tmp_path, trunk_cache)
    data = prepare_data(config)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    before = model.get_layer("letter").get_weights()[0].copy()
    with mlflow.start_run():
        history = fit(model, data, config)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert np.abs(model.get_layer("letter").get_weights()[0] - before).max() > 0  # it trained
    assert_imagenet_mean(model)


@pytest.mark.slow  # ~20-75 s on 2 cores: logging the 95 MB network is much of it
@pytest.mark.parametrize("trunk_cache", [False], ids=["no-trunk-cache"])
def test_a_resnet50_run_trains_both_ways_and_logs_one_val_accuracy(mlflow_store, tmp_path, trunk_cache):
    """The original design's whole run end to end (the path that crashed; the cached path is trained at the fit
    level above, which is where the two differ): the logged network keeps the ImageNet mean, and the run has one
    val_accuracy (per-epoch values are epoch_val_accuracy) and one of each final test figure."""
    from mlflow.tracking import MlflowClient

    from asl_mlops.train import train_and_evaluate

    result = train_and_evaluate(tiny_resnet50(tmp_path, trunk_cache))
    run = mlflow.get_run(result.run_id)
    assert run.data.params["trunk_cache"] == str(trunk_cache).lower()
    assert ("trunk_cache" in run.data.tags) == trunk_cache  # hit or miss: only a cached run reads the cache
    assert len(result.history["loss"]) == 1 and np.isfinite(result.history["loss"][0])
    assert_imagenet_mean(mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().model)
    client = MlflowClient()
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "test_errors", "epoch_val_accuracy"):
        assert len(client.get_metric_history(result.run_id, key)) == 1, key
