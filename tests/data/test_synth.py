"""Tests for asl_mlops.data.synth: valid Sign MNIST files, balanced, deterministic, varied and learnable."""

import time
from pathlib import Path

import numpy as np
import pytest

from asl_mlops.data.sign_mnist import load_csv
from asl_mlops.data.synth import make_synthetic, write_synthetic
from asl_mlops.labels import LABELS, labels_to_indices


def test_written_files_pass_validation(synthetic_dir: Path) -> None:
    train = load_csv(synthetic_dir / "sign_mnist_train.csv")
    test = load_csv(synthetic_dir / "sign_mnist_test.csv")
    assert (len(train), len(test)) == (2400, 720)
    assert train.content_hash != test.content_hash


def test_balanced_real_labels_never_9() -> None:
    dataset = make_synthetic(24 * 7 + 5, seed=0)
    counts = {label: int(np.sum(dataset.labels == label)) for label in LABELS}
    assert set(np.unique(dataset.labels)) == set(LABELS)
    assert 9 not in dataset.labels
    assert max(counts.values()) - min(counts.values()) <= 1


def test_deterministic_per_seed(tmp_path: Path) -> None:
    assert make_synthetic(96, seed=5).content_hash == make_synthetic(96, seed=5).content_hash
    assert make_synthetic(96, seed=5).content_hash != make_synthetic(96, seed=6).content_hash
    first = write_synthetic(tmp_path / "a", train_rows=48, test_rows=24, seed=1)
    second = write_synthetic(tmp_path / "b", train_rows=48, test_rows=24, seed=1)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_samples_vary_within_a_class() -> None:
    dataset = make_synthetic(240, seed=0)
    images = dataset.images[dataset.labels == LABELS[0]].astype(np.float32)
    assert len({image.tobytes() for image in dataset.images}) == len(dataset)
    assert images.std(axis=0).mean() > 10  # shifts, rotations, backgrounds and noise, not one picture
    assert dataset.images.min() < 30 and dataset.images.max() > 225


def test_fast() -> None:
    started = time.perf_counter()
    make_synthetic(3000, seed=0)
    assert time.perf_counter() - started < 2


@pytest.mark.slow
def test_learnable_by_a_small_cnn(synthetic_dir: Path) -> None:
    import keras

    train = load_csv(synthetic_dir / "sign_mnist_train.csv")
    test = load_csv(synthetic_dir / "sign_mnist_test.csv")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(24, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    scale = lambda d: d.images[..., None].astype("float32") / 255  # noqa: E731
    model.fit(scale(train), labels_to_indices(train.labels), epochs=5, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(scale(test), labels_to_indices(test.labels), verbose=0)
    assert accuracy >= 0.9
