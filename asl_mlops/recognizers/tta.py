"""Test-time augmentation (TTA): average a model's softmax over fixed views of each image.

The views are the image itself, its four 1-pixel shifts, rotations of +-6 degrees and zooms of +-6%
(bilinear, edges repeated): nine in all. Measured on the stand-in test set over five training seeds of
the default cnn (benchmarks/levers.py), they cut errors from 95.6 +- 33.9 (worst 156) to 62.2 +- 22.7
(worst 98) of 5,517, at no training cost and nine forward passes per image.

One implementation serves both places that predict: `predict_probabilities(..., tta=True)` at the end of
training (the run's final validation and test metrics) and the served recognizer
(asl_mlops.recognizers.sign_mnist), so the model that is registered and served is the one measured. The Keras
`model` a run logs stays the plain network.
"""

from __future__ import annotations

import math

import numpy as np

#: (shift down px, shift right px, rotation degrees, zoom factor) of each view; the first is the image itself.
VIEWS: tuple[tuple[float, float, float, float], ...] = (
    (0, 0, 0, 1.0), (1, 0, 0, 1.0), (-1, 0, 0, 1.0), (0, 1, 0, 1.0), (0, -1, 0, 1.0),
    (0, 0, 6, 1.0), (0, 0, -6, 1.0), (0, 0, 0, 1.06), (0, 0, 0, 0.94),
)


def view_transforms(height: int, width: int, views=VIEWS) -> np.ndarray:
    """The views (`VIEWS`, or others in its format) as projective transforms (V, 8) mapping output to input
    pixel coordinates, in the format of `keras.ops.image.affine_transform` (a0, a1, a2, b0, b1, b2, c0, c1)."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    rows = []
    for dy, dx, degrees, zoom in views:
        theta = math.radians(degrees)
        a = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]) / zoom
        tx, ty = np.array([cx, cy]) - a @ np.array([cx, cy]) - np.array([dx, dy])
        rows.append([a[0, 0], a[0, 1], tx, a[1, 0], a[1, 1], ty, 0.0, 0.0])
    return np.asarray(rows, dtype=np.float32)


def views_of(x, views=VIEWS):
    """All views of a batch (N, H, W, C), view-major: (V * N, H, W, C). Works on NumPy arrays and on
    tensors inside a tf.function. `views`: another view set in `VIEWS`' format (benchmarks/tta_views.py)."""
    from keras import ops

    n = ops.shape(x)[0]
    transforms = view_transforms(int(x.shape[1]), int(x.shape[2]), views)
    tiled = ops.tile(x, (len(views), 1, 1, 1))
    per_image = ops.repeat(ops.convert_to_tensor(transforms), n, axis=0)
    return ops.image.affine_transform(tiled, per_image, interpolation="bilinear", fill_mode="nearest")


def mean_over_views(probabilities, n, count: int = len(VIEWS)):
    """(V * N, K) view-major softmax outputs of `count` views -> their mean per image (N, K)."""
    from keras import ops

    return ops.mean(ops.reshape(probabilities, (count, n, -1)), axis=0)
