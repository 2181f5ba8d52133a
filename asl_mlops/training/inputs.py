"""Training inputs: the training, validation and test arrays of a run, from a Sign MNIST CSV or a photo folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from asl_mlops.config import TrainConfig
from asl_mlops.data.sign_mnist import Dataset, load_csv
from asl_mlops.data.split import Split, split_train_val
from asl_mlops.errors import InputError
from asl_mlops.hands.landmarker import file_sha256
from asl_mlops.labels import NUM_CLASSES, labels_to_indices
from asl_mlops.training.preprocess import to_model_input
from asl_mlops.training.trunk import (
    check_cache_dir,
)


@dataclass(frozen=True)
class PreparedData:
    """Train/validation/test model inputs (raw pixels, float32 (N, 28, 28, 1)) plus the facts about them that a
    run logs."""

    x_train: np.ndarray
    y_train: np.ndarray  # one-hot (N, 24)
    x_val: np.ndarray
    y_val: np.ndarray  # one-hot
    x_test: np.ndarray
    y_test: np.ndarray  # class indices (N,)
    # raw uint8 (N, 28, 28), or the test photos' thumbnails (asl_mlops.hands.features.Thumbnails), for the misclassified grid
    test_images: np.ndarray | Sequence[np.ndarray]
    params: dict[str, object] = field(default_factory=dict)  # data hashes and row counts
    # Photo data only: which validation and test photos had a hand found (the others count as errors).
    val_found: np.ndarray | None = None  # over all validation photos; x_val/y_val hold the found ones only
    val_labels: np.ndarray | None = None  # class indices of all validation photos
    test_found: np.ndarray | None = None  # x_test has zero rows where no hand was found


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Sign MNIST labels -> one-hot class vectors (N, 24)."""
    return keras.utils.to_categorical(labels_to_indices(labels), NUM_CLASSES).astype(np.float32)


def prepare_data(config: TrainConfig) -> PreparedData:
    """Validate both data sets (raising InputError before any run starts), split, shape the model inputs: raw
    pixels of CSVs, keypoint features of photo folders (architecture keypoints)."""
    if (config.resolved_architecture == "keypoints") != Path(config.train_data).is_dir():
        if config.resolved_architecture == "keypoints":
            raise InputError(f"train_data {config.train_data}: architecture keypoints trains on a photo folder (one "
                             "sub-folder of photos per letter), not a CSV")
        raise InputError(f"train_data {config.train_data} is a photo folder: architecture {config.resolved_architecture} "
                         "trains on Sign MNIST CSVs; photo folders train architecture keypoints (or auto)")
    if config.resolved_architecture == "keypoints":
        return prepare_photo_data(config)
    train_csv = load_csv(config.train_data)
    test = load_csv(config.test_data)
    split = split_train_val(train_csv, config.val_split, config.val_fraction, config.split_seed)
    return split_data(train_csv, split, test)


def split_data(train_csv: Dataset, split: Split, test: Dataset) -> PreparedData:
    """Model inputs (raw pixels; the model preprocesses them itself) of the training and validation parts of
    `train_csv` and of the test set, with the hashes and row counts a run logs."""
    params = {
        # val_data_hash identifies the validation rows themselves (data, val_split, val_fraction and split_seed
        # together): the registry compares models only when they were validated on the same rows.
        "train_data_hash": train_csv.content_hash, "val_data_hash": split.held_out.content_hash,
        "test_data_hash": test.content_hash, "train_csv_rows": len(train_csv), "train_rows": len(split.train),
        "val_rows": len(split.held_out), "test_rows": len(test), **split.params("val"),
    }
    return PreparedData(to_model_input(split.train.images), one_hot(split.train.labels),
                        to_model_input(split.held_out.images), one_hot(split.held_out.labels),
                        to_model_input(test.images), labels_to_indices(test.labels), test.images, params)


def prepare_photo_data(config: TrainConfig) -> PreparedData:
    """Photo folders -> keypoint features: find the hand in every photo (cached under <cache_dir>/hands/), split
    the training photos at random per letter, and turn each training hand into augmented copies."""
    from asl_mlops.hands import features as photo_data
    from asl_mlops.hands.landmarker import hand_model_path

    train_set, test_set = photo_data.load_photo_sets(config.train_data, config.test_data)
    model = hand_model_path()
    cache = Path(config.cache_dir)
    check_cache_dir(cache)
    train_hands = photo_data.detect(train_set, model, cache, "training photos").hands
    test_hands = photo_data.detect(test_set, model, cache, "test photos").hands
    train_index, val_index = photo_data.stratified_split(train_set.labels, config.val_fraction, config.split_seed)
    x_train, y_train = photo_data.augmented_training_features(
        tuple(train_hands[i] for i in train_index), train_set.labels[train_index], config.split_seed)
    val_hands = tuple(train_hands[i] for i in val_index)
    x_val, val_found = photo_data.features_or_zeros(val_hands)
    x_test, test_found = photo_data.features_or_zeros(test_hands)
    val_set = train_set.subset(val_index)
    params = {"train_data_hash": train_set.content_hash, "val_data_hash": val_set.content_hash,
              "test_data_hash": test_set.content_hash, "train_photos": len(train_set),
              "train_rows": len(train_index), "val_rows": len(val_index), "test_rows": len(test_set),
              "train_hands_found": int(sum(h is not None for h in train_hands)),
              "test_hands_found": int(test_found.sum()), "augment_copies": photo_data.AUGMENT_COPIES,
              "hand_model_sha256": file_sha256(model)}
    return PreparedData(x_train, y_train, x_val[val_found], photo_data.one_hot_labels(val_set.labels)[val_found],
                        x_test, labels_to_indices(test_set.labels), photo_data.Thumbnails(test_set, test_hands),
                        params, val_found=val_found, val_labels=labels_to_indices(val_set.labels),
                        test_found=test_found)
