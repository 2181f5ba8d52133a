"""Trunk-feature training of the ResNet50 design: the split, the cache, and that the exported network is
the one trained. ResNet50 with weights=none, synthetic data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from asl_mlops.config import TrainConfig
from asl_mlops.data.synth import make_synthetic
from asl_mlops.errors import InputError
from asl_mlops.training.models import build_resnet50
from asl_mlops.recognizers.preprocess import to_model_input
from asl_mlops.training.trunk import (
    ViewBatches,
    entry_key,
    split_at_trainable,
    trunk_features,
    uses_trunk_cache,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    return build_resnet50("none")


def random_inputs(n: int = 6, seed: int = 0) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return to_model_input(images)  # raw pixels: the trunk starts with the model's preprocessing layers


def test_split_is_found_from_the_graph_at_the_first_trainable_layer(resnet):
    split = split_at_trainable(resnet)
    assert split.boundary == ("conv5_block3_2_relu", "conv5_block2_out")
    assert [tuple(t.shape[1:]) for t in split.trunk.outputs] == [(1, 1, 512), (1, 1, 2048)]
    assert not split.trunk.trainable_weights
    assert {w.path for w in split.tail.trainable_weights} == {w.path for w in resnet.trainable_weights}
    assert all(split.tail.get_layer(name) is resnet.get_layer(name)  # the same layers: training one trains both
               for name in ("conv5_block3_3_conv", "conv5_block3_add", "letter"))
    assert sum(int(np.prod(w.shape)) for w in split.tail.trainable_weights) == 3_690_008
    x = random_inputs()
    full = resnet.predict(x, verbose=0)
    assert np.abs(split.tail.predict(split.trunk.predict(x, verbose=0), verbose=0) - full).max() < 1e-5


def test_split_moves_with_the_first_trainable_layer():
    keras.utils.set_random_seed(1)
    model = build_resnet50("none")
    model.get_layer("conv5_block3_2_conv").trainable = True  # fine-tune one more conv: the boundary moves up
    split = split_at_trainable(model)
    assert split.boundary == ("conv5_block3_1_relu", "conv5_block2_out")
    x = random_inputs(seed=1)
    assert np.abs(split.tail.predict(split.trunk.predict(x, verbose=0), verbose=0)
                  - model.predict(x, verbose=0)).max() < 1e-5


def small_branching_model() -> keras.Model:
    """input -> frozen a -> frozen b -> trainable c; output = a + c (a residual the tail takes from the trunk)."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,), name="x")
    a = keras.layers.Dense(3, name="a", trainable=False)(inputs)
    b = keras.layers.Dense(5, name="b", trainable=False)(a)
    c = keras.layers.Dense(3, name="c")(b)
    return keras.Model(inputs, keras.layers.Add(name="add")([a, c]), name="small")


def test_the_tail_shares_its_layers_so_training_it_trains_the_model():
    model = small_branching_model()
    split = split_at_trainable(model)
    assert split.boundary == ("b", "a")  # in the order the tail takes them: c takes b, add takes a
    assert split.tail.get_layer("c") is model.get_layer("c") and split.tail.get_layer("add") is model.get_layer("add")
    assert {layer.name for layer in split.trunk.layers} == {"x", "a", "b"} and not split.trunk.trainable_weights
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    np.testing.assert_allclose(split.tail.predict(split.trunk.predict(x, verbose=0), verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)
    before = [w.copy() for w in model.get_layer("c").get_weights()]
    frozen = [w.copy() for w in model.get_layer("a").get_weights()]
    split.tail.compile(optimizer="sgd", loss="mse")
    split.tail.fit(split.trunk.predict(x, verbose=0), np.ones((8, 3), np.float32), epochs=1, verbose=0)
    assert not np.allclose(model.get_layer("c").get_weights()[0], before[0])  # the model's own layer moved
    assert all(np.array_equal(w, f) for w, f in zip(model.get_layer("a").get_weights(), frozen))


def test_a_model_without_a_trainable_layer_cannot_be_split():
    model = small_branching_model()
    model.get_layer("c").trainable = False
    with pytest.raises(ValueError, match="model small has no trainable layer to split at"):
        split_at_trainable(model)


def test_a_layer_called_outside_the_model_first_is_an_error():
    shared = keras.layers.Dense(3, name="shared")
    shared(keras.Input((4,)))  # its first call, in another graph
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(shared(inputs)))
    with pytest.raises(ValueError, match="layer shared takes a tensor that no earlier layer of the model outputs"):
        split_at_trainable(model)


def config_for(tmp_path: Path, **changes) -> TrainConfig:
    return TrainConfig(architecture="resnet50", weights="none", cache_dir=str(tmp_path / "cache"), seed=3,
                       trunk_views=2, **changes)


def test_cache_key_changes_with_everything_that_changes_the_features(tmp_path: Path):
    x = random_inputs(4)
    base = config_for(tmp_path)
    boundary = ("conv5_block3_2_relu", "conv5_block2_out")
    key = entry_key(x, base, boundary, 0)
    assert key == entry_key(x.copy(), base, boundary, 0)
    others = [entry_key(x, base, boundary, 1), entry_key(x + 1, base, boundary, 0),
              entry_key(x, base.replace(seed=4), boundary, 0), entry_key(x, base.replace(brightness=0.2), boundary, 0),
              entry_key(x, base.replace(flip_vertical=True), boundary, 0),
              entry_key(x, base.replace(weights="imagenet"), boundary, 0),
              entry_key(x, base, ("conv5_block3_1_relu", "conv5_block2_out"), 0), entry_key(x, base, boundary, None)]
    assert len({key, *others}) == len(others) + 1
    # the plain (validation) features do not depend on augmentation settings
    assert entry_key(x, base, boundary, None) == entry_key(x, base.replace(brightness=0.3), boundary, None)
    assert uses_trunk_cache(base) and not uses_trunk_cache(base.replace(architecture="cnn"))
    assert not uses_trunk_cache(base.replace(trunk_cache=False))


def test_features_are_cached_reused_and_never_trusted_half_written(resnet, tmp_path: Path):
    split = split_at_trainable(resnet)
    x_train, x_val = random_inputs(10, seed=2), random_inputs(4, seed=3)
    config = config_for(tmp_path, augment=True, flip_horizontal=True, rotation=0.0, zoom=0.0, translation=0.0)
    cache = tmp_path / "trunk"
    old_umask = os.umask(0o022)
    try:
        first = trunk_features(split, x_train, x_val, config, cache)
    finally:
        os.umask(old_umask)
    assert (first.hits, first.misses) == (0, 3) and len(first.views) == 2
    assert {f.stat().st_mode & 0o777 for f in cache.iterdir()} == {0o644}  # a shared cache stays readable
    assert not np.allclose(first.views[0][1], first.views[1][1])  # two different augmented views
    val_expected = split.trunk.predict(x_val, verbose=0)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(first.val, val_expected))
    again = trunk_features(split, x_train, x_val, config, cache)
    assert (again.hits, again.misses) == (3, 0)
    assert all(np.array_equal(a, b) for a, b in zip(again.views[1], first.views[1]))
    assert not list(cache.glob("*.tmp"))

    # a crash after the arrays but before the manifest: the entry is extracted again, not trusted
    manifests = sorted(cache.glob("trunk-*.json"))
    manifests[0].unlink()
    (cache / json.loads(manifests[1].read_text())["files"][0]).write_bytes(b"garbage")
    redo = trunk_features(split, x_train, x_val, config, cache)
    assert (redo.hits, redo.misses) == (1, 2)
    assert all(np.array_equal(a, b) for a, b in zip(redo.views[1], first.views[1]))

    # without augmentation: one view, the plain images, exactly the trunk's outputs
    plain = trunk_features(split, x_train, x_val, config.replace(augment=False), cache)
    assert len(plain.views) == 1
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(plain.views[0], split.trunk.predict(x_train, verbose=0)))


def test_unwritable_cache_dir_is_a_clear_error(resnet, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match=r"cache_dir .*a-file/trunk: cannot write the trunk-feature cache"):
        trunk_features(split_at_trainable(resnet), random_inputs(2), random_inputs(2, seed=1),
                       config_for(tmp_path, augment=False), blocker / "trunk")


def test_view_batches_use_one_view_per_image_each_epoch():
    views = [[np.full((10, 1), k, np.float32), np.full((10, 2), k, np.float32)] for k in range(3)]
    y = np.arange(10)
    batches = ViewBatches(views, y, batch_size=4, seed=0)
    assert len(batches) == 3
    seen, picked = [], []
    for i in range(len(batches)):
        (a, b), labels = batches[i]
        assert a.shape[1:] == (1,) and b.shape[1:] == (2,) and np.array_equal(a[:, 0], b[:, 0])
        seen += list(labels)
        picked += list(a[:, 0])
    assert sorted(seen) == list(range(10))  # every image once per epoch
    assert len(set(picked)) > 1  # views are mixed


def test_cached_training_trains_and_exports_the_full_network(mlflow_store, tmp_path: Path):
    from asl_mlops.data.sign_mnist import write_csv
    from asl_mlops.train import train_and_evaluate

    write_csv(make_synthetic(480, seed=0), tmp_path / "train.csv")
    write_csv(make_synthetic(96, seed=1), tmp_path / "test.csv")
    config = config_for(tmp_path, train_data=str(tmp_path / "train.csv"), test_data=str(tmp_path / "test.csv"),
                        val_split="random", epochs=8, learning_rate=1e-3, batch_size=32, rotation=0.0, zoom=0.0,
                        translation=0.0, flip_horizontal=True)
    result = train_and_evaluate(config)
    run = mlflow.get_run(result.run_id)
    assert run.data.params["trunk_cache"] == "true" and run.data.params["trunk_views"] == "2"
    assert run.data.tags["trunk_cache"] == "miss" and run.data.metrics["trunk_cache_misses"] == 3
    assert len(MlflowClient().get_metric_history(result.run_id, "epoch_seconds")) == 8
    assert result.trainable_params == 3_690_008
    recognizer = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model()  # the run's one model
    model = recognizer.model  # the full network, raw 28x28x1 pixels in
    assert tuple(model.input_shape[1:]) == (28, 28, 1) and recognizer.architecture == "resnet50"
    split = split_at_trainable(model)
    x = to_model_input(make_synthetic(16, seed=5).images)
    features = split.trunk.predict(x, verbose=0)
    assert np.abs(model.predict(x, verbose=0) - split.tail.predict(features, verbose=0)).max() < 1e-5
    assert result.history["accuracy"][-1] > 0.25  # it learns (chance is 1/24)

    # the run's features are cached: a second run (or sweep trial) with the same settings extracts nothing
    from asl_mlops.training.inputs import prepare_data

    data = prepare_data(config)
    keras.utils.set_random_seed(config.seed)
    again = trunk_features(split_at_trainable(build_resnet50("none")), data.x_train, data.x_val, config,
                           Path(config.cache_dir) / "trunk")
    assert (again.hits, again.misses) == (3, 0)
