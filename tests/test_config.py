"""TrainConfig: validated settings, logged under their own names."""

import pytest

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError


@pytest.mark.parametrize("field,value", [
    ("architecture", "vgg"), ("learning_rate", 0.0), ("decay_rate", -1.0), ("l2", -0.1), ("epochs", 0),
    ("batch_size", 0), ("val_fraction", 1.0), ("brightness", 1.5), ("rotation", 400.0),
])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(InputError, match=field):
        TrainConfig(**{field: value})


def test_weights_auto_resolves_per_architecture():
    assert TrainConfig(architecture="resnet50").resolved_weights == "imagenet"
    assert TrainConfig(architecture="cnn").resolved_weights == "none"
    assert TrainConfig(architecture="resnet50", weights="w.h5").to_params()["resolved_weights"] == "w.h5"


def test_params_use_field_names():
    params = TrainConfig().to_params()
    assert params["learning_rate"] == TrainConfig().learning_rate
    assert "batch_size" in params and "l2" in params
