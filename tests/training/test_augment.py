"""Augmentation: Keras layers in tf.data, each switchable, only on training batches."""

import numpy as np
import pytest

from asl_mlops.config import TrainConfig
from asl_mlops.training.augment import PIXEL_RANGE, build_augmentation, make_dataset
from asl_mlops.recognizers.preprocess import to_model_input


@pytest.fixture
def batch():
    images = np.random.default_rng(1).integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    return to_model_input(images)


def test_master_switch_and_all_zero_mean_no_augmentation():
    assert build_augmentation(TrainConfig(augment=False)) is None
    assert build_augmentation(TrainConfig(brightness=0, contrast=0, rotation=0, zoom=0, translation=0)) is None


@pytest.mark.parametrize("setting", [dict(flip_horizontal=True), dict(flip_vertical=True), dict(brightness=0.1),
                                     dict(contrast=0.1), dict(rotation=10.0), dict(zoom=0.1), dict(translation=0.1)])
def test_each_switch_alone_changes_images_and_stays_in_range(batch, setting):
    off = dict(brightness=0, contrast=0, rotation=0, zoom=0, translation=0)
    augmentation = build_augmentation(TrainConfig(**{**off, **setting}))
    assert augmentation is not None and len(augmentation.layers) == 1
    out = np.asarray(augmentation(batch, training=True))
    assert out.shape == batch.shape
    assert not np.allclose(out, batch)
    low, high = PIXEL_RANGE  # raw pixels, what every model takes
    assert out.min() >= low - 1e-4 and out.max() <= high + 1e-4


def test_flip_is_exact_mirror(batch):
    augmentation = build_augmentation(TrainConfig(flip_horizontal=True, brightness=0, contrast=0, rotation=0,
                                                  zoom=0, translation=0, seed=3))
    out = np.asarray(augmentation(batch, training=True))
    for original, flipped in zip(batch, out):
        assert np.array_equal(flipped, original) or np.array_equal(flipped, original[:, ::-1])


def test_dataset_augments_training_batches_only(batch):
    y = np.eye(24, dtype=np.float32)[np.arange(16) % 24]
    augmentation = build_augmentation(TrainConfig(rotation=30.0))
    plain = np.concatenate([xb for xb, _ in make_dataset(batch, y, 8, seed=0).as_numpy_iterator()])
    np.testing.assert_array_equal(plain, batch)  # validation/test pipeline: untouched, in order
    augmented = np.concatenate([xb for xb, _ in make_dataset(batch, y, 8, seed=0, augmentation=augmentation)
                                .as_numpy_iterator()])
    assert not np.allclose(augmented, batch)
