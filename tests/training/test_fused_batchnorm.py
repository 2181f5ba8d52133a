"""BatchNormalization on TensorFlow's fused op computes what Keras' own layer does, and leaves no trace."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from asl_mlops.training.fused_batchnorm import batchnorm_layers, fused_batchnorm
from asl_mlops.training.models import average_ensemble, build_cnn


def batchnorm_model(momentum: float = 0.9) -> keras.Model:
    inputs = keras.Input((7, 5, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn")(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))


def training_step(model: keras.Model, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Output in training mode and the gradients of a weighted sum of it with respect to every trainable weight."""
    weights = tf.constant(np.linspace(-1.0, 2.0, int(np.prod(model.output.shape[1:]))), tf.float32)
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_sum(y * weights)
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def op_types(model: keras.Model, training: bool) -> set[str]:
    """The TensorFlow op types of `model`'s forward pass, as a traced graph."""
    forward = tf.function(lambda x: model(x, training=training))
    graph = forward.get_concrete_function(tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def test_fused_training_step_matches_keras_output_gradients_and_moving_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (16, 7, 5, 3)).astype(np.float32)
    keras_model, fused_model = batchnorm_model(), batchnorm_model()
    fused_model.set_weights(keras_model.get_weights())
    fused_model.get_layer("bn").gamma.assign(rng.uniform(0.5, 2.0, 4).astype(np.float32))
    keras_model.get_layer("bn").gamma.assign(fused_model.get_layer("bn").gamma)

    expected_y, expected_grads = training_step(keras_model, x)
    with fused_batchnorm(fused_model) as layers:
        assert [layer.name for layer in layers] == ["bn"]
        assert "FusedBatchNormV3" in op_types(fused_model, training=True)  # the fused op runs, not Keras' own ops
        assert "FusedBatchNormV3" not in op_types(fused_model, training=False)
        y, grads = training_step(fused_model, x)
    assert "FusedBatchNormV3" not in op_types(fused_model, training=True)
    np.testing.assert_allclose(y, expected_y, rtol=1e-4, atol=1e-4)
    assert len(grads) == len(expected_grads) == 4  # conv kernel and bias, gamma, beta
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    for name in ("moving_mean", "moving_variance"):
        got, expected = getattr(fused_model.get_layer("bn"), name), getattr(keras_model.get_layer("bn"), name)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(fused_model.get_layer("bn").moving_variance.numpy(), 1.0)  # they did move


def test_momentum_is_read_at_each_call_and_inference_uses_the_moving_statistics():
    model = batchnorm_model(momentum=0.9)
    rng = np.random.default_rng(1)
    x, other = (rng.normal(5.0, 1.0, (8, 7, 5, 3)).astype(np.float32) for _ in range(2))
    layer = model.get_layer("bn")
    with fused_batchnorm(model):
        layer.momentum = 0.0  # as asl_mlops.training.fit.reestimate_batchnorm sets it: the batch's statistics replace them
        model(x, training=True)
        conv = model.layers[1](x).numpy()
        np.testing.assert_allclose(layer.moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), conv.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
        inference = model(other, training=False).numpy()  # another batch: normalised with x's statistics
    np.testing.assert_allclose(inference, model(other, training=False).numpy(), rtol=1e-5, atol=1e-5)  # as Keras'
    assert not np.allclose(inference, model(other, training=True).numpy(), atol=1e-2)  # not other's own statistics


def classifier() -> keras.Model:
    inputs = keras.Input((7, 5, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    x = keras.layers.Activation("relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))


def fitted_weights(fused: bool) -> list[np.ndarray]:
    """A small classifier's weights and moving statistics after `fit` (a traced training step), three epochs."""
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, (48, 7, 5, 3)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, 48), 3)
    keras.utils.set_random_seed(0)
    model = classifier()
    with fused_batchnorm(model) if fused else contextlib.nullcontext():
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


def test_fit_trains_the_same_weights_and_statistics_fused_as_on_keras_ops():
    fused, plain = fitted_weights(fused=True), fitted_weights(fused=False)
    assert len(fused) == len(plain) == 7  # conv kernel; gamma, beta, moving mean and variance; dense kernel, bias
    for got, expected in zip(fused, plain):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN is switched on x86-64")
def test_fit_trains_the_same_on_tensorflows_eigen_kernels():
    # This process runs oneDNN's kernels (asl_mlops/__init__.py); the fused op has Eigen kernels of its own.
    test = f"{Path(__file__)}::test_fit_trains_the_same_weights_and_statistics_fused_as_on_keras_ops"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed" in done.stdout


def test_the_block_leaves_plain_keras_layers_that_save_as_keras_batchnormalization(tmp_path):
    model = build_cnn(filters=(4, 4, 4))
    with fused_batchnorm(model) as layers:
        assert len(layers) == 3 and all("call" in vars(layer) for layer in layers)
        model.save(tmp_path / "inside.keras")  # even a model saved inside the block
    assert not any("call" in vars(layer) for layer in layers)  # Keras' own method again
    model.save(tmp_path / "after.keras")
    for name in ("inside.keras", "after.keras"):
        with zipfile.ZipFile(tmp_path / name) as archive:
            config = json.loads(archive.read("config.json"))
        classes = {(layer["module"], layer["class_name"]) for layer in config["config"]["layers"]}
        assert ("keras.layers", "BatchNormalization") in classes
        assert not any("asl_mlops" in module for module, _ in classes)


def test_an_ensemble_finds_each_members_layers_once():
    members = [build_cnn(filters=(4, 4, 4)) for _ in range(2)]
    assert len(batchnorm_layers(average_ensemble(members))) == 6
    assert len(batchnorm_layers(average_ensemble([members[0], members[0]]))) == 3  # one network's layers, twice


def test_blocks_nest_and_the_outer_one_restores():
    model = batchnorm_model()
    layer = model.get_layer("bn")
    with fused_batchnorm(model) as outer:
        with fused_batchnorm(model) as inner:
            assert outer == [layer] and inner == []
        assert "call" in vars(layer)
    assert "call" not in vars(layer)


class OwnCallBatchNormalization(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=training, mask=mask) * 2.0


@pytest.mark.parametrize("layer", [keras.layers.BatchNormalization(renorm=True),
                                   keras.layers.BatchNormalization(axis=1),
                                   keras.layers.BatchNormalization(center=False),
                                   keras.layers.BatchNormalization(epsilon=1e-6),
                                   OwnCallBatchNormalization()])
def test_layers_it_cannot_fuse_keep_keras_call(layer):
    inputs = keras.Input((7, 5, 3))
    model = keras.Model(inputs, layer(inputs))
    with fused_batchnorm(model) as layers:
        assert layers == []
