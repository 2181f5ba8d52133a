"""Optimizer: the weight average warms up like tf.train.ExponentialMovingAverage(num_updates=step)."""

import keras
import mlflow
import numpy as np
import pytest

from asl_mlops.config import TrainConfig
from asl_mlops.data.synth import make_synthetic
from asl_mlops.training.fit import fit
from asl_mlops.training.inputs import PreparedData, one_hot
from asl_mlops.training.models import build_model
from asl_mlops.training.optimizer import WarmupEMAAdam, as_keras_adam, warmup_momentum
from asl_mlops.training.preprocess import to_model_input


def moving_average(snapshots: list[np.ndarray], momentum) -> np.ndarray:
    """Numpy EMA of the weights after each step: a copy at step 0, then momentum(step) per step."""
    average = snapshots[0].astype(np.float64)
    for step, weights in enumerate(snapshots[1:], start=1):
        average = momentum(step) * average + (1 - momentum(step)) * weights
    return average


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (1, 2 / 11), (10, 11 / 20), (889, 890 / 899), (890, 0.99),
                                                (10_000, 0.99)])
def test_warmup_momentum_is_tf_ema_num_updates_formula(step, expected):
    assert warmup_momentum(step) == pytest.approx(expected, rel=1e-12)


# 0.99: a dozen steps are all warm-up; 0.5: the cap is reached at step 8.
@pytest.mark.parametrize("cap", [0.99, 0.5])
def test_average_follows_the_warmup_formula_step_by_step(cap):
    weight = keras.Variable(np.array([1.0], dtype="float32"))
    optimizer = WarmupEMAAdam(0.1, use_ema=True, ema_momentum=cap)
    snapshots = []
    for gradient in [0.3, -1.0, 2.0, 0.5, -0.2, 1.0, 1.0, -3.0, 0.1, 0.2, 0.3, -0.4]:
        optimizer.apply([np.array([gradient], dtype="float32")], [weight])
        snapshots.append(weight.numpy().copy())
    warmed = moving_average(snapshots, lambda step: warmup_momentum(step, cap))
    keras_fixed = moving_average(snapshots, lambda step: cap)  # what keras.optimizers.Adam(use_ema=True) keeps
    optimizer.finalize_variable_values([weight])  # public API: the average into the weight
    assert weight.numpy() == pytest.approx(warmed, rel=1e-6)
    assert abs(warmed - keras_fixed).max() > 1e-4  # over 100x the tolerance: the check tells the two apart


def batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_fit_keeps_the_warmed_up_average_and_returns_a_plain_keras_adam(mlflow_store):
    images = make_synthetic(64, seed=0)
    x, y = to_model_input(images.images), one_hot(images.labels)
    data = PreparedData(x, y, x[:32], y[:32], x[:32], y[:32].argmax(axis=1), images.images[:32])
    config = TrainConfig(epochs=3, batch_size=32, augment=False, ema=True, seed=0)  # 2 steps per epoch

    class RecordWeights(keras.callbacks.Callback):
        """The raw (trained, not averaged) weights after every step; SwapEMAWeights swaps them back
        in at each epoch's start, so they are what the model holds during the epoch."""

        def __init__(self):
            super().__init__()
            self.snapshots: list[list[np.ndarray]] = []
            self.fused: list[bool] = []  # whether the BatchNorm layers ran on the fused op (asl_mlops.training.fused_batchnorm)

        def on_train_batch_end(self, batch, logs=None):
            self.snapshots.append([w.numpy().copy() for w in self.model.trainable_weights])
            self.fused.append(all("call" in vars(layer) for layer in batchnorms(self.model)))

    keras.utils.set_random_seed(0)
    model, recorder = build_model(config), RecordWeights()
    with mlflow.start_run() as run:
        history = fit(model, data, config, callbacks=[recorder])
    assert len(recorder.snapshots) == 6 and len(history.history["val_accuracy"]) == 3
    assert recorder.fused == [True] * 6 and not any("call" in vars(layer) for layer in batchnorms(model))
    final = [w.numpy() for w in model.trainable_weights]
    for i, weights in enumerate(final):
        expected = moving_average([s[i] for s in recorder.snapshots], warmup_momentum)
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
    assert model.optimizer.use_ema and int(model.optimizer.iterations.numpy()) == 6
    assert model.optimizer.get_config()["learning_rate"] == pytest.approx(1e-3 / 1.2)  # epoch 2 of the schedule


def test_as_keras_adam_copies_settings_and_state():
    weight = keras.Variable(np.array([1.0, 2.0], dtype="float32"))
    trained = WarmupEMAAdam(0.01, use_ema=True, beta_1=0.8)
    for _ in range(3):
        trained.apply([np.array([0.5, -0.5], dtype="float32")], [weight])
    plain = as_keras_adam(trained, [weight])
    assert type(plain) is keras.optimizers.Adam
    assert plain.get_config() == trained.get_config()
    for copied, original in zip(plain.variables, trained.variables, strict=True):
        np.testing.assert_array_equal(copied.numpy(), original.numpy())
    assert not as_keras_adam(WarmupEMAAdam(0.01), [weight]).built  # an unused optimizer has no state to copy
