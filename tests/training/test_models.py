"""Model builders: the original ResNet50 spec, the compact CNN, and the weights options."""

import numpy as np
import pytest

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.training.models import (
    build_cnn,
    build_model,
    build_resnet50,
    count_params,
)


@pytest.fixture(scope="module")
def resnet50():
    return build_resnet50(weights="none", l2=1e-3)


def test_resnet50_has_the_original_trainable_parameter_count(resnet50):
    trainable, total = count_params(resnet50)
    assert trainable == 3_690_008
    assert total > 25_000_000


def test_resnet50_is_frozen_before_conv5_block3_3_conv(resnet50):
    names = [layer.name for layer in resnet50.layers]
    first = names.index("conv5_block3_3_conv")
    assert not any(layer.trainable and layer.weights for layer in resnet50.layers[:first])
    assert all(layer.trainable for layer in resnet50.layers[first:])
    assert resnet50.input_shape == (None, 28, 28, 1)  # raw pixels: the model resizes, makes RGB, subtracts means
    assert resnet50.get_layer("imagenet_mean").output.shape[1:] == (32, 32, 3)
    assert resnet50.output_shape == (None, 24)


def test_resnet50_loads_a_local_weights_file(resnet50, tmp_path):
    from keras.applications import ResNet50

    base = ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "base.weights.h5"
    base.save_weights(path)
    model = build_resnet50(weights=str(path))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0], base.get_layer("conv1_conv").get_weights()[0])


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(InputError, match="no-such.h5"):
        build_resnet50(weights="no-such.h5")


def test_imagenet_offline_says_how_to_pass_a_local_file(monkeypatch):
    import os

    # Where keras.utils.get_file caches downloads, as documented: $KERAS_HOME, else ~/.keras (/tmp/.keras if
    # that is not writable). Cached in any of them: skip rather than guess which one this Keras reads.
    homes = {os.environ.get("KERAS_HOME"), os.path.expanduser(os.path.join("~", ".keras")), "/tmp/.keras"} - {None}
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if any(os.path.exists(os.path.join(home, "models", name)) for home in homes):
        pytest.skip("ImageNet weights are cached locally; the offline path cannot be exercised")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: the download fails at once
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(InputError, match="--weights /path/to"):
        build_resnet50(weights="imagenet")


def test_cnn_is_small_and_outputs_24_probabilities():
    model = build_cnn(l2=1e-4)
    trainable, _ = count_params(model)
    assert trainable < 1_000_000  # a fraction of the ResNet50 head's 3.69M
    probs = model.predict(np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32), verbose=0)
    assert probs.shape == (3, 24)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_build_model_follows_config():
    assert build_model(TrainConfig(architecture="cnn")).input_shape == (None, 28, 28, 1)


def test_cnn_filters_set_the_conv_blocks_widths():
    model = build_model(TrainConfig(cnn_filters="32,64,16"))
    widths = [model.get_layer(f"block{k}_conv").filters for k in (1, 2, 3)]
    assert widths == [32, 64, 16]
    assert model.get_layer("dense_512").kernel.shape[0] == 4 * 4 * 16  # 28 -> 14 -> 7 -> 4 after three pools
