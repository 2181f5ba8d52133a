"""Photo folders as a data format: one sub-folder of PNG/JPEG photos per letter, as Kaggle's ASL Alphabet and
Massey sets and `keras.utils.image_dataset_from_directory` lay them out; accepted wherever a Sign MNIST CSV is.

Loading checks every photo's header and hashes its bytes, but decodes nothing: decoding is per photo, later,
with `read_rgb`, so a cache keyed by `PhotoSet.file_hashes` can skip it. Bad input stops here with an
`InputError` naming the path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
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
# Photo datasets on Kaggle: name -> (handle, page). Sign MNIST (CSVs) is asl_mlops.data.download's.
KAGGLE_PHOTO_SETS: dict[str, tuple[str, str]] = {
    "asl-alphabet": ("grassknoted/asl-alphabet", "https://www.kaggle.com/datasets/grassknoted/asl-alphabet"),
    "massey": ("ayuraj/asl-dataset", "https://www.kaggle.com/datasets/ayuraj/asl-dataset"),
}
DATASETS: tuple[str, ...] = ("sign-mnist", *KAGGLE_PHOTO_SETS)


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
    from asl_mlops.serving import check_encoded_image

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

    from asl_mlops.serving import check_encoded_image

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


# ---------------------------------------------------------------------------------------------
# Writing


def write_synthetic_photos(out: str | Path, per_letter: int = 4, seed: int = 0, size: int = 96) -> Path:
    """Write a synthetic photo folder to `out` and return it: per letter `per_letter` colour photos of the letter
    drawn over noise (mixed sizes around `size` px, JPEG and PNG), plus a README.txt and a `nothing/` folder that
    loading must skip. No hands in them; the same seed writes the same bytes."""
    import cv2

    out = Path(out)
    rng = np.random.default_rng(seed)

    def photo(text: str) -> np.ndarray:
        height, width = (int(v) for v in rng.integers(size * 3 // 4, size * 3 // 2 + 1, size=2))
        base = rng.integers(0, 256, size=3)
        image = np.clip(base + rng.normal(0, 25, size=(height, width, 3)), 0, 255).astype(np.uint8)
        scale = min(height, width) / 40 * rng.uniform(0.8, 1.1)
        (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 3)
        x = int(rng.integers(0, max(width - text_w, 0) + 1))
        y = int(rng.integers(min(text_h, height - 1), height))
        colour = tuple(int(255 - c) for c in base)  # opposite of the background, so the letter stays visible
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 3, cv2.LINE_AA)
        return image

    def write(path: Path, rgb: np.ndarray) -> None:
        ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode {path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())

    for letter in LETTER_FOLDERS:
        for i in range(per_letter):
            write(out / letter / f"{letter}{i}{'.jpg' if i % 2 == 0 else '.png'}", photo(letter))
    for i in range(2):
        write(out / "nothing" / f"nothing{i}.jpg", photo("-"))
    (out / "README.txt").write_text(f"Synthetic ASL photo folder (asl-mlops data synth-photos, seed {seed}): one "
                                    "folder per letter A-Y without J, letters drawn over noise, no hands.\n")
    return out


# ---------------------------------------------------------------------------------------------
# Download


def download(dataset: str, dest: str | Path) -> list[Path]:
    """Download a Kaggle dataset into dest: "sign-mnist" -> the two CSVs (asl_mlops.data.download);
    "asl-alphabet", "massey" -> a photo folder dest/<dataset>/<LETTER>/. Returns what it wrote."""
    from asl_mlops import data

    dest = Path(dest)
    if dataset == "sign-mnist":
        return data.download(dest)
    if dataset not in KAGGLE_PHOTO_SETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    handle, url = KAGGLE_PHOTO_SETS[dataset]
    downloaded = data.kaggle_dataset(handle, lambda reason: _download_help(handle, url, reason))
    return [layout_letter_folders(downloaded, dest / dataset)]


def _download_help(handle: str, url: str, reason: str) -> str:
    """One-line download failure message that says how to get photos anyway."""
    return (f"cannot download Kaggle dataset {handle}: {reason}. Check the network and set KAGGLE_USERNAME and "
            f"KAGGLE_KEY (or put kaggle.json in ~/.kaggle/), or download it manually from {url}, or pass your own "
            f"photo folder ({_EXPECTED})")


def layout_letter_folders(source_root: Path, dest: Path) -> Path:
    """Copy (hard-link where possible) the letter folders of a downloaded tree into dest/<LETTER>/ and return dest.

    The letter folders are those of the directory under source_root with the most of them (the shallowest on a
    tie: Massey's archive holds its folders twice, nested). J, Z and other folders are left out. dest appears
    whole or not at all: it is built beside dest and renamed, replacing an earlier dest."""
    source_root, dest = Path(source_root), Path(dest)
    best: tuple[int, int, str] | None = None
    parent: Path | None = None
    for folder in sorted([source_root, *(p for p in source_root.rglob("*") if p.is_dir())]):
        letters = sum(1 for p in folder.iterdir() if p.is_dir() and p.name.lower() in _LETTER_OF_NAME)
        if letters and (best is None or (-letters, len(folder.parts), str(folder)) < best):
            best, parent = (-letters, len(folder.parts), str(folder)), folder
    if parent is None:
        raise InputError(f"{source_root}: no letter folders (A, B, ... Y) anywhere in the downloaded dataset")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp"))
    old = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared data folder from others
        for folder in sorted(parent.iterdir()):
            letter = _LETTER_OF_NAME.get(folder.name.lower())
            if folder.is_dir() and letter:
                shutil.copytree(folder, tmp / letter, copy_function=_link_or_copy, dirs_exist_ok=True)
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".", suffix=".old"))
            os.rename(dest, old / dest.name)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / dest.name).exists() and not dest.exists():
            os.rename(old / dest.name, dest)  # put the earlier copy back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("%s: letter folders of %s", dest, parent)
    return dest


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a downloaded file (no second copy on disk); copy where links don't work (another filesystem)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
