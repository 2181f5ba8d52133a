"""Photo folders as a data format: one sub-folder of PNG/JPEG photos per letter, as Kaggle's ASL Alphabet and
Massey sets and `keras.utils.image_dataset_from_directory` lay them out; accepted wherever a Sign MNIST CSV is.

Loading checks every photo's header and hashes its bytes, but decodes nothing: decoding is per photo, later,
with `read_rgb`, so a cache keyed by `PhotoSet.file_hashes` can skip it. Bad input stops here with an
`InputError` naming the path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from asl_mlops.errors import InputError
from asl_mlops.labels import LETTERS, letter_to_label

logger = logging.getLogger(__name__)

#: Names of the letter folders, A-Y without J (J and Z need motion); matched case-insensitively.
LETTER_FOLDERS: tuple[str, ...] = LETTERS
#: Suffixes of photo files, matched case-insensitively; other files in a letter folder are skipped.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_LETTER_OF_NAME = {letter.lower(): letter for letter in LETTER_FOLDERS}
_EXPECTED = "a folder with one sub-folder of PNG/JPEG photos per letter (A, B, ... Y without J; any case)"


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare content_hash instead
class PhotoSet:
    """The photos of a folder and their labels; read-only so `content_hash` stays true."""

    root: str  # the folder as given
    paths: tuple[Path, ...]  # every photo, sorted by (letter, relative path)
    labels: np.ndarray  # int64 (N,) Sign MNIST labels (A=0 .. Y=24, never 9)
    file_hashes: tuple[str, ...]  # sha256 of each file's bytes: cache key for per-photo work
    skipped_folders: dict[str, int] = field(default_factory=dict)  # non-letter folder -> files under it

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.dtype != np.int64 or labels.shape != (len(self.paths),) or len(self.file_hashes) != len(self.paths):
            raise ValueError(f"need int64 labels and one hash per photo for {len(self.paths)} photos, got labels "
                             f"{labels.dtype} {labels.shape} and {len(self.file_hashes)} hashes")
        view = labels.view()  # the caller's array keeps its flags, ours can't change under the hash
        view.flags.writeable = False
        object.__setattr__(self, "labels", view)

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def content_hash(self) -> str:
        """sha256 over (relative path, label, file hash) of every photo: equal for the same photos anywhere."""
        digest = hashlib.sha256()
        for path, label, file_hash in zip(self.paths, self.labels.tolist(), self.file_hashes):
            digest.update(f"{_relative(path, self.root)}\0{label}\0{file_hash}\n".encode())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int] | np.ndarray) -> PhotoSet:
        """The photos at `indices` (integers or a boolean mask), same root: for splits."""
        index = np.asarray(indices)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64).reshape(-1)
        return PhotoSet(root=self.root, paths=tuple(self.paths[i] for i in index.tolist()),
                        labels=np.ascontiguousarray(self.labels[index]),
                        file_hashes=tuple(self.file_hashes[i] for i in index.tolist()),
                        skipped_folders=dict(self.skipped_folders))


def _relative(path: Path, root: str | Path) -> str:
    """Path inside the root, with '/' on every OS, so the content hash does not depend on where the folder is."""
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------------------
# Loading and validation


def is_photo_folder(path: str | Path) -> bool:
    """True for an existing directory (photo folder); a Sign MNIST CSV is a file."""
    return Path(path).is_dir()


def load_photo_folder(path: str | Path) -> PhotoSet:
    """List, label and hash the photos of a letter-per-folder tree; raise InputError naming the bad path."""
    from asl_mlops.data.images import check_encoded_image

    root = Path(path)
    if not root.exists():
        raise InputError(f"{path}: folder not found; expected {_EXPECTED}, or a Sign MNIST CSV file. "
                         f"Write a synthetic one with `asl-mlops data synth-photos --out data/photos`")
    if not root.is_dir():
        raise InputError(f"{path}: is not a folder; expected {_EXPECTED}")

    letter_dirs: list[tuple[str, Path]] = []
    skipped: dict[str, int] = {}
    entries = sorted(root.iterdir())
    for entry in entries:
        if not entry.is_dir():
            continue  # a README or manifest beside the letter folders
        letter = _LETTER_OF_NAME.get(entry.name.lower())
        if letter is None:
            skipped[entry.name] = sum(1 for p in entry.rglob("*") if p.is_file())
        else:
            letter_dirs.append((letter, entry))
    if not letter_dirs:
        raise InputError(f"{path}: no letter folders; expected {_EXPECTED}, found {_describe(entries)}")
    if skipped:
        logger.warning("%s: skipped %d folder(s) that are not letters A-Y without J (J and Z need motion): %s",
                       path, len(skipped), ", ".join(f"{name} ({n} files)" for name, n in skipped.items()))

    photos: list[tuple[int, str, Path, str]] = []  # (label, relative path, path, sha256)
    not_images: list[Path] = []
    for letter, folder in letter_dirs:
        found = 0
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                not_images.append(file)
                continue
            try:
                data = file.read_bytes()
            except OSError as err:
                raise InputError(f"{file}: cannot read ({err.strerror or err})") from None
            if not data:
                raise InputError(f"{file}: empty file (0 bytes), not a PNG or JPEG image")
            try:
                check_encoded_image(data)  # header and end markers only: cheap, unlike decoding
            except ValueError as err:
                raise InputError(f"{file}: {err}") from None
            photos.append((letter_to_label(letter), _relative(file, root), file, hashlib.sha256(data).hexdigest()))
            found += 1
        if not found:
            logger.warning("%s: no photos, letter %s has no training examples", folder, letter)
    if not_images:
        logger.warning("skipped %d file(s) that are not %s photos: %s", len(not_images), "/".join(IMAGE_SUFFIXES),
                       _first([str(p) for p in not_images], 5))
    if not photos:
        raise InputError(f"{path}: no photos ({'/'.join(IMAGE_SUFFIXES)}) in any letter folder; expected {_EXPECTED}")

    photos.sort(key=lambda photo: photo[:2])
    return PhotoSet(root=str(path), paths=tuple(p[2] for p in photos),
                    labels=np.array([p[0] for p in photos], dtype=np.int64),
                    file_hashes=tuple(p[3] for p in photos), skipped_folders=skipped)


def _describe(entries: list[Path]) -> str:
    """What a folder holds, in a few words, for the no-letter-folders message."""
    folders = [e.name for e in entries if e.is_dir()]
    files = len(entries) - len(folders)
    parts = []
    if folders:
        parts.append("folders " + _first([repr(name) for name in folders], 8))
    if files:
        parts.append(f"{files} file(s)")
    return " and ".join(parts) if parts else "nothing (the folder is empty)"


def _first(items: list[str], count: int) -> str:
    """The first `count` items, comma-separated, and how many more: keeps a message to one readable line."""
    return ", ".join(items[:count]) + (f" and {len(items) - count} more" if len(items) > count else "")


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded PNG/JPEG -> (H, W, 3) uint8 RGB, EXIF orientation applied (as browsers do); gray becomes 3 channels.

    Raises ValueError with a short reason (the same guards as the served model's, asl_mlops.serving)."""
    import cv2

    from asl_mlops.data.images import check_encoded_image

    kind = check_encoded_image(data)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.size == 0:
        raise ValueError(f"{kind.upper()} data could not be decoded (corrupt file)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> np.ndarray:
    """A photo file -> (H, W, 3) uint8 RGB; InputError "<path>: <reason>" if it cannot be read or decoded."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not data:
        raise InputError(f"{path}: empty file (0 bytes), not a PNG or JPEG image")
    try:
        return decode_rgb(data)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None
