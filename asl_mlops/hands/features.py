"""Photo data stage: photo folders (asl_mlops.data.photos) -> the photo recognizer's training, validation and test
inputs, i.e. keypoint features of the hands found in them (asl_mlops.hands, asl_mlops.hands.keypoints).

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

from asl_mlops.errors import InputError
from asl_mlops.hands.detector import Detections, Hand, detect_photos
from asl_mlops.hands.keypoints import (
    canonical_points,
    features,
    features_from_points,
    rotated_copies,
)
from asl_mlops.labels import NUM_CLASSES, labels_to_indices

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


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: `fraction` of the photos of each letter held out at random (a letter with a
    single photo stays in training)."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(round(fraction * len(members)))
        if len(members) > 1:
            held.extend(rng.choice(members, size=min(max(count, 1), len(members) - 1), replace=False).tolist())
    held_out = np.sort(np.array(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


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


def one_hot_labels(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels_to_indices(labels)]


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
    y = np.tile(one_hot_labels(labels[kept]), (copies + 1, 1))
    w = None if weights is None else np.tile(np.asarray(weights, dtype=np.float32)[kept], copies + 1)
    return features_from_points(image, world), y, w


def load_photo_sets(train_data: str, test_data: str) -> tuple["PhotoSet", "PhotoSet"]:
    """Both photo folders, validated; InputError if the test data is not a photo folder too."""
    from asl_mlops.data.photos import is_photo_folder, load_photo_folder

    if not is_photo_folder(test_data):
        raise InputError(f"test_data {test_data}: the training data is a photo folder ({train_data}), so the test "
                         "data must be one too (a folder with one sub-folder per letter)")
    return load_photo_folder(train_data), load_photo_folder(test_data)
