"""Sign MNIST images -> the raw-pixel tensor every model takes.

Preprocessing lives inside the Keras model (`asl_mlops.training.models.preprocessing_layers`): rescaling for the
cnn; resize, gray -> RGB and the ImageNet mean subtraction for resnet50. So all that is left outside it
is shape and dtype, and `to_model_input` is the one place that does them: training, augmentation,
evaluation, the trunk cache and the served recognizer all call it.

There is no cache of preprocessed arrays any more: converting the whole training CSV takes 0.01 s, less
than reading the result back from a .npy file (`python benchmarks/train.py --only input` measures both).
"""

from __future__ import annotations

import numpy as np

from asl_mlops.data.sign_mnist import IMAGE_SIZE

#: What every model takes: one 28x28 gray channel, float32 pixel values 0-255.
RAW_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (or integer-valued) images (N, 28, 28) -> float32 (N, 28, 28, 1), values unchanged (0-255)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}")
    return images.astype(np.float32)[..., np.newaxis]
