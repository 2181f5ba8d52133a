"""Hand stage: find one hand in a photo with MediaPipe's HandLandmarker: its 21 keypoints, which hand it is,
and its box. The photo recognizer (asl_mlops.recognizers.photos) classifies the keypoints.

The landmarker needs a model bundle, `hand_landmarker.task` (a zip of two TFLite networks), which
asl_mlops.hands.landmarker.hand_model_path finds (a local file, the user cache, Google's URL or a PyPI wheel).

Detections of a photo set are cached by the photo's content and the bundle's (`detect_photos`), like the trunk
cache: a photo's keypoints are computed once per bundle, whatever folder or run it comes from.
"""

from __future__ import annotations

import logging
import weakref
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asl_mlops.files import atomic_write
from asl_mlops.hands.landmarker import file_sha256

if TYPE_CHECKING:
    from asl_mlops.data.photos import PhotoSet

logger = logging.getLogger(__name__)
#: Where no hand is found, the photo is searched again as (padding on each side as a fraction, brightened?):
#: the palm detector wants a whole palm with context around it, so hands that fill the frame (close to the
#: camera) are found once padded, i.e. shrunk within a larger view, and backlit hands once brightened. The wide
#: paddings (1.0, 1.5) find hands cut off by the frame's edge (benchmarks/detection.py: close-ups).
RETRIES: tuple[tuple[float, bool], ...] = ((0.25, False), (0.25, True), (0.5, False), (1.0, False), (1.5, False))
#: Fraction of the keypoints' extent added around them to make the hand's box (fingertips are keypoints, the
#: palm's edge and the fingers' width are not).
BOX_MARGIN = 0.1
NUM_LANDMARKS = 21


# --- detection ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hand:
    """One detected hand, in the coordinates of the photo it was found in."""

    landmarks: np.ndarray  # float32 (21, 3): x, y as fractions of the photo's width and height, z relative depth
    world: np.ndarray  # float32 (21, 3): metres, origin at the hand's centre (MediaPipe's world landmarks)
    handedness: str  # "Left" or "Right", as MediaPipe names it
    score: float  # handedness confidence, a proxy for the detection's
    size: tuple[int, int]  # the photo's (width, height) in pixels

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The hand's box (x, y, w, h) as fractions of the photo, clipped to it: the keypoints' extent plus
        BOX_MARGIN of it on every side."""
        low, high = self.landmarks[:, :2].min(axis=0), self.landmarks[:, :2].max(axis=0)
        margin = BOX_MARGIN * (high - low)
        low, high = np.clip(low - margin, 0.0, 1.0), np.clip(high + margin, 0.0, 1.0)
        return float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])

    def pixels(self) -> np.ndarray:
        """The keypoints in pixels (x, y, z with z on x's scale), float32 (21, 3)."""
        width, height = self.size
        return self.landmarks * np.array([width, height, width], dtype=np.float32)


class HandDetector:
    """MediaPipe's HandLandmarker in IMAGE mode, one hand per photo; `detect` is thread-compatible, not
    thread-safe (one detector per worker process)."""

    def __init__(self, model_path: str | Path, min_confidence: float = 0.3,
                 retries: Sequence[tuple[float, bool]] = RETRIES) -> None:
        from asl_mlops.quiet_import import import_tensorflow_quietly, quiet_stderr

        import_tensorflow_quietly()  # mediapipe imports TensorFlow, which prints CUDA noise otherwise
        import mediapipe as mp

        vision = mp.tasks.vision
        options = vision.HandLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=str(model_path)), num_hands=1,
            running_mode=vision.RunningMode.IMAGE,
            min_hand_detection_confidence=min_confidence, min_hand_presence_confidence=min_confidence)
        # MediaPipe's C++ logs its set-up and first inference to stderr (LiteRT, XNNPACK, alignment warnings).
        with quiet_stderr():
            self._landmarker = vision.HandLandmarker.create_from_options(options)
            self._find(np.zeros((64, 64, 3), dtype=np.uint8))
        self.retries = tuple(retries)
        # Closed when garbage-collected or at interpreter exit at the latest (MediaPipe's own __del__ may then still
        # print "'NoneType' object is not callable" once its modules are torn down: harmless).
        self._closer = weakref.finalize(self, _close_quietly, self._landmarker)

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> "HandDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _find(self, rgb: np.ndarray) -> Any:
        import mediapipe as mp

        result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        return result if result.hand_landmarks else None

    def detect(self, rgb: np.ndarray) -> Hand | None:
        """The hand in an RGB uint8 photo (H, W, 3), or None if there is none. A photo with no hand found is
        searched again in the RETRIES views, in order, until one finds it."""
        for view in views_of(self.retries):
            hand = self.detect_in_view(rgb, view)
            if hand is not None:
                return hand
        return None

    def detect_in_view(self, rgb: np.ndarray, view: tuple[float, bool]) -> Hand | None:
        """The hand in one view of the photo, `view` = (padding on each side as a fraction of the photo's side,
        brightened?), in the photo's own coordinates; None if that view shows none."""
        pad, brighten = view
        height, width = rgb.shape[:2]
        image = brightened(rgb) if brighten else rgb
        px, py = round(pad * width), round(pad * height)
        if px or py:
            import cv2

            image = cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        result = self._find(image)
        if result is None:
            return None
        landmarks = np.array([[p.x, p.y, p.z] for p in result.hand_landmarks[0]], dtype=np.float32)
        if px or py:  # back to the unpadded photo's fractions (z is on the x scale)
            scale = np.array([(width + 2 * px) / width, (height + 2 * py) / height, (width + 2 * px) / width],
                             dtype=np.float32)
            landmarks = landmarks * scale - np.array([px / width, py / height, 0.0], dtype=np.float32)
        world = np.array([[p.x, p.y, p.z] for p in result.hand_world_landmarks[0]], dtype=np.float32)
        category = result.handedness[0][0]
        return Hand(landmarks, world, category.category_name, float(category.score), (width, height))


def views_of(retries: Sequence[tuple[float, bool]]) -> tuple[tuple[float, bool], ...]:
    """The views a photo is searched in, in order: the photo as it is, then each retry."""
    return ((0.0, False), *tuple(retries))


def _close_quietly(landmarker: Any) -> None:
    from asl_mlops.quiet_import import quiet_stderr

    with quiet_stderr():  # its C++ side logs each accelerator it releases
        try:
            landmarker.close()
        except RuntimeError:  # at interpreter exit MediaPipe's dispatcher thread has stopped; the OS frees the rest
            pass


def brightened(rgb: np.ndarray, gamma: float = 0.5) -> np.ndarray:
    """The photo with its dark tones lifted (gamma < 1): a hand in front of a bright window shows its fingers."""
    table = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return table[rgb]


# --- detections of a photo set, cached by content --------------------------------------------------

_FIELDS = ("landmarks", "world", "score", "size")


def _cache_file(cache_dir: Path, model_digest: str, photo_digest: str, view: tuple[float, bool]) -> Path:
    """Where one photo's detection in one view is kept: per view, so a changed list of retries reuses the views
    already searched."""
    pad, brighten = view
    return (cache_dir / "hands" / model_digest[:16] / f"pad{pad:g}{'-bright' if brighten else ''}" / photo_digest[:2]
            / f"{photo_digest}.npz")


def _save(path: Path, hand: Hand | None) -> None:
    """One photo's detection (or its absence), written atomically so concurrent runs never read half a file. Not
    synced: an entry lost to a crash is only recomputed."""
    with atomic_write(path, sync=False) as out:
        if hand is None:
            np.savez(out, found=np.array(False))
        else:
            np.savez(out, found=np.array(True), landmarks=hand.landmarks, world=hand.world,
                     handedness=np.array(hand.handedness), score=np.array(hand.score), size=np.array(hand.size))


def _load(path: Path) -> tuple[bool, Hand | None]:
    """(hit, detection) of a cache file; a missing or unreadable one is a miss (and is recomputed)."""
    try:
        with np.load(path) as saved:
            if not bool(saved["found"]):
                return True, None
            return True, Hand(saved["landmarks"], saved["world"], str(saved["handedness"]), float(saved["score"]),
                              tuple(int(v) for v in saved["size"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False, None


@dataclass(frozen=True)
class Detections:
    """The hands found in a photo set, in its order (None where no hand was found)."""

    hands: tuple[Hand | None, ...]
    hits: int  # photos answered from the cache
    seconds: float  # wall time of the detection pass

    @property
    def found(self) -> np.ndarray:
        return np.array([hand is not None for hand in self.hands])


def detect_photos(photos: "PhotoSet", model_path: Path, cache_dir: Path | None,
                  progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
                  retries: Sequence[tuple[float, bool]] = RETRIES) -> Detections:
    """Find the hand in every photo of `photos`, searching the views of `retries` in order as `HandDetector.detect`
    does, reading and writing each view's result in the per-photo cache under `cache_dir` (None: no cache).
    Unreadable photos raise InputError naming the file (asl_mlops.data.photos.read_rgb)."""
    import time

    from asl_mlops.data.photos import read_rgb

    start = time.perf_counter()
    model_digest = file_sha256(model_path)
    views = views_of(retries)
    hands: list[Hand | None] = [None] * len(photos)
    todo: list[int] = []
    for i, digest in enumerate(photos.file_hashes):
        for view in views:
            hit, hand = _load(_cache_file(cache_dir, model_digest, digest, view)) if cache_dir else (False, None)
            if not hit:
                todo.append(i)
                break
            if hand is not None:
                hands[i] = hand
                break
    if todo:
        with HandDetector(model_path, retries=retries) as detector:
            for i in (progress or (lambda items: items))(todo):
                rgb = read_rgb(photos.paths[i])
                for view in views:
                    where = _cache_file(cache_dir, model_digest, photos.file_hashes[i], view) if cache_dir else None
                    hit, hand = _load(where) if where else (False, None)
                    if not hit:
                        hand = detector.detect_in_view(rgb, view)
                        if where:
                            _save(where, hand)
                    if hand is not None:
                        hands[i] = hand
                        break
    return Detections(tuple(hands), len(photos) - len(todo), time.perf_counter() - start)
