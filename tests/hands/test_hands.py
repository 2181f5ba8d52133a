"""Hand detection: the hand model's routes (local file, URL, package index), the detector on real and hand-free
photos, the per-photo cache, and the keypoint features."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REAL_HANDS, real_hand_photo

from asl_mlops.errors import InputError
from asl_mlops.hands.detector import RETRIES, Hand, HandDetector, detect_photos
from asl_mlops.hands.keypoints import (
    NUM_FEATURES,
    canonical_points,
    features,
    features_from_points,
    rotated_copies,
)
from asl_mlops.hands.landmarker import (
    WHEEL_MEMBERS,
    bundle_from_package_index,
    bundle_from_url,
    bundle_from_wheel,
    check_bundle,
    hand_model_path,
)


def zip_with(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


# --- the model bundle ------------------------------------------------------------------------------

def test_check_bundle_names_what_is_wrong(tmp_path: Path):
    with pytest.raises(InputError, match="hand model file not found"):
        check_bundle(tmp_path / "missing.task")
    (tmp_path / "text.task").write_text("hello")
    with pytest.raises(InputError, match="not a zip file"):
        check_bundle(tmp_path / "text.task")
    half = zip_with(tmp_path / "half.task", {"hand_detector.tflite": b"x"})
    with pytest.raises(InputError, match="missing hand_landmarks_detector.tflite"):
        check_bundle(half)
    deflated = zip_with(tmp_path / "deflated.task", {name: b"x" * 100 for name in WHEEL_MEMBERS}, zipfile.ZIP_DEFLATED)
    with pytest.raises(InputError, match="compressed; MediaPipe needs them stored"):
        check_bundle(deflated)


def test_a_wheel_with_other_files_is_refused_and_nothing_is_written(tmp_path: Path):
    wheel = zip_with(tmp_path / "mediapipe-0.10.21-fake.whl", {inner: b"not the network" for inner, _ in WHEEL_MEMBERS.values()})
    dest = tmp_path / "cache" / "hand_landmarker.task"
    with pytest.raises(InputError, match="is not the expected file"):
        bundle_from_wheel(wheel, dest)
    assert not dest.exists()
    empty = zip_with(tmp_path / "other.whl", {"README": b""})
    with pytest.raises(InputError, match="expected a mediapipe 0.10.x wheel"):
        bundle_from_wheel(empty, dest)


def test_the_local_file_route_needs_no_network(hand_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ASL_MLOPS_HAND_MODEL", str(hand_model))
    assert hand_model_path() == hand_model
    monkeypatch.setenv("ASL_MLOPS_HAND_MODEL", str(tmp_path / "nowhere.task"))
    with pytest.raises(InputError, match="nowhere.task: hand model file not found"):
        hand_model_path()
    assert hand_model_path(str(hand_model)) == hand_model  # a path given directly


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_download_route_checks_the_file_before_keeping_it(file_server, hand_model: Path, tmp_path: Path):
    root, url = file_server
    shutil.copy(hand_model, root / "hand_landmarker.task")
    (root / "page.html").write_text("<html>not a model</html>")
    dest = tmp_path / "cache" / "hand_landmarker.task"
    assert bundle_from_url(f"{url}/hand_landmarker.task", dest) == dest
    assert dest.read_bytes() == hand_model.read_bytes()
    dest.unlink()
    with pytest.raises(InputError, match="not a zip file"):
        bundle_from_url(f"{url}/page.html", dest)
    with pytest.raises(InputError, match="cannot download the hand model"):
        bundle_from_url(f"{url}/missing.task", dest)
    assert list(dest.parent.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_the_package_index_route_repacks_the_wheels_networks(tmp_path: Path):
    dest = tmp_path / "hand_landmarker.task"
    try:
        bundle_from_package_index(dest)
    except InputError as err:
        if "cannot download" in str(err):
            pytest.skip(f"package index unreachable: {err}")
        raise
    check_bundle(dest)
    with HandDetector(dest) as detector:  # MediaPipe opens it
        assert detector.detect(np.zeros((64, 64, 3), dtype=np.uint8)) is None


# --- detection -------------------------------------------------------------------------------------

def test_no_hand_in_a_blank_or_noisy_photo(hand_model: Path):
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    with HandDetector(hand_model) as detector:
        assert detector.detect(np.zeros((120, 160, 3), dtype=np.uint8)) is None
        assert detector.detect(noise) is None


@pytest.mark.skipif(not REAL_HANDS.is_dir(), reason=f"no real hand photos at {REAL_HANDS}")
def test_a_real_hand_is_found_with_its_box(hand_model: Path):
    photo, _ = real_hand_photo("B")
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    with HandDetector(hand_model) as detector:
        hand = detector.detect(rgb)
        # The same hand in a photo twice as wide (black on the right): its box moves to the left half.
        wide = detector.detect(np.concatenate([rgb, np.zeros_like(rgb)], axis=1))
    assert hand is not None and hand.landmarks.shape == (21, 3) and hand.world.shape == (21, 3)
    assert hand.handedness in ("Left", "Right")
    x, y, w, h = hand.box
    assert 0 <= x and 0 <= y and x + w <= 1.0001 and y + h <= 1.0001 and w > 0.1 and h > 0.1
    assert wide is not None
    assert wide.box[0] == pytest.approx(x / 2, abs=0.03) and wide.box[2] == pytest.approx(w / 2, abs=0.03)


@pytest.mark.skipif(not REAL_HANDS.is_dir(), reason=f"no real hand photos at {REAL_HANDS}")
def test_detections_are_cached_by_content_and_a_bad_cache_file_is_recomputed(hand_model: Path, tmp_path: Path):
    from asl_mlops.data.photos import load_photo_folder

    for letter in ("A", "B"):
        (tmp_path / "photos" / letter).mkdir(parents=True)
        shutil.copy(real_hand_photo(letter)[0], tmp_path / "photos" / letter)
    cv2.imwrite(str(tmp_path / "photos" / "A" / "blank.png"), np.zeros((50, 50, 3), dtype=np.uint8))
    photos = load_photo_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    first = detect_photos(photos, hand_model, cache)
    assert first.hits == 0 and first.found.tolist().count(True) == 2
    second = detect_photos(photos, hand_model, cache)
    assert second.hits == len(photos)
    for a, b in zip(first.hands, second.hands):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            assert a.handedness == b.handedness
    files = sorted(cache.rglob("*.npz"))  # one per view searched: the blank photo was searched in every view
    assert {f.name for f in files} == {f"{digest}.npz" for digest in photos.file_hashes}
    assert len(files) >= len(photos) + len(RETRIES) and not list(cache.rglob("*.tmp"))
    files[0].write_bytes(b"half a file")
    third = detect_photos(photos, hand_model, cache)
    assert third.hits == len(photos) - 1 and third.found.tolist() == first.found.tolist()


# --- keypoint features -----------------------------------------------------------------------------

def synthetic_hand(seed: int, handedness: str = "Right", size: tuple[int, int] = (640, 480)) -> Hand:
    rng = np.random.default_rng(seed)
    landmarks = rng.uniform(0.3, 0.7, (21, 3)).astype(np.float32)
    world = rng.normal(0, 0.05, (21, 3)).astype(np.float32)
    return Hand(landmarks, world, handedness, 0.9, size)


def mirrored(hand: Hand) -> Hand:
    """The same hand seen in a mirror: the other handedness."""
    landmarks = hand.landmarks.copy()
    landmarks[:, 0] = 1.0 - landmarks[:, 0]
    landmarks[:, 2] *= -1
    world = hand.world * np.array([-1, 1, -1], dtype=np.float32)
    return Hand(landmarks, world, "Left" if hand.handedness == "Right" else "Right", hand.score, hand.size)


def test_features_ignore_where_the_hand_is_its_size_and_which_hand():
    hand = synthetic_hand(0)
    x = features([hand])
    assert x.shape == (1, NUM_FEATURES) and x.dtype == np.float32
    shifted = Hand(hand.landmarks * 0.5 + 0.1, hand.world, hand.handedness, hand.score, hand.size)
    np.testing.assert_allclose(features([shifted]), x, atol=1e-5)
    np.testing.assert_allclose(features([mirrored(hand)]), x, atol=1e-5)
    assert not np.allclose(features([synthetic_hand(1)]), x)


def test_rotated_copies_keep_the_hands_shape():
    image, world = canonical_points([synthetic_hand(0), synthetic_hand(1)])
    turned_image, turned_world = rotated_copies(image, world, copies=3, degrees=30, scale=0.0, seed=0)
    assert turned_image.shape == (8, 21, 3) and turned_world.shape == (8, 21, 3)
    np.testing.assert_array_equal(turned_image[:2], image)
    # Turning keeps every distance between keypoints: the distance features stay the same.
    from asl_mlops.hands.keypoints import _PAIRS

    start = 2 * 63  # after the image and world keypoints
    x = features_from_points(turned_image, turned_world)
    np.testing.assert_allclose(x[2:4, start:start + len(_PAIRS[0])], x[:2, start:start + len(_PAIRS[0])], atol=1e-4)
    assert not np.allclose(x[2:4, :63], x[:2, :63])


def test_jittered_copies_move_the_keypoints_but_not_the_wrist():
    image, world = canonical_points([synthetic_hand(0), synthetic_hand(1)])
    plain = rotated_copies(image, world, copies=2, degrees=30, scale=0.1, seed=0)
    moved = rotated_copies(image, world, copies=2, degrees=30, scale=0.1, seed=0, jitter=0.05)
    for points in (*moved, *plain):
        np.testing.assert_allclose(points[:, 0], 0.0, atol=1e-6)  # wrist at the origin
    np.testing.assert_array_equal(moved[0][:2], image)  # the originals come first, unchanged
    # The first copies share their turn (drawn before any noise): what differs is the noise, 0.05 of the hand per
    # axis on the keypoint and on the wrist it is measured from.
    shift = np.linalg.norm(moved[0][2:4] - plain[0][2:4], axis=2)[:, 1:]
    extent = np.linalg.norm(plain[0][2:4], axis=2).max(axis=1)[:, None]
    assert 0.05 < float(np.median(shift / extent)) < 0.2


@pytest.mark.skipif(not REAL_HANDS.is_dir(), reason=f"no real hand photos at {REAL_HANDS}")
@pytest.mark.parametrize("letter", ["L", "B", "Y"])
def test_a_hand_that_fills_the_frame_is_found(hand_model: Path, letter: str):
    """A close-up made by cropping a real photo to the hand's box (a hand held close to the camera fills the
    frame): the photo as it is may show the detector no palm with context, the retries' wider views do."""
    rgb = cv2.cvtColor(cv2.imread(str(real_hand_photo(letter)[0])), cv2.COLOR_BGR2RGB)
    with HandDetector(hand_model) as detector:
        hand = detector.detect(rgb)
        assert hand is not None
        height, width = rgb.shape[:2]
        x, y, w, h = hand.box
        crop = np.ascontiguousarray(rgb[int(y * height):int((y + h) * height), int(x * width):int((x + w) * width)])
        found = detector.detect(crop)
    assert found is not None
    assert found.box[2] > 0.6 and found.box[3] > 0.6  # the hand fills the close-up
