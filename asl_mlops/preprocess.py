"""Turn 28x28 uint8 images into model inputs, and cache the result on disk.

`to_model_input` is THE preprocessing path: training, evaluation, the served pyfunc model and the
predict CLI all call it, so the model never sees inputs prepared another way in production.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asl_mlops.data import atomic_write
from asl_mlops.errors import InputError

logger = logging.getLogger(__name__)

#: Bumped whenever `to_model_input` changes its output, so old cache entries miss.
PREPROCESS_VERSION = 1
#: Input side length each architecture expects (ResNet50's minimum is 32).
INPUT_SIZE = {"cnn": 28, "resnet50": 32}
#: Per-channel means subtracted by ResNet50's `preprocess_input` ('caffe' mode, BGR order).
_RESNET50_MEANS_BGR = (103.939, 116.779, 123.68)


def input_shape(architecture: str) -> tuple[int, int, int]:
    """Shape of one preprocessed image for an architecture."""
    size = INPUT_SIZE[architecture]
    return (size, size, 3 if architecture == "resnet50" else 1)


def architecture_of(model) -> str:
    """Which preprocessing a Keras model expects, read from its input shape."""
    shape = tuple(model.input_shape[1:])
    for architecture in INPUT_SIZE:
        if shape == input_shape(architecture):
            return architecture
    raise ValueError(f"model input shape {shape} matches no known architecture")


def value_range(architecture: str) -> tuple[float, float]:
    """Range of preprocessed pixel values, which brightness augmentation must stay within."""
    if architecture == "resnet50":
        # preprocess_input subtracts per-channel means from 0-255 values.
        return (-max(_RESNET50_MEANS_BGR), 255.0 - min(_RESNET50_MEANS_BGR))
    return (0.0, 1.0)


def to_model_input(images: np.ndarray, architecture: str) -> np.ndarray:
    """Preprocess uint8 images (N, 28, 28) for `architecture`; returns float32 (N, H, W, C).

    - cnn: scale to [0, 1], add a channel axis.
    - resnet50: resize 28 -> 32 px (bilinear), gray -> RGB, `keras.applications.resnet50.preprocess_input`.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"expected images of shape (N, 28, 28), got {images.shape}")
    if architecture == "cnn":
        return (images.astype(np.float32) / 255.0)[..., np.newaxis]
    if architecture == "resnet50":
        import tensorflow as tf
        from keras.applications.resnet50 import preprocess_input

        size = INPUT_SIZE["resnet50"]
        resized = tf.image.resize(images[..., np.newaxis].astype(np.float32), (size, size), method="bilinear")
        rgb = tf.image.grayscale_to_rgb(resized).numpy()
        return preprocess_input(rgb).astype(np.float32)
    raise ValueError(f"unknown architecture {architecture!r}")


def cache_key(images: np.ndarray, architecture: str) -> str:
    """Hash of the input pixels and every setting that changes the preprocessed output."""
    settings = {"architecture": architecture, "size": INPUT_SIZE[architecture], "version": PREPROCESS_VERSION}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CachedArray:
    """A preprocessed array and where it came from."""

    array: np.ndarray
    path: Path
    hit: bool


def save_npy_atomic(array: np.ndarray, path: Path) -> None:
    """Write `array` to `path` via a temp file + rename, so a crash never leaves a half file there."""
    with atomic_write(path) as f:
        np.save(f, array)


def cached_model_input(images: np.ndarray, architecture: str, cache_dir: str | Path) -> CachedArray:
    """`to_model_input` with an on-disk cache under `cache_dir`, keyed by `cache_key`."""
    path = Path(cache_dir) / f"{architecture}-{cache_key(images, architecture)}.npy"
    if path.exists():
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:  # unreadable entry: recompute, never trust it
            logger.warning("preprocess cache: %s unreadable (%s); recomputing", path, err)
        else:
            if array.shape == (len(images), *input_shape(architecture)):
                logger.info("preprocess cache hit: %s", path)
                return CachedArray(array, path, hit=True)
            logger.warning("preprocess cache: %s has shape %s; recomputing", path, array.shape)
    logger.info("preprocess cache miss: writing %s", path)
    array = to_model_input(images, architecture)
    try:
        save_npy_atomic(array, path)
    except OSError as err:
        raise InputError(f"cache_dir {cache_dir}: cannot write the preprocessing cache there ({err.strerror or err}); "
                         "pass a writable --cache-dir (MLproject: -P cache_dir=...)") from None
    return CachedArray(array, path, hit=False)
