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


def test_ensemble_auto_is_two_cnns_and_one_resnet50():
    assert TrainConfig().ensemble == "auto" and TrainConfig().ensemble_members == 2
    assert TrainConfig(architecture="resnet50").ensemble_members == 1
    params = TrainConfig().to_params()
    assert params["ensemble"] == "auto" and params["ensemble_members"] == 2


@pytest.mark.parametrize("given, spelled, members", [(1, "1", 1), ("3", "3", 3), ("2.0", "2", 2), (" AUTO ", "auto", 2)])
def test_ensemble_has_one_spelling_whatever_it_came_from(given, spelled, members):
    config = TrainConfig(ensemble=given)  # Python (1), the CLI ('3'), `mlflow run` ('2.0')
    assert (config.ensemble, config.ensemble_members) == (spelled, members)


@pytest.mark.parametrize("value", ["0", "9", "2.5", "two", ""])
def test_bad_ensemble_is_named(value):
    with pytest.raises(InputError, match="ensemble must be 'auto' or a whole number from 1 to 8"):
        TrainConfig(ensemble=value)


def test_resnet50_ensembles_are_refused():
    with pytest.raises(InputError, match="ensemble > 1 is for architecture cnn only"):
        TrainConfig(architecture="resnet50", ensemble="2")


def test_params_use_field_names():
    params = TrainConfig().to_params()
    assert params["learning_rate"] == TrainConfig().learning_rate
    assert "batch_size" in params and "l2" in params


def test_architecture_auto_is_keypoints_for_a_photo_folder_and_cnn_for_a_csv(tmp_path):
    (tmp_path / "photos" / "A").mkdir(parents=True)
    assert TrainConfig(train_data=str(tmp_path / "photos")).resolved_architecture == "keypoints"
    assert TrainConfig(train_data=str(tmp_path / "train.csv")).resolved_architecture == "cnn"
    assert TrainConfig(train_data=str(tmp_path / "photos")).ensemble_members == 1
    assert TrainConfig(architecture="resnet50", train_data=str(tmp_path / "photos")).resolved_architecture == "resnet50"
    params = TrainConfig(train_data=str(tmp_path / "photos")).to_params()  # as asked, and as trained
    assert params["architecture"] == "auto" and params["resolved_architecture"] == "keypoints"
