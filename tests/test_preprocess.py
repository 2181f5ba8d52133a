"""Preprocessing: exact ResNet50 inputs, and a cache that misses on change and survives crashes."""

import numpy as np
import pytest
from keras.applications.resnet50 import preprocess_input

from asl_mlops import preprocess
from asl_mlops.preprocess import cached_model_input, to_model_input


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


def test_cnn_input_is_scaled_gray(images):
    x = to_model_input(images, "cnn")
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0] * 255.0, images, atol=1e-4)


def test_resnet50_input_equals_preprocess_input_of_resized_rgb(images):
    import keras

    resized = keras.layers.Resizing(32, 32, interpolation="bilinear")(images[..., None].astype("float32"))
    rgb = np.repeat(np.asarray(resized), 3, axis=-1)
    expected = preprocess_input(rgb.copy())
    x = to_model_input(images, "resnet50")
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected, atol=1e-4)
    # caffe mode: BGR channels, ImageNet means subtracted, no scaling
    np.testing.assert_allclose(x[..., 0], rgb[..., 0] - 103.939, atol=1e-3)


def test_rejects_wrong_image_shape():
    with pytest.raises(ValueError, match="28, 28"):
        to_model_input(np.zeros((2, 32, 32), np.uint8), "cnn")


def test_cache_misses_then_hits(images, tmp_path):
    first = cached_model_input(images, "cnn", tmp_path)
    second = cached_model_input(images, "cnn", tmp_path)
    assert (first.hit, second.hit) == (False, True)
    assert first.path == second.path
    np.testing.assert_array_equal(first.array, second.array)


def test_cache_misses_when_data_or_setting_changes(images, tmp_path, monkeypatch):
    base = cached_model_input(images, "cnn", tmp_path)
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    assert not cached_model_input(changed, "cnn", tmp_path).hit
    assert not cached_model_input(images, "resnet50", tmp_path).hit
    monkeypatch.setattr(preprocess, "PREPROCESS_VERSION", preprocess.PREPROCESS_VERSION + 1)
    bumped = cached_model_input(images, "cnn", tmp_path)
    assert not bumped.hit and bumped.path != base.path


def test_crash_mid_write_leaves_no_file_and_next_run_recomputes(images, tmp_path, monkeypatch):
    real_save = np.save

    def crash_after_half(f, array, **kwargs):
        f.write(b"\x93NUMPY" + b"\0" * 100)  # a partial file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", crash_after_half)
    with pytest.raises(KeyboardInterrupt):
        cached_model_input(images, "cnn", tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the entry nor a temp file is left behind
    monkeypatch.setattr(np, "save", real_save)
    again = cached_model_input(images, "cnn", tmp_path)
    assert not again.hit
    np.testing.assert_array_equal(again.array, to_model_input(images, "cnn"))


def test_corrupt_entry_is_recomputed_not_trusted(images, tmp_path):
    entry = cached_model_input(images, "cnn", tmp_path).path
    entry.write_bytes(entry.read_bytes()[:200])  # e.g. written by a tool that does not rename atomically
    again = cached_model_input(images, "cnn", tmp_path)
    assert not again.hit
    np.testing.assert_array_equal(again.array, to_model_input(images, "cnn"))
    assert cached_model_input(images, "cnn", tmp_path).hit
