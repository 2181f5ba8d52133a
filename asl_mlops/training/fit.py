"""Fitting one network: compile with Adam and the learning-rate schedule, fit with per-epoch logging, keep the
weight average.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import mlflow
import numpy as np

from asl_mlops.config import TrainConfig
from asl_mlops.tracking import MlflowEpochLogger
from asl_mlops.training.augment import build_augmentation, make_dataset
from asl_mlops.training.fused_batchnorm import fused_batchnorm
from asl_mlops.training.inputs import PreparedData
from asl_mlops.training.models import KEYPOINT_STANDARDIZATION
from asl_mlops.training.trunk import (
    ViewBatches,
    split_at_trainable,
    trunk_cache_dir,
    trunk_features,
    uses_trunk_cache,
)

#: How every network is compiled (for training, and in the saved .keras file).
LOSS_AND_METRICS: dict[str, Any] = {"loss": "categorical_crossentropy", "metrics": ["accuracy"]}


def loss_and_metrics(config: TrainConfig) -> dict[str, Any]:
    """`compile` arguments: cross-entropy (with `config.label_smoothing`) and accuracy."""
    if not config.label_smoothing:
        return LOSS_AND_METRICS
    return {**LOSS_AND_METRICS,
            "loss": keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)}


def learning_rate_schedule(config: TrainConfig) -> Callable[[int], float]:
    """Inverse-time decay per epoch, as in the original: lr = lr0 / (1 + decay_rate * epoch)."""
    return lambda epoch, lr=None: config.learning_rate / (1.0 + config.decay_rate * epoch)


#: The weight average spans about the last 1/EMA_HORIZON of the run's steps.
EMA_HORIZON = 10.0


def ema_momentum(config: TrainConfig, steps: int) -> float:
    """Momentum of the weight average for a run of `steps` optimizer steps: 1 - 10 / steps, at most
    `config.ema_momentum`. A fixed momentum from the first step would leave much of the initial weights in the
    average of a short run (0.999 over 1,668 steps: 19%); 1 - 10 / steps leaves e^-10, about 5e-5."""
    return min(config.ema_momentum, max(0.0, 1.0 - EMA_HORIZON / max(steps, 1)))


def training_optimizer(config: TrainConfig, steps: int) -> keras.optimizers.Adam:
    """The optimizer `fit` trains with for `steps` optimizer steps: Keras' Adam, with its weight average
    (`use_ema`) when `config.ema` (docs/decisions.md)."""
    return keras.optimizers.Adam(config.learning_rate, use_ema=config.ema, ema_momentum=ema_momentum(config, steps))


def fit(model: keras.Model, data: PreparedData, config: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback] = (), metric_prefix: str = "") -> keras.callbacks.History:
    """Compile with Adam and fit on the training split, validating each epoch.

    With `uses_trunk_cache(config)` (resnet50) only the trainable tail is fitted, on cached trunk features
    (asl_mlops.training.trunk); it shares its layers with `model`, so `model` ends trained all the same.
    With `config.ema` the model ends with the averaged weights; with `config.recompute_batchnorm` too, a cnn's
    BatchNorm statistics are then recomputed for them (`reestimate_batchnorm`; per-epoch validation used the
    training statistics). It is returned compiled with a plain `keras.optimizers.Adam` (holding the trained
    state), so the saved model loads without asl_mlops.
    Per-epoch metrics go to the active MLflow run, their keys prefixed with `metric_prefix`.
    """
    if uses_trunk_cache(config):
        split = split_at_trainable(model)
        features = trunk_features(split, data.x_train, data.x_val, config, trunk_cache_dir(config))
        if mlflow.active_run():
            mlflow.set_tags({"trunk_cache": "hit" if features.misses == 0 else "miss",
                             "trunk_boundary": ",".join(split.boundary)})
            mlflow.log_metrics({"trunk_cache_hits": features.hits, "trunk_cache_misses": features.misses,
                                "trunk_features_seconds": features.seconds})
        target = split.tail
        train_input: Any = ViewBatches(features.views, data.y_train, config.batch_size, config.seed)
        val_input: Any = (tuple(features.val), data.y_val)
    else:
        target = model
        # Keypoint features were augmented as keypoints (asl_mlops.training.photo_inputs); image layers don't apply
        # to them.
        augmentation = build_augmentation(config) if config.resolved_architecture != "keypoints" else None
        train_input = make_dataset(data.x_train, data.y_train, config.batch_size, seed=config.seed,
                                   augmentation=augmentation, shuffle=True, weights=data.w_train)
        if config.resolved_architecture == "keypoints":  # standardises its features with training statistics
            # Only the keypoint network's own layer: resnet50's input Normalization holds ImageNet's fixed means.
            model.get_layer(KEYPOINT_STANDARDIZATION).adapt(data.x_train)
        val_input = make_dataset(data.x_val, data.y_val, config.batch_size, seed=config.seed)
    steps = config.epochs * math.ceil(len(data.x_train) / config.batch_size)
    target.compile(optimizer=training_optimizer(config, steps), **loss_and_metrics(config))
    # The scheduler must run before the loggers so `learning_rate` is in each epoch's logs.
    all_callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.LearningRateScheduler(learning_rate_schedule(config)), keras.callbacks.TerminateOnNaN()]
    if config.ema:  # validate each epoch with the averaged weights, the ones that will be kept
        all_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if config.early_stopping:
        all_callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=1))
    all_callbacks += [MlflowEpochLogger(metric_prefix), *callbacks]
    # A live progress bar on a terminal; one line per epoch in logs (mlflow run, CI).
    verbose = 1 if sys.stdout.isatty() else 2
    # BatchNormalization trains on TensorFlow's fused op: a cnn step takes 21% less time (asl_mlops.training.fused_batchnorm).
    # `target` was compiled above, so its training step is traced inside the block.
    with fused_batchnorm(model):
        # shuffle=False: the training input shuffles itself (seeded); Keras would only warn that it ignores the flag.
        history = target.fit(train_input, validation_data=val_input, epochs=config.epochs, callbacks=all_callbacks,
                             verbose=verbose, shuffle=False)
        if any(not np.isfinite(v) for v in history.history.get("loss", [])):
            raise FloatingPointError("training diverged: the loss became NaN/inf (try a lower learning_rate)")
        if config.ema and config.recompute_batchnorm and config.resolved_architecture == "cnn":
            # The averaged weights (in the model since fit ended) get BatchNorm statistics of their own.
            start = time.perf_counter()
            reestimate_batchnorm(model, data.x_train, data.y_train, config)
            if mlflow.active_run():
                mlflow.log_metric(f"{metric_prefix}batchnorm_seconds", time.perf_counter() - start)
    if target is not model:  # the full network is what is saved: compiled with the tail's trained optimizer
        model.compile(optimizer=target.optimizer, **loss_and_metrics(config))  # (its variables are the tail's)
    return history


def reestimate_batchnorm(model: keras.Model, x: np.ndarray, y: np.ndarray, config: TrainConfig) -> None:
    """Recompute `model`'s BatchNorm moving statistics for its current weights: the mean of the batch
    statistics over one pass of (x, y) with the training augmentation, forward only, no weight update (as
    PyTorch's `swa_utils.update_bn` does for averaged weights).

    Training leaves the statistics of the raw weights of its last steps, while the weight average that
    `config.ema` keeps spans more steps than that (--ema-momentum), so the two would not match.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    import tensorflow as tf

    momentum = [layer.momentum for layer in layers]
    batches = make_dataset(x, y, config.batch_size, seed=config.seed, augmentation=build_augmentation(config),
                           shuffle=True)
    # Momentum 0: each traced call leaves one batch's statistics in the moving ones, which are averaged here,
    # each batch weighted by its size (a short last batch counts for its rows). Traced once: a graph, not one
    # eager call per batch (each network's pass: batchnorm_seconds).
    forward = tf.function(lambda xb: model(xb, training=True), reduce_retracing=True)
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
    seen = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for xb, _ in batches:
            forward(xb)  # updates the moving statistics only; no optimizer step
            n = int(xb.shape[0])
            for layer, (mean, variance) in zip(layers, sums):
                mean += n * layer.moving_mean.numpy()
                variance += n * layer.moving_variance.numpy()
            seen += n
        for layer, (mean, variance) in zip(layers, sums):
            layer.moving_mean.assign(mean / seen)
            layer.moving_variance.assign(variance / seen)
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
