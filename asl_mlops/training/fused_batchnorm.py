"""BatchNormalization on TensorFlow's fused kernel while a model trains.

Keras 3 builds a BatchNormalization layer's training step from about ten separate TensorFlow ops (the batch
moments, then the scale and shift), and its gradient from as many more; tf.keras used TensorFlow's
FusedBatchNormV3, one op with one gradient op. A profile of the default cnn's training step on oneDNN put a
third of its op time in the separate ops; on the fused op the step takes 21% less time (1.27x;
benchmarks/train.py --only batchnorm).

`fused_batchnorm(model)` routes the model's BatchNormalization layers through the fused op within a `with`
block, by giving each layer a `call` of its own that the block removes again. The layers, their class, their
weights and their config stay Keras' own, so a saved model names nothing of ours. A training step traced
before the block (a model's cached `train_function`) keeps the ops it was traced with, and one traced inside
keeps the fused op: compile the model inside the block, as `asl_mlops.training.fit.fit` does (it compiles again after).

The fused call computes what Keras' does, to float rounding: the output normalised with the batch's (biased)
variance, and the moving statistics moved by `momentum` towards the batch mean and biased variance, with the
layer's `momentum` read at each call as Keras reads it. Inference, masks and layers it cannot fuse (not 4-D
channels-last float32, renorm, synchronized, without centre or scale, epsilon below 1.001e-5, a subclass with a
`call` of its own) keep Keras' own call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import keras

#: cuDNN, which runs the fused op on a GPU, takes no epsilon below 1e-5 (CUDNN_BN_MIN_EPSILON): such a layer
#: is left to Keras.
MIN_EPSILON = 1.001e-5


def fusable(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a BatchNormalization that TensorFlow's fused op computes, to float rounding."""
    if (not isinstance(layer, keras.layers.BatchNormalization) or not layer.built
            or type(layer).call is not keras.layers.BatchNormalization.call):  # a subclass's own call is kept
        return False
    ndim = layer.input_spec.ndim if layer.input_spec is not None else None  # set when the layer is built
    return (keras.backend.backend() == "tensorflow" and ndim == 4 and layer.axis in (3, -1)
            and layer.center and layer.scale and not layer.renorm and not layer.synchronized
            and layer.compute_dtype == "float32" and layer.epsilon >= MIN_EPSILON)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """`model`'s fusable BatchNormalization layers, nested models' included, each once."""
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        for inner in batchnorm_layers(layer) if isinstance(layer, keras.Model) else [layer]:
            if fusable(inner) and not any(inner is seen for seen in found):
                found.append(inner)
    return found


def fused_call(layer: keras.layers.BatchNormalization, inputs, training=None, mask=None):
    """`layer`'s call, on tf.nn.fused_batch_norm when training (see the module docstring)."""
    if not (training and layer.trainable) or mask is not None:
        return keras.layers.BatchNormalization.call(layer, inputs, training=training, mask=mask)
    import tensorflow as tf

    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, layer.gamma, layer.beta, epsilon=layer.epsilon, data_format="NHWC", is_training=True)
    # The op returns the unbiased variance (n / (n - 1) times the one it normalised with); Keras keeps the biased one.
    shape = tf.shape(inputs)
    n = tf.cast(shape[0] * shape[1] * shape[2], variance.dtype)
    variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
    momentum = layer.momentum
    layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1.0 - momentum))
    layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1.0 - momentum))
    return outputs


@contextmanager
def fused_batchnorm(model: keras.Model) -> Iterator[list[keras.layers.BatchNormalization]]:
    """Within the block, `model`'s fusable BatchNormalization layers train on the fused op; yields them."""
    # Layers an enclosing block already routes stay as they are (and that block restores them).
    layers = [layer for layer in batchnorm_layers(model) if "call" not in vars(layer)]
    try:
        for layer in layers:
            # An instance attribute: Layer.__call__ calls self.call, and deleting it brings back Keras' method.
            layer.call = functools.partial(fused_call, layer)
        yield layers
    finally:
        for layer in layers:
            vars(layer).pop("call", None)
