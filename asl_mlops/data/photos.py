"""Photo folders as a data format, in three layouts: one sub-folder of PNG/JPEG photos per letter (as Kaggle's ASL
Alphabet and Massey sets and `keras.utils.image_dataset_from_directory` lay them out; one unknown signer), the same
inside one folder per signer, or letter folders with a `manifest.csv` naming each photo's signer. Accepted wherever
a Sign MNIST CSV is. Knowing who signed each photo lets validation hold out whole people (`split.signer_split`).

Loading checks every photo's header and hashes its bytes, but decodes nothing: decoding is per photo, later,
with `read_rgb`, so a cache keyed by `PhotoSet.file_hashes` can skip it. Bad input stops here with an
`InputError` naming the path (and, for a manifest, its line and column).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from asl_mlops.errors import InputError
from asl_mlops.labels import LETTERS, letter_to_label

logger = logging.getLogger(__name__)

#: Names of the letter folders, A-Y without J (J and Z need motion); matched case-insensitively.
LETTER_FOLDERS: tuple[str, ...] = LETTERS
#: Suffixes of photo files, matched case-insensitively; other files in a letter folder are skipped.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
#: A signer's name, as a signer folder or in the manifest: no spaces or path characters, so it is safe as a folder
#: name, an MLflow param value and a CSV field.
SIGNER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: The file beside the letter folders that names each photo's signer; its other columns are ignored.
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "letter", "signer")
#: How each layout is named in messages: plain letter folders, one folder per signer, or a manifest.
LAYOUTS: dict[str, str] = {"letters": "letter folders", "signers": "signer folders", "manifest": MANIFEST}
_LETTER_OF_NAME = {letter.lower(): letter for letter in LETTER_FOLDERS}
_EXPECTED = ("a folder with one sub-folder of PNG/JPEG photos per letter (A, B, ... Y without J; any case), either "
             "alone (one unknown signer), inside one folder per signer (DIR/<signer>/<LETTER>/), or beside a "
             "manifest.csv with columns path,letter,signer")
_SIGNER_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters"


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare content_hash instead
class PhotoSet:
    """The photos of a folder, their labels and signers; read-only so `content_hash` stays true."""

    root: str  # the folder as given
    paths: tuple[Path, ...]  # every photo, sorted by (letter, relative path)
    labels: np.ndarray  # int64 (N,) Sign MNIST labels (A=0 .. Y=24, never 9)
    file_hashes: tuple[str, ...]  # sha256 of each file's bytes: cache key for per-photo work
    skipped_folders: dict[str, int] = field(default_factory=dict)  # non-letter folder -> files under it
    signers: tuple[str, ...] = ()  # who signed each photo; "" = unknown (plain letter folders); () = all unknown
    layout: str = "letters"  # a key of LAYOUTS: where the signers came from

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.dtype != np.int64 or labels.shape != (len(self.paths),) or len(self.file_hashes) != len(self.paths):
            raise ValueError(f"need int64 labels and one hash per photo for {len(self.paths)} photos, got labels "
                             f"{labels.dtype} {labels.shape} and {len(self.file_hashes)} hashes")
        if not self.signers:
            object.__setattr__(self, "signers", ("",) * len(self.paths))
        if len(self.signers) != len(self.paths) or self.layout not in LAYOUTS:
            raise ValueError(f"need one signer per photo for {len(self.paths)} photos and a layout in "
                             f"{', '.join(LAYOUTS)}, got {len(self.signers)} signers and layout {self.layout!r}")
        view = labels.view()  # the caller's array keeps its flags, ours can't change under the hash
        view.flags.writeable = False
        object.__setattr__(self, "labels", view)

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def content_hash(self) -> str:
        """sha256 over (relative path, label, file hash, signer if known) of every photo: equal for the same photos
        anywhere, and for plain letter folders equal to what it was before signers existed."""
        digest = hashlib.sha256()
        for path, label, file_hash, signer in zip(self.paths, self.labels.tolist(), self.file_hashes, self.signers):
            signed = f"\0{signer}" if signer else ""
            digest.update(f"{_relative(path, self.root)}\0{label}\0{file_hash}{signed}\n".encode())
        return digest.hexdigest()

    @property
    def named_signers(self) -> tuple[str, ...]:
        """The known signers, sorted, each once; empty for plain letter folders."""
        return tuple(sorted({signer for signer in self.signers if signer}))

    def subset(self, indices: Sequence[int] | np.ndarray) -> PhotoSet:
        """The photos at `indices` (integers or a boolean mask), same root and layout: for splits."""
        index = np.asarray(indices)
        index = np.flatnonzero(index) if index.dtype == bool else index.astype(np.int64).reshape(-1)
        return PhotoSet(root=self.root, paths=tuple(self.paths[i] for i in index.tolist()),
                        labels=np.ascontiguousarray(self.labels[index]),
                        file_hashes=tuple(self.file_hashes[i] for i in index.tolist()),
                        skipped_folders=dict(self.skipped_folders),
                        signers=tuple(self.signers[i] for i in index.tolist()), layout=self.layout)


def _relative(path: Path, root: str | Path) -> str:
    """Path inside the root, with '/' on every OS, so the content hash does not depend on where the folder is."""
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------------------
# Loading and validation

_Photo = tuple[int, str, Path, str, str]  # (label, relative path, path, sha256, signer): sorts by letter, then path


def is_photo_folder(path: str | Path) -> bool:
    """True for an existing directory (photo folder); a Sign MNIST CSV is a file."""
    return Path(path).is_dir()


def load_photo_folder(path: str | Path) -> PhotoSet:
    """List, label, hash and attribute to signers the photos of a folder in any of the three layouts (a manifest.csv
    at the root wins; else signer folders if the root has no letter folders); raise InputError naming what is bad."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{path}: folder not found; expected {_EXPECTED}, or a Sign MNIST CSV file. "
                         f"Write a synthetic one with `asl-mlops data synth-photos --out data/photos`")
    if not root.is_dir():
        raise InputError(f"{path}: is not a folder; expected {_EXPECTED}")

    entries = sorted(root.iterdir())
    letter_dirs, others = _letter_folders(entries)
    if (root / MANIFEST).is_file():
        photos, skipped = _load_manifest(path, root, letter_dirs, others)
        layout = "manifest"
    else:
        signer_dirs = [(folder, inner) for folder in others
                       if (inner := _letter_folders(sorted(folder.iterdir()))[0])]
        if letter_dirs and signer_dirs:
            letters, signers = _first([f.name for _, f in letter_dirs], 5), _first([f.name for f, _ in signer_dirs], 5)
            raise InputError(f"{path}: mixes letter folders ({letters}) with signer folders that hold letter folders "
                             f"({signers}); use one layout: letter folders only (one unknown signer), one folder "
                             f"per signer (DIR/<signer>/<LETTER>/), or letter folders with a {MANIFEST} listing "
                             f"path,letter,signer")
        if signer_dirs:
            photos, skipped = _load_signer_folders(path, signer_dirs, others)
            layout = "signers"
        else:
            if not letter_dirs:
                raise InputError(f"{path}: no letter folders; expected {_EXPECTED}, found {_describe(entries)}")
            skipped = _count_files(others)
            _warn_skipped(path, skipped)
            photos = _scan_letter_folders([(letter, folder, "") for letter, folder in letter_dirs], root)
            layout = "letters"
    if not photos:
        raise InputError(f"{path}: no photos ({'/'.join(IMAGE_SUFFIXES)}) in any letter folder; expected {_EXPECTED}")

    photos.sort(key=lambda photo: photo[:2])
    return PhotoSet(root=str(path), paths=tuple(p[2] for p in photos),
                    labels=np.array([p[0] for p in photos], dtype=np.int64),
                    file_hashes=tuple(p[3] for p in photos), skipped_folders=skipped,
                    signers=tuple(p[4] for p in photos), layout=layout)


def _letter_folders(entries: list[Path]) -> tuple[list[tuple[str, Path]], list[Path]]:
    """The (letter, folder) pairs among `entries`, and the other folders; files are neither."""
    letters: list[tuple[str, Path]] = []
    others: list[Path] = []
    for entry in entries:
        if not entry.is_dir():
            continue  # a README or manifest beside the folders
        letter = _LETTER_OF_NAME.get(entry.name.lower())
        if letter is None:
            others.append(entry)
        else:
            letters.append((letter, entry))
    return letters, others


def _count_files(folders: list[Path], prefix: str = "") -> dict[str, int]:
    """Folder name (after `prefix`) -> files under it, for the skipped folders a PhotoSet reports."""
    return {prefix + folder.name: sum(1 for p in folder.rglob("*") if p.is_file()) for folder in folders}


def _warn_skipped(path: str | Path, skipped: dict[str, int]) -> None:
    if skipped:
        logger.warning("%s: skipped %d folder(s) that are not letters A-Y without J (J and Z need motion): %s",
                       path, len(skipped), ", ".join(f"{name} ({n} files)" for name, n in skipped.items()))


def _photo_hash(file: Path, where: str = "") -> str:
    """sha256 of a photo's bytes after the cheap header check (no decoding); InputError "<where><file>: <reason>"."""
    from asl_mlops.data.images import check_encoded_image

    try:
        data = file.read_bytes()
    except OSError as err:
        raise InputError(f"{where}{file}: cannot read ({err.strerror or err})") from None
    if not data:
        raise InputError(f"{where}{file}: empty file (0 bytes), not a PNG or JPEG image")
    try:
        check_encoded_image(data)  # header and end markers only: cheap, unlike decoding
    except ValueError as err:
        raise InputError(f"{where}{file}: {err}") from None
    return hashlib.sha256(data).hexdigest()


def _scan_letter_folders(folders: list[tuple[str, Path, str]], root: Path) -> list[_Photo]:
    """Every photo under each (letter, folder, signer); warns once about non-photo files, and per empty letter."""
    photos: list[_Photo] = []
    not_images: list[Path] = []
    for letter, folder, signer in folders:
        found = 0
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                not_images.append(file)
                continue
            photos.append((letter_to_label(letter), _relative(file, root), file, _photo_hash(file), signer))
            found += 1
        if not found:
            logger.warning("%s: no photos, letter %s has no training examples", folder, letter)
    if not_images:
        logger.warning("skipped %d file(s) that are not %s photos: %s", len(not_images), "/".join(IMAGE_SUFFIXES),
                       _first([str(p) for p in not_images], 5))
    return photos


def _load_signer_folders(path: str | Path, signer_dirs: list[tuple[Path, list[tuple[str, Path]]]],
                         others: list[Path]) -> tuple[list[_Photo], dict[str, int]]:
    """Photos of DIR/<signer>/<LETTER>/; the signer is the folder's name."""
    root = Path(path)
    # A root folder with no letter folders inside is skipped with a warning, not refused: it is a folder the
    # signer layout does not describe (a `nothing/` class, notes, checkpoints), as a non-letter folder is for
    # plain letter folders; the warning names it and `data validate` prints the signer count.
    signer_folders = {folder for folder, _ in signer_dirs}
    skipped = _count_files([folder for folder in others if folder not in signer_folders])
    for folder, _ in signer_dirs:
        if not SIGNER_PATTERN.fullmatch(folder.name):
            raise InputError(f"{folder}: {folder.name!r} is not a valid signer name ({_SIGNER_RULE}); "
                             f"rename the folder")
        skipped.update(_count_files(_letter_folders(sorted(folder.iterdir()))[1], prefix=f"{folder.name}/"))
    _warn_skipped(path, skipped)
    return _scan_letter_folders([(letter, letter_dir, folder.name) for folder, letter_dirs in signer_dirs
                                 for letter, letter_dir in letter_dirs], root), skipped


def _load_manifest(path: str | Path, root: Path, letter_dirs: list[tuple[str, Path]],
                   others: list[Path]) -> tuple[list[_Photo], dict[str, int]]:
    """Photos listed in manifest.csv (path,letter,signer; other columns ignored), each in its letter's folder.

    Errors name the manifest, its line (the header is line 1) and the column. Photos in the letter folders that
    the manifest does not list are skipped with a warning: a manifest may describe a chosen part of a folder."""
    manifest = root / MANIFEST
    skipped = _count_files(others)
    _warn_skipped(path, skipped)
    photos: list[_Photo] = []
    first_line: dict[str, int] = {}  # relative path -> the line that lists it
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise InputError(f"{manifest}: file is empty; expected a header with at least "
                                 f"{','.join(MANIFEST_COLUMNS)}")
            reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
            for column in MANIFEST_COLUMNS:
                if column not in reader.fieldnames:
                    raise InputError(f"{manifest}: line 1 (header): missing column {column!r}; expected at least "
                                     f"{','.join(MANIFEST_COLUMNS)} (found {','.join(reader.fieldnames)})")
            for row in reader:
                photos.append(_manifest_photo(manifest, reader.line_num, row, first_line))
    except UnicodeDecodeError as err:
        raise InputError(f"{manifest}: not a UTF-8 text CSV (byte {err.start}: {err.reason})") from None
    except csv.Error as err:
        raise InputError(f"{manifest}: cannot parse as CSV: {err}") from None
    if not photos:
        raise InputError(f"{manifest}: header only, no photos listed")

    listed_letters = {photo[0] for photo in photos}
    unlisted: list[str] = []
    for letter, folder in letter_dirs:
        if letter_to_label(letter) not in listed_letters:
            logger.warning("%s: no photos listed in %s, letter %s has no training examples", folder, MANIFEST, letter)
        unlisted.extend(relative for file in sorted(folder.rglob("*"))
                        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
                        and (relative := _relative(file, root)) not in first_line)
    if unlisted:
        logger.warning("%s: skipped %d photo(s) in the letter folders that %s does not list: %s", path,
                       len(unlisted), MANIFEST, _first(unlisted, 5))
    return photos, skipped


def _manifest_photo(manifest: Path, line: int, row: dict[str | None, str | None], first_line: dict[str, int]) -> _Photo:
    """One checked manifest row; records its path in `first_line` to find duplicates."""
    where = f"{manifest}: line {line}"

    def value(column: str) -> str:
        return (row.get(column) or "").strip()  # a short row has None for its missing fields

    raw_path = value("path")
    relative = PurePosixPath(raw_path)
    if not raw_path or relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{where}, column 'path': {raw_path!r} is not a path inside {manifest.parent} "
                         f"(expected e.g. A/photo1.jpg, with '/')")
    key = relative.as_posix()
    if key in first_line:
        raise InputError(f"{where}, column 'path': {key} is listed twice (first on line {first_line[key]})")
    first_line[key] = line
    letter = _LETTER_OF_NAME.get(value("letter").lower())
    if letter is None:
        raise InputError(f"{where}, column 'letter': {value('letter')!r} is not a letter A-Y without J")
    folder_letter = _LETTER_OF_NAME.get(relative.parts[0].lower()) if len(relative.parts) > 1 else None
    if folder_letter is None:
        raise InputError(f"{where}, column 'path': {key} is not in a letter folder beside {MANIFEST} "
                         f"(expected {letter}/...)")
    if folder_letter != letter:
        raise InputError(f"{where}: letter {letter} disagrees with the letter folder of {key}; move the photo or "
                         f"correct the letter")
    signer = value("signer")
    if not signer:
        raise InputError(f"{where}, column 'signer': empty; every photo needs the name of who signed it")
    if not SIGNER_PATTERN.fullmatch(signer):
        raise InputError(f"{where}, column 'signer': {signer!r} is not a valid signer name ({_SIGNER_RULE})")
    file = manifest.parent / key
    if not file.is_file():
        raise InputError(f"{where}, column 'path': {file}: file not found")
    return letter_to_label(letter), key, file, _photo_hash(file, where=f"{where}, column 'path': "), signer


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

    Raises ValueError with a short reason (the same guards as the served model's, asl_mlops.recognizers.requests)."""
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
