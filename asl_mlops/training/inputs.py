"""Training inputs: the training, validation and test arrays of a run, from a Sign MNIST CSV or (through
asl_mlops.training.photo_inputs) a photo folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asl_mlops.config import TrainConfig
from asl_mlops.data.sign_mnist import Dataset, load_csv
from asl_mlops.data.split import Split, split_train_val
from asl_mlops.errors import InputError
from asl_mlops.labels import NUM_CLASSES, labels_to_indices
from asl_mlops.recognizers.preprocess import to_model_input

if TYPE_CHECKING:
    from asl_mlops.data.photos import PhotoSet


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
    # For the misclassified grid: raw uint8 (N, 28, 28), or the test photos' thumbnails
    # (asl_mlops.training.photo_inputs.Thumbnails).
    test_images: np.ndarray | Sequence[np.ndarray]
    params: dict[str, object] = field(default_factory=dict)  # data hashes and row counts
    # Photo data only: which validation and test photos had a hand found (the others count as errors).
    val_found: np.ndarray | None = None  # over all validation photos; x_val/y_val hold the found ones only
    val_labels: np.ndarray | None = None  # class indices of all validation photos
    test_found: np.ndarray | None = None  # x_test has zero rows where no hand was found
    w_train: np.ndarray | None = None  # per-row training weights (photos of several signers), None = all equal


@dataclass(frozen=True)
class Teaching:
    """One person's photos added to a photo recognizer's training data, each weighing `weight` average training
    photos (`asl-mlops teach`, asl_mlops.teach)."""

    photos: "PhotoSet"
    weight: float


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Sign MNIST labels (0-24, not 9) -> one-hot class vectors (N, 24), float32: the networks' targets, CSV rows and
    photos alike."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels_to_indices(labels)]


def prepare_data(config: TrainConfig, teaching: Teaching | None = None) -> PreparedData:
    """Validate both data sets (raising InputError before any run starts), split, shape the model inputs: raw
    pixels of CSVs, keypoint features of photo folders (architecture keypoints), plus `teaching`'s photos in
    training (photo recognizers only)."""
    if (config.resolved_architecture == "keypoints") != Path(config.train_data).is_dir():
        if config.resolved_architecture == "keypoints":
            raise InputError(f"train_data {config.train_data}: architecture keypoints trains on a photo folder (one "
                             "sub-folder of photos per letter), not a CSV")
        raise InputError(f"train_data {config.train_data} is a photo folder: architecture {config.resolved_architecture} "
                         "trains on Sign MNIST CSVs; photo folders train architecture keypoints (or auto)")
    if config.resolved_architecture == "keypoints":
        from asl_mlops.training.photo_inputs import prepare_photo_data  # imports this module's PreparedData

        return prepare_photo_data(config, teaching)
    if teaching is not None:
        raise InputError("only a photo recognizer can be taught photos; this one trains on Sign MNIST CSVs")
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
