"""Training inputs: the training, validation and test arrays of a run, from a Sign MNIST CSV or a photo folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from asl_mlops.config import TrainConfig
from asl_mlops.data.sign_mnist import Dataset, load_csv
from asl_mlops.data.split import Split, split_train_val
from asl_mlops.errors import InputError
from asl_mlops.hands.landmarker import file_sha256
from asl_mlops.labels import NUM_CLASSES, labels_to_indices
from asl_mlops.recognizers.preprocess import to_model_input
from asl_mlops.training.trunk import (
    check_cache_dir,
)

if TYPE_CHECKING:
    from asl_mlops.data.photos import PhotoSet
    from asl_mlops.hands.detector import Hand


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
    w_train: np.ndarray | None = None  # per-row training weights (photos of several signers), None = all equal


@dataclass(frozen=True)
class Teaching:
    """One person's photos added to a photo recognizer's training data, each weighing `weight` average training
    photos (`asl-mlops teach`, asl_mlops.teach)."""

    photos: "PhotoSet"
    weight: float


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Sign MNIST labels -> one-hot class vectors (N, 24)."""
    return keras.utils.to_categorical(labels_to_indices(labels), NUM_CLASSES).astype(np.float32)


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


def photo_validation_split(photos: "PhotoSet", config: TrainConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(training indices, validation indices, validation signers) of a photo set. With `val_split` grouped and
    photos of two or more named signers, validation holds out whole signers (asl_mlops.data.split.signer_split),
    so its figure is one for people the network never saw; otherwise photos at random per letter (no signers)."""
    from asl_mlops.data.split import signer_split
    from asl_mlops.hands.features import stratified_split

    signers = np.asarray(photos.signers)
    if config.val_split == "grouped" and len(photos.named_signers) >= 2:
        return signer_split(signers, config.val_fraction, config.split_seed)
    train_index, val_index = stratified_split(photos.labels, config.val_fraction, config.split_seed)
    return train_index, val_index, ()


def prepare_photo_data(config: TrainConfig, teaching: Teaching | None = None) -> PreparedData:
    """Photo folders -> keypoint features: find the hand in every photo (cached under <cache_dir>/hands/), then
    `photo_inputs`."""
    from asl_mlops.hands import features as photo_data
    from asl_mlops.hands.landmarker import hand_model_path

    train_set, test_set = photo_data.load_photo_sets(config.train_data, config.test_data)
    model = hand_model_path()
    cache = Path(config.cache_dir)
    check_cache_dir(cache)
    train_hands = photo_data.detect(train_set, model, cache, "training photos").hands
    test_hands = photo_data.detect(test_set, model, cache, "test photos").hands
    taught = None
    if teaching is not None:
        taught = (teaching.photos, photo_data.detect(teaching.photos, model, cache, "taught photos").hands,
                  teaching.weight)
    data = photo_inputs(train_set, train_hands, test_set, test_hands, config, taught)
    data.params["hand_model_sha256"] = file_sha256(model)
    return data


def photo_inputs(train_set: "PhotoSet", train_hands: Sequence["Hand | None"], test_set: "PhotoSet",
                 test_hands: Sequence["Hand | None"], config: TrainConfig,
                 taught: "tuple[PhotoSet, Sequence[Hand | None], float] | None" = None) -> PreparedData:
    """The photo recognizer's inputs from photos and their hands: hold out validation photos (whole signers where
    the folder names them), and turn each training hand into augmented copies, weighted per signer
    (`signer_balance`). `taught`: (photos, their hands, weight) of one person, added to training only, each
    photo weighing `weight` average training photos (the weights' mean over the training photos is 1)."""
    from asl_mlops.hands import features as photo_data

    train_index, val_index, val_signers = photo_validation_split(train_set, config)
    signers = np.asarray(train_set.signers)[train_index]
    x_train, y_train, w_train = photo_data.augmented_training_features(
        tuple(train_hands[i] for i in train_index), train_set.labels[train_index], config.split_seed,
        weights=photo_data.signer_weights(signers, config.signer_balance) if config.signer_balance else None)
    extra: dict[str, object] = {}
    if taught is not None:
        taught_set, taught_hands, weight = taught
        x_taught, y_taught, w_taught = photo_data.augmented_training_features(
            tuple(taught_hands), taught_set.labels, config.split_seed + 1,
            weights=np.full(len(taught_set), weight, dtype=np.float32))
        w_train = np.ones(len(x_train), dtype=np.float32) if w_train is None else w_train
        x_train, y_train = np.concatenate([x_train, x_taught]), np.concatenate([y_train, y_taught])
        w_train = np.concatenate([w_train, w_taught])
        extra = {"taught_photos": len(taught_set), "taught_hands_found": sum(h is not None for h in taught_hands),
                 "taught_data_hash": taught_set.content_hash, "teach_weight": weight}
    val_hands = tuple(train_hands[i] for i in val_index)
    x_val, val_found = photo_data.features_or_zeros(val_hands)
    x_test, test_found = photo_data.features_or_zeros(tuple(test_hands))
    val_set = train_set.subset(val_index)
    params = {"train_data_hash": train_set.content_hash, "val_data_hash": val_set.content_hash,
              "test_data_hash": test_set.content_hash, "train_photos": len(train_set),
              "train_rows": len(train_index), "val_rows": len(val_index), "test_rows": len(test_set),
              "train_hands_found": int(sum(h is not None for h in train_hands)),
              "test_hands_found": int(test_found.sum()), "augment_copies": photo_data.AUGMENT_COPIES,
              "photo_layout": train_set.layout, "signers": len(train_set.named_signers),
              "train_signers": len(set(signers.tolist()) - {""}),
              "val_held_out": "signers" if val_signers else "photos",
              "val_signers": ",".join(val_signers) if val_signers else "-", **extra}
    return PreparedData(x_train, y_train, x_val[val_found], photo_data.one_hot_labels(val_set.labels)[val_found],
                        x_test, labels_to_indices(test_set.labels), photo_data.Thumbnails(test_set, test_hands),
                        params, val_found=val_found, val_labels=labels_to_indices(val_set.labels),
                        test_found=test_found, w_train=w_train)
