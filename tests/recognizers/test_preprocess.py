"""The model owns its input contract: raw pixels in, each architecture's preprocessing as its first layers."""

import keras
import numpy as np
import pytest
from keras.applications.resnet50 import preprocess_input

from asl_mlops.training.models import build_cnn, preprocessing_layers
from asl_mlops.recognizers.preprocess import RAW_SHAPE, to_model_input


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


def preprocessed(architecture: str, x: np.ndarray) -> np.ndarray:
    inputs = keras.Input(RAW_SHAPE)
    return np.asarray(keras.Model(inputs, preprocessing_layers(architecture, inputs))(x))


def test_model_input_is_the_raw_pixels_with_a_channel_axis(images):
    x = to_model_input(images)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], images)


def test_rejects_wrong_image_shape():
    with pytest.raises(ValueError, match="28, 28"):
        to_model_input(np.zeros((2, 32, 32), np.uint8))


def test_cnn_layers_scale_pixels_to_unit_range(images):
    np.testing.assert_allclose(preprocessed("cnn", to_model_input(images))[..., 0], images / 255.0, atol=1e-6)
    model = build_cnn()
    assert model.input_shape == (None, *RAW_SHAPE) and model.layers[1].name == "rescale"


def test_resnet50_layers_equal_the_original_preprocess_input_of_resized_rgb(images):
    resized = keras.layers.Resizing(32, 32, interpolation="bilinear")(images[..., None].astype("float32"))
    rgb = np.repeat(np.asarray(resized), 3, axis=-1)
    expected = preprocess_input(rgb.copy())  # the original design: resize, gray -> RGB, preprocess_input
    x = preprocessed("resnet50", to_model_input(images))
    assert x.shape == (5, 32, 32, 3)
    np.testing.assert_allclose(x, expected, atol=1e-4)
    # caffe mode: BGR channels, ImageNet means subtracted, no scaling
    np.testing.assert_allclose(x[..., 0], rgb[..., 0] - 103.939, atol=1e-3)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        preprocessing_layers("vgg", keras.Input(RAW_SHAPE))
