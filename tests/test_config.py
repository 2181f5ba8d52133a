"""TrainConfig: validated settings, logged under their own names."""

import pytest

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError


@pytest.mark.parametrize("field,value", [
    ("architecture", "vgg"), ("learning_rate", 0.0), ("decay_rate", -1.0), ("l2", -0.1), ("epochs", 0),
    ("batch_size", 0), ("val_fraction", 1.0), ("brightness", 1.5), ("rotation", 400.0),
    ("label_smoothing", 1.0), ("label_smoothing", -0.1), ("ema_momentum", 1.0), ("ema_momentum", 0.0),
])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(InputError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("filters", ["75,50", "75,50,25,10", "75,x,25", "0,50,25", "75,50,513", "-1,50,25", "7²,50,25", ""])
def test_bad_cnn_filters_are_refused_with_an_example(filters):
    with pytest.raises(InputError, match=r"cnn_filters must be three whole numbers .* \(e\.g\. 32,64,32\)"):
        TrainConfig(cnn_filters=filters)


def test_cnn_filters_parse_to_three_counts():
    assert TrainConfig().filter_counts == (32, 64, 32)
    assert TrainConfig(cnn_filters=" 32, 64,32").filter_counts == (32, 64, 32)
    assert TrainConfig(cnn_filters="32,64,32").to_params()["cnn_filters"] == "32,64,32"


def test_weights_auto_resolves_per_architecture():
    assert TrainConfig(architecture="resnet50").resolved_weights == "imagenet"
    assert TrainConfig(architecture="cnn").resolved_weights == "none"
    assert TrainConfig(architecture="resnet50", weights="w.h5").to_params()["resolved_weights"] == "w.h5"


def test_params_use_field_names():
    params = TrainConfig().to_params()
    assert params["learning_rate"] == TrainConfig().learning_rate
    assert "batch_size" in params and "l2" in params
