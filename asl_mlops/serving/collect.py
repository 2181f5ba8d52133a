"""Teach mode's photo store: `asl-mlops serve --collect-dir DIR` keeps the photos a person shows the page, one
letter at a time, as `DIR/<name>/<LETTER>/<time>.jpg`: the signer-folder layout of photo sets
(asl_mlops.data.photos), so the folder is training data as it is (`asl-mlops teach DIR/<name>`).

Every check runs before anything is written, and a photo is written under a hidden name and renamed into place,
so a refused or interrupted upload leaves no file behind. One lock (a file beside the folder, flock) orders the
count-then-write of all worker processes, so the per-person limit holds under concurrent uploads.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asl_mlops.data.photos import IMAGE_SUFFIXES, SIGNER_PATTERN
from asl_mlops.labels import LETTERS

#: Largest photo accepted, in bytes (a 1920x1080 camera frame as JPEG is ~0.3-1 MB).
MAX_PHOTO_BYTES = 8 * 1024 * 1024
#: Content types of an upload: the photo's bytes as they are.
PHOTO_TYPES = ("image/jpeg", "image/png")
#: What to sign for each letter, in a few words (shown by the page's teach mode).
HANDSHAPES: dict[str, str] = {
    "A": "a fist, the thumb against the side of the index finger",
    "B": "a flat hand, fingers together and up, the thumb folded across the palm",
    "C": "the hand curved like the letter C",
    "D": "the index finger up; the other fingertips touch the thumb in a circle",
    "E": "the fingertips bent down to the thumb, folded across the palm",
    "F": "index finger and thumb touch in a circle; the other three fingers up and apart",
    "G": "index finger and thumb point sideways, parallel; the other fingers folded",
    "H": "index and middle fingers point sideways together; the others folded",
    "I": "the little finger up; the others in a fist",
    "K": "index and middle fingers up in a V, the thumb between them",
    "L": "the index finger up and the thumb out: an L",
    "M": "three fingers folded over the thumb",
    "N": "two fingers folded over the thumb",
    "O": "all fingertips touch the thumb in an O",
    "P": "a K pointing down",
    "Q": "a G pointing down",
    "R": "index and middle fingers crossed",
    "S": "a fist, the thumb across the front of the fingers",
    "T": "a fist, the thumb between the index and middle fingers",
    "U": "index and middle fingers up together",
    "V": "index and middle fingers up and apart",
    "W": "index, middle and ring fingers up and apart",
    "X": "the index finger bent like a hook; the others in a fist",
    "Y": "thumb and little finger out; the others folded",
}
NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters, not a single letter"


class CollectError(Exception):
    """An upload the store refuses: HTTP status, error code and a message naming the field."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def check_name(name: str | None) -> str:
    """A person's name as a folder name; CollectError (400) naming the rule otherwise."""
    if not name:
        raise CollectError(400, "BAD_REQUEST", "name: missing; give the person's name as ?name=...")
    if not SIGNER_PATTERN.fullmatch(name) or (len(name) == 1 and name.isalpha()):
        raise CollectError(400, "BAD_REQUEST", f"name {name[:80]!r} is not allowed: use {NAME_RULE}")
    return name


def check_letter(letter: str | None) -> str:
    """A letter A-Y without J; CollectError (400) otherwise."""
    if not letter:
        raise CollectError(400, "BAD_REQUEST", "letter: missing; give one of A-Y without J as ?letter=...")
    if letter.upper() not in LETTERS:
        raise CollectError(400, "BAD_REQUEST", f"letter {letter[:20]!r} is not one of the 24 letters A-Y without J "
                                               "(J and Z need motion)")
    return letter.upper()


def as_jpeg(body: bytes, content_type: str | None) -> bytes:
    """The photo as JPEG bytes: a JPEG as it came, a PNG re-encoded; CollectError (415/413/400) naming what is
    wrong (content type, size, or why it does not decode)."""
    import cv2

    from asl_mlops.data.photos import decode_rgb

    mime = (content_type or "").split(";")[0].strip().lower()
    if mime not in PHOTO_TYPES:
        raise CollectError(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {content_type or '(none)'!r}: send the "
                                                          f"photo's bytes as {' or '.join(PHOTO_TYPES)}")
    if len(body) > MAX_PHOTO_BYTES:
        raise CollectError(413, "REQUEST_TOO_LARGE", f"photo of {len(body)} bytes is larger than the limit of "
                                                     f"{MAX_PHOTO_BYTES} bytes")
    try:
        rgb = decode_rgb(body)
    except ValueError as err:
        raise CollectError(400, "BAD_REQUEST", f"photo: {err}") from None
    if body.startswith(b"\xff\xd8"):
        return body
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@dataclass(frozen=True)
class PhotoStore:
    """The teach-mode folder: `DIR/<name>/<LETTER>/<time>.jpg`, at most `max_photos` per person."""

    root: Path
    max_photos: int = 500

    def counts(self, name: str) -> dict[str, int]:
        """Photos kept of each letter of `name` (letters with none are left out)."""
        person = self.root / check_name(name)
        return {letter: n for letter in LETTERS
                if (n := sum(1 for p in (person / letter).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                             and not p.name.startswith(".")))}

    def info(self, name: str | None = None) -> dict[str, object]:
        """What the page needs to walk a person through: letters, handshapes, limits (and `name`'s counts)."""
        info: dict[str, object] = {"letters": list(LETTERS), "handshapes": HANDSHAPES,
                                   "max_photos_per_person": self.max_photos, "max_photo_bytes": MAX_PHOTO_BYTES,
                                   "name_rule": NAME_RULE}
        if name is not None:
            counts = self.counts(name)
            info.update(name=name, counts=counts, photos=sum(counts.values()))
        return info

    def add(self, name: str | None, letter: str | None, body: bytes, content_type: str | None) -> dict[str, object]:
        """Check everything, then keep one photo of `letter` by `name`; returns its path (relative to the
        folder) and the person's photo count. CollectError, with nothing written, if anything is wrong."""
        name, letter = check_name(name), check_letter(letter)
        photo = as_jpeg(body, content_type)
        with self._lock():
            total = sum(self.counts(name).values())
            if total >= self.max_photos:
                raise CollectError(409, "TOO_MANY_PHOTOS", f"{name} already has {total} photos, the limit of this "
                                                           f"server (--collect-max-photos {self.max_photos})")
            folder = self.root / name / letter
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{datetime.now(UTC):%Y%m%d-%H%M%S-%f}-{secrets.token_hex(2)}"
            final = folder / f"{stem}.jpg"
            partial = folder / f".{stem}.part"
            try:
                partial.write_bytes(photo)
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
        return {"name": name, "letter": letter, "path": f"{name}/{letter}/{final.name}", "photos": total + 1}

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """An exclusive lock shared by every process serving this folder (outside it: it is training data)."""
        key = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        with open(Path(tempfile.gettempdir()) / f"asl-mlops-collect-{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
