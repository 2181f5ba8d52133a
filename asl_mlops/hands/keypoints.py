"""Keypoint features: a detected hand's 21 keypoints (asl_mlops.hands) -> one vector the photo recognizer's
network classifies. Pure NumPy; training, evaluation and the served model call the same `features`.

A hand becomes comparable across people, cameras and framing by:
- putting the wrist at the origin and scaling by the hand's extent (where and how big it is in the photo
  says nothing about the letter);
- mirroring left hands, so a letter signed with either hand looks the same;
- describing it twice, as MediaPipe sees it in the photo (image keypoints, with relative depth) and in metres
  (world keypoints), plus what does not depend on the viewing angle: the distances between every two keypoints
  and the direction of every bone.

In-plane orientation is kept on purpose: some letters differ mainly by it (K and P, G and Q, H and U).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asl_mlops.hands.detector import NUM_LANDMARKS, Hand

#: The 20 bones of the hand as (from, to) keypoint indices: thumb, index, middle, ring, little finger.
BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
_PAIRS = np.triu_indices(NUM_LANDMARKS, 1)
#: Length of a feature vector: image and world keypoints (2 x 63), pairwise distances (210), bone
#: directions in the world and in the image (2 x 60).
NUM_FEATURES = 2 * 3 * NUM_LANDMARKS + len(_PAIRS[0]) + 2 * 3 * len(BONES)


def canonical_points(hands: Sequence[Hand]) -> tuple[np.ndarray, np.ndarray]:
    """(image, world) keypoints of each hand, float32 (N, 21, 3) each: wrist at the origin, left hands mirrored;
    image keypoints in pixels (z on x's scale), world ones in metres."""
    if not hands:
        empty = np.zeros((0, NUM_LANDMARKS, 3), dtype=np.float32)
        return empty, empty.copy()
    image = np.stack([hand.pixels() for hand in hands]).astype(np.float32)
    world = np.stack([hand.world for hand in hands]).astype(np.float32)
    mirror = np.array([[-1.0, 1.0, -1.0] if hand.handedness == "Left" else [1.0, 1.0, 1.0] for hand in hands],
                      dtype=np.float32)[:, None, :]
    return (image - image[:, :1]) * mirror, (world - world[:, :1]) * mirror


def _scaled(points: np.ndarray) -> np.ndarray:
    """Points divided by their largest distance from the wrist (the origin)."""
    extent = np.linalg.norm(points, axis=2).max(axis=1)
    return points / np.maximum(extent, 1e-6)[:, None, None]


def _bone_directions(points: np.ndarray) -> np.ndarray:
    bones = np.stack([points[:, end] - points[:, start] for start, end in BONES], axis=1)
    return bones / np.maximum(np.linalg.norm(bones, axis=2, keepdims=True), 1e-6)


def features_from_points(image: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Feature vectors, float32 (N, NUM_FEATURES), of canonical (image, world) keypoints (N, 21, 3)."""
    image, world = _scaled(image), _scaled(world)
    distances = np.linalg.norm(world[:, :, None, :] - world[:, None, :, :], axis=3)[:, _PAIRS[0], _PAIRS[1]]
    distances = distances / np.maximum(distances.max(axis=1, keepdims=True), 1e-6)
    n = len(image)
    return np.concatenate([image.reshape(n, -1), world.reshape(n, -1), distances,
                           _bone_directions(world).reshape(n, -1), _bone_directions(image).reshape(n, -1)],
                          axis=1).astype(np.float32)


def features(hands: Sequence[Hand]) -> np.ndarray:
    """Feature vectors, float32 (N, NUM_FEATURES), of detected hands."""
    return features_from_points(*canonical_points(hands))


def rotated_copies(image: np.ndarray, world: np.ndarray, copies: int, degrees: float | np.ndarray, scale: float,
                   seed: int, jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints followed by `copies` randomly turned copies of them: each hand rotated about all three axes
    by up to `degrees` and (image keypoints) scaled by 1 +- `scale`, as the same hand seen from another angle
    and distance, and each keypoint moved by Gaussian noise of `jitter` times the hand's extent (another hand's
    proportions, and the landmarker's own error; the wrist stays at the origin). Training augmentation; returns
    arrays of (copies + 1) * N hands."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    images, worlds = [image], [world]
    for _ in range(copies):
        turn = Rotation.from_euler("xyz", rng.uniform(-degrees, degrees, (len(image), 3)), degrees=True)
        matrices = turn.as_matrix().astype(np.float32)
        zoom = rng.uniform(1 - scale, 1 + scale, (len(image), 1, 1)).astype(np.float32)
        turned = [np.einsum("nij,nkj->nki", matrices, image) * zoom, np.einsum("nij,nkj->nki", matrices, world)]
        if jitter:
            for k, points in enumerate(turned):
                extent = np.linalg.norm(points, axis=2).max(axis=1)[:, None, None]
                moved = points + rng.normal(0.0, jitter, points.shape).astype(np.float32) * extent
                turned[k] = moved - moved[:, :1]
        images.append(turned[0].astype(np.float32))
        worlds.append(turned[1].astype(np.float32))
    return np.concatenate(images), np.concatenate(worlds)
