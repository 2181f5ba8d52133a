"""Photo inputs: photo folders (asl_mlops.data.photos) -> the photo recognizer's training, validation and test
inputs, i.e. keypoint features of the hands found in them (asl_mlops.hands.detector, asl_mlops.hands.keypoints):
validation photos held out, augmented copies of each training hand, per-signer weights, and the test photos'
thumbnails for the misclassified grid.

Hand detection is the expensive step (~10-25 ms a photo); it is cached per photo under
<cache_dir>/hands/, keyed by the photo's bytes and the hand model's, so re-runs and sweeps pay for it once.
A photo with no hand found cannot be trained on; in validation and test it counts as an error, as the served
model answers it with no letter.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asl_mlops.config import TrainConfig
from asl_mlops.data.split import signer_split, stratified_split
from asl_mlops.errors import InputError
from asl_mlops.hands.detector import Detections, Hand, detect_photos
from asl_mlops.hands.keypoints import (
    canonical_points,
    features,
    features_from_points,
    rotated_copies,
)
from asl_mlops.hands.landmarker import file_sha256, hand_model_path
from asl_mlops.labels import labels_to_indices
from asl_mlops.training.inputs import PreparedData, Teaching, one_hot
from asl_mlops.training.trunk import check_cache_dir

if TYPE_CHECKING:
    from asl_mlops.data.photos import PhotoSet

logger = logging.getLogger(__name__)

#: Side of the test photos' thumbnails in the misclassified grid.
THUMBNAIL = 64
#: Training augmentation of the keypoints (asl_mlops.hands.keypoints.rotated_copies): copies per hand, largest turn
#: about each axis in degrees, scale change, and keypoint noise as a fraction of the hand's extent.
#: benchmarks/hands.py measures what each buys on signers the model never saw.
AUGMENT_COPIES = 5
AUGMENT_DEGREES = 30.0
AUGMENT_SCALE = 0.1
AUGMENT_JITTER = 0.05


def signer_weights(signers: np.ndarray, power: float) -> np.ndarray:
    """Per-photo training weights that even out how much each signer counts: a photo of a signer with n photos
    weighs n ** -power (0: every photo alike; 1: every signer alike), scaled to a mean of 1. Photo sets are
    lopsided (one video signer can hold half the photos of ../shared/data/hands); on it, weighting measured
    no better than none (docs/decisions.md), and the default (0.5) is the one the published figures used."""
    names, index, counts = np.unique(np.asarray(signers), return_inverse=True, return_counts=True)
    weights = counts[index].astype(np.float64) ** -power
    return (weights / weights.mean()).astype(np.float32)


def _progress(description: str):
    """A tqdm bar on a terminal, a few log lines otherwise."""
    from tqdm import tqdm

    return lambda items: tqdm(items, desc=description, unit="photo", disable=not sys.stderr.isatty(),
                              mininterval=1.0)


def detect(photos: "PhotoSet", model: Path, cache_dir: Path | None, what: str) -> Detections:
    """Hands of `photos`, cached; logs how many were found."""
    found = detect_photos(photos, model, cache_dir, progress=_progress(f"finding hands in {what}"))
    logger.info("%s: hand found in %d of %d photos (%d from the cache, %.1f s)", what, int(found.found.sum()),
                len(photos), found.hits, found.seconds)
    return found


class Thumbnails(Sequence):
    """The photos as the misclassified grid shows them: each cropped to its hand's box (whole if none), squared,
    RGB uint8 (THUMBNAIL, THUMBNAIL, 3). Made when asked for: the grid shows at most a few dozen, so the test
    photos are not all decoded again."""

    def __init__(self, photos: "PhotoSet", hands: Sequence[Hand | None]) -> None:
        self.paths, self.hands = photos.paths, tuple(hands)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        import cv2

        from asl_mlops.data.photos import read_rgb

        rgb, hand = read_rgb(self.paths[i]), self.hands[i]
        if hand is not None:
            height, width = rgb.shape[:2]
            x, y, w, h = hand.box
            side = max(w * width, h * height)
            cx, cy = (x + w / 2) * width, (y + h / 2) * height
            x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            rgb = rgb[y0:int(cy + side / 2) + 1, x0:int(cx + side / 2) + 1]
        return cv2.resize(rgb, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)


def features_or_zeros(hands: tuple[Hand | None, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F) with zero rows where no hand was found, found mask (N,))."""
    from asl_mlops.hands.keypoints import NUM_FEATURES

    found = np.array([hand is not None for hand in hands], dtype=bool)
    x = np.zeros((len(hands), NUM_FEATURES), dtype=np.float32)
    if found.any():
        x[found] = features([hand for hand in hands if hand is not None])
    return x, found


def augmented_training_features(hands: tuple[Hand | None, ...], labels: np.ndarray, seed: int,
                                copies: int = AUGMENT_COPIES, jitter: float = AUGMENT_JITTER,
                                weights: np.ndarray | None = None,
                                degrees: float | tuple[float, float, float] = AUGMENT_DEGREES
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, one-hot labels and (with per-photo `weights`) the weights of the hands found in the training
    photos, each hand followed by its `copies` copies turned by up to `degrees` (about x, y and z, or one figure
    for all three) with keypoint noise `jitter` (drawn once per run, from `seed`)."""
    kept = [i for i, hand in enumerate(hands) if hand is not None]
    if not kept:
        raise InputError("no hand was found in any training photo: the photo recognizer has nothing to learn from")
    image, world = canonical_points([hands[i] for i in kept])
    image, world = rotated_copies(image, world, copies, np.asarray(degrees, dtype=np.float64), AUGMENT_SCALE, seed,
                                  jitter=jitter)
    y = np.tile(one_hot(labels[kept]), (copies + 1, 1))
    w = None if weights is None else np.tile(np.asarray(weights, dtype=np.float32)[kept], copies + 1)
    return features_from_points(image, world), y, w


def load_photo_sets(train_data: str, test_data: str) -> tuple["PhotoSet", "PhotoSet"]:
    """Both photo folders, validated; InputError if the test data is not a photo folder too."""
    from asl_mlops.data.photos import is_photo_folder, load_photo_folder

    if not is_photo_folder(test_data):
        raise InputError(f"test_data {test_data}: the training data is a photo folder ({train_data}), so the test "
                         "data must be one too (a folder with one sub-folder per letter)")
    return load_photo_folder(train_data), load_photo_folder(test_data)


def photo_validation_split(photos: "PhotoSet", config: TrainConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(training indices, validation indices, validation signers) of a photo set. With `val_split` grouped and
    photos of two or more named signers, validation holds out whole signers (asl_mlops.data.split.signer_split),
    so its figure is one for people the network never saw; otherwise photos at random per letter (no signers)."""
    signers = np.asarray(photos.signers)
    if config.val_split == "grouped" and len(photos.named_signers) >= 2:
        return signer_split(signers, config.val_fraction, config.split_seed)
    train_index, val_index = stratified_split(photos.labels, config.val_fraction, config.split_seed)
    return train_index, val_index, ()


def prepare_photo_data(config: TrainConfig, teaching: Teaching | None = None) -> PreparedData:
    """Photo folders -> keypoint features: find the hand in every photo (cached under <cache_dir>/hands/), then
    `photo_inputs`."""

    train_set, test_set = load_photo_sets(config.train_data, config.test_data)
    model = hand_model_path()
    cache = Path(config.cache_dir)
    check_cache_dir(cache)
    train_hands = detect(train_set, model, cache, "training photos").hands
    test_hands = detect(test_set, model, cache, "test photos").hands
    taught = None
    if teaching is not None:
        taught = (teaching.photos, detect(teaching.photos, model, cache, "taught photos").hands,
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
    train_index, val_index, val_signers = photo_validation_split(train_set, config)
    signers = np.asarray(train_set.signers)[train_index]
    x_train, y_train, w_train = augmented_training_features(
        tuple(train_hands[i] for i in train_index), train_set.labels[train_index], config.split_seed,
        weights=signer_weights(signers, config.signer_balance) if config.signer_balance else None)
    extra: dict[str, object] = {}
    if taught is not None:
        taught_set, taught_hands, weight = taught
        x_taught, y_taught, w_taught = augmented_training_features(
            tuple(taught_hands), taught_set.labels, config.split_seed + 1,
            weights=np.full(len(taught_set), weight, dtype=np.float32))
        w_train = np.ones(len(x_train), dtype=np.float32) if w_train is None else w_train
        x_train, y_train = np.concatenate([x_train, x_taught]), np.concatenate([y_train, y_taught])
        w_train = np.concatenate([w_train, w_taught])
        extra = {"taught_photos": len(taught_set), "taught_hands_found": sum(h is not None for h in taught_hands),
                 "taught_data_hash": taught_set.content_hash, "teach_weight": weight}
    val_hands = tuple(train_hands[i] for i in val_index)
    x_val, val_found = features_or_zeros(val_hands)
    x_test, test_found = features_or_zeros(tuple(test_hands))
    val_set = train_set.subset(val_index)
    params = {"train_data_hash": train_set.content_hash, "val_data_hash": val_set.content_hash,
              "test_data_hash": test_set.content_hash, "train_photos": len(train_set),
              "train_rows": len(train_index), "val_rows": len(val_index), "test_rows": len(test_set),
              "train_hands_found": int(sum(h is not None for h in train_hands)),
              "test_hands_found": int(test_found.sum()), "augment_copies": AUGMENT_COPIES,
              "photo_layout": train_set.layout, "signers": len(train_set.named_signers),
              "train_signers": len(set(signers.tolist()) - {""}),
              "val_held_out": "signers" if val_signers else "photos",
              "val_signers": ",".join(val_signers) if val_signers else "-", **extra}
    return PreparedData(x_train, y_train, x_val[val_found], one_hot(val_set.labels)[val_found],
                        x_test, labels_to_indices(test_set.labels), Thumbnails(test_set, test_hands),
                        params, val_found=val_found, val_labels=labels_to_indices(val_set.labels),
                        test_found=test_found, w_train=w_train)
