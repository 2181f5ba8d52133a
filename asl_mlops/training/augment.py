"""Training-time augmentation: Keras preprocessing layers mapped over tf.data batches.

Augmentation runs on raw pixel batches (0-255, the models' input; asl_mlops.training.models) inside the input
pipeline, never in the saved model, so the served model is exactly the trained network and
validation/test data are never touched.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from asl_mlops.config import TrainConfig

#: Values of the raw pixels augmentation works on, which brightness and contrast changes stay within.
PIXEL_RANGE = (0.0, 255.0)


def build_augmentation(config: TrainConfig) -> keras.Sequential | None:
    """The augmentation layers switched on in `config`, or None when there are none."""
    if not config.augment:
        return None
    seed = config.seed
    low, high = PIXEL_RANGE
    layers: list[keras.layers.Layer] = []
    flip_mode = {(True, True): "horizontal_and_vertical", (True, False): "horizontal",
                 (False, True): "vertical"}.get((config.flip_horizontal, config.flip_vertical))
    if flip_mode:
        layers.append(keras.layers.RandomFlip(flip_mode, seed=seed))
    if config.rotation:
        # RandomRotation takes a fraction of a full turn.
        layers.append(keras.layers.RandomRotation(config.rotation / 360.0, fill_mode="nearest", seed=seed + 1))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="nearest", seed=seed + 2))
    if config.translation:
        layers.append(keras.layers.RandomTranslation(config.translation, config.translation,
                                                     fill_mode="nearest", seed=seed + 3))
    if config.brightness:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(low, high), seed=seed + 4))
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(low, high), seed=seed + 5))
    return keras.Sequential(layers, name="augmentation") if layers else None


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int,
                 augmentation: keras.Sequential | None = None, shuffle: bool = False,
                 weights: np.ndarray | None = None) -> tf.data.Dataset:
    """A batched tf.data pipeline over (x, y), or (x, y, sample weight) with `weights`; shuffled and augmented
    only when asked (training)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y) if weights is None else (x, y, weights.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmentation is not None:
        ds = ds.map(lambda xb, *rest: (augmentation(xb, training=True), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
