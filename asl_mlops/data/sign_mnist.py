"""Data stage: load and validate Sign MNIST CSVs, write them, and fetch them from Kaggle (splits: asl_mlops.data.split).

Every later stage starts from a `Dataset` built here, so a malformed file stops at this boundary
with an `InputError` that names the file, line and column, instead of failing inside training.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import NoReturn, TextIO

import numpy as np
import pandas as pd

from asl_mlops.errors import InputError
from asl_mlops.files import atomic_write
from asl_mlops.labels import MAX_LABEL, UNUSED_LABEL, invalid_labels

#: Side of a Sign MNIST image: 28x28 gray pixels.
IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
LABEL_COLUMN = "label"
#: The pixel columns, in image (row-major) order.
PIXEL_COLUMNS: tuple[str, ...] = tuple(f"pixel{i}" for i in range(1, NUM_PIXELS + 1))
#: The exact Sign MNIST header, in order.
COLUMNS: tuple[str, ...] = (LABEL_COLUMN, *PIXEL_COLUMNS)
#: File names of the Kaggle dataset, which the CLI and MLproject expect under data/.
CSV_NAMES: tuple[str, ...] = ("sign_mnist_train.csv", "sign_mnist_test.csv")

# Spellings pandas reads as NaN by default; named in the message so "nan" isn't called "non-numeric".
_NA_TEXT = frozenset({"nan", "-nan", "+nan", "na", "n/a", "null", "none", "<na>", "nat", "#n/a", "#na",
                      "#n/a n/a", "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan"})
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_OTHER_DELIMITERS = (";", "\t", "|")


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare content_hash instead
class Dataset:
    """Sign MNIST images and labels, read-only so `content_hash` stays true."""

    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # int64 (N,) Sign MNIST labels 0-24, never 9
    source: str  # path (or generator) it came from

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got "
                             f"{self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} {self.labels.shape}")
        # Read-only views: the caller's arrays keep their flags, ours can't change under the hash.
        for name in ("images", "labels"):
            view = getattr(self, name).view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)

    def __len__(self) -> int:
        return len(self.labels)

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the parsed labels and pixels: equal for the same rows in .csv and .csv.gz."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_csv(path: str | Path) -> Dataset:
    """Load a Sign MNIST CSV (.csv or .csv.gz); raise InputError naming file, line and column."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError(f"{name}: file not found (expected a Sign MNIST CSV, or a photo folder with one sub-folder "
                         f"per letter). Get the Sign MNIST CSVs with `asl-mlops data download` "
                         f"(needs a Kaggle account), or write a synthetic set with `asl-mlops data synth --out "
                         f"data/synthetic` and pass its files (--train-data/--test-data, -P train_data=...)")
    if not path.is_file():
        raise InputError(f"{name}: is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{name}: file is empty (0 bytes); expected a header 'label,pixel1,...,pixel784' and data rows")

    with _decode_errors(name):
        head = _read_lines(path, 1, 2)
    if not head:
        raise InputError(f"{name}: file is empty; expected a header 'label,pixel1,...,pixel784' and data rows")
    _check_header(_split(head[0]), name)
    if len(head) < 2:
        raise InputError(f"{name}: header only, no data rows")
    # pandas silently turns a first data row with one field too many into an index column,
    # shifting every value; check that row ourselves before pandas sees it.
    first_problem = _row_problem(_split(head[1]))
    if first_problem:
        raise InputError(f"{name}: line 2, {first_problem}")

    frame = _read_frame(path, name)
    # Blank lines at the very end are harmless editor artefacts; elsewhere they are errors.
    blank = frame.isna().all(axis=1).to_numpy()
    n_rows = len(frame) - _trailing_true(blank)
    if n_rows == 0:
        raise InputError(f"{name}: header only, no data rows")
    frame = frame.iloc[:n_rows]

    table, bad_rows = _validate_frame(frame)
    if bad_rows.any():
        _raise_first_problem(path, name, int(np.argmax(bad_rows)) + 2)
    labels = np.ascontiguousarray(table[:, 0], dtype=np.int64)
    images = table[:, 1:].astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return Dataset(images=images, labels=labels, source=name)


def _read_frame(path: Path, name: str, nrows: int | None = None) -> pd.DataFrame:
    """Parse the file with pandas' C parser (the fast path); map parser errors to lines."""
    try:
        with warnings.catch_warnings():
            # Mixed-type and length warnings only ever accompany an error we report ourselves.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            with _decode_errors(name):
                return pd.read_csv(path, skip_blank_lines=False, index_col=False, engine="c", nrows=nrows)
    except pd.errors.ParserError as err:
        # e.g. "Expected 785 fields in line 7, saw 786"; pandas counts the header as line 1, as we do.
        match = re.search(r"in line (\d+)", str(err))
        if not match:
            raise InputError(f"{name}: cannot parse as CSV: {str(err).strip()}") from None
        line_number = int(match.group(1))
    # pandas stops at the first over-long row; report an earlier bad row first if there is one.
    _, bad_rows = _validate_frame(_read_frame(path, name, nrows=line_number - 2))
    _raise_first_problem(path, name, int(np.argmax(bad_rows)) + 2 if bad_rows.any() else line_number)


def _validate_frame(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return the values as an int64 (N, 785) table and a mask of rows with any invalid cell."""
    if all(dtype == np.int64 for dtype in frame.dtypes):
        # Fast path: every cell parsed as an integer, only ranges are left to check.
        table = frame.to_numpy(dtype=np.int64)
        labels, pixels = table[:, 0], table[:, 1:]
        bad = invalid_labels(labels)
        bad |= (pixels < 0).any(axis=1) | (pixels > 255).any(axis=1)
        return table, bad
    # Something is not an integer (blank, NaN, text, fraction, overflow): pandas 3 gives float64,
    # str or object columns. Coerce everything to float; the mask then only locates the first row.
    numeric = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    labels, pixels = numeric[:, 0], numeric[:, 1:]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numeric).all(axis=1) | (numeric != np.round(numeric)).any(axis=1)
        bad |= invalid_labels(labels)
        bad |= (pixels < 0).any(axis=1) | (pixels > 255).any(axis=1)
    table = np.where(bad[:, None], 0, np.nan_to_num(numeric)).astype(np.int64)
    return table, bad


def _raise_first_problem(path: Path, name: str, line_number: int) -> NoReturn:
    """Re-read one raw line and raise an InputError that says exactly what is wrong with it."""
    with _decode_errors(name):
        lines = _read_lines(path, line_number, 1)
    problem = _row_problem(_split(lines[0])) if lines else "line is missing"
    # The vectorised check and the raw check agree on every case we know; say so if they don't.
    raise InputError(f"{name}: line {line_number}, {problem or 'row could not be parsed as 785 integers'}")


def _row_problem(fields: list[str]) -> str | None:
    """Describe the first invalid field of one raw data row, or None if the row is valid."""
    if len(fields) <= 1 and not "".join(fields).strip():
        return "blank line (expected 785 comma-separated values)"
    delimiter = _other_delimiter(fields)
    if delimiter:
        return f"wrong delimiter {delimiter!r}: values must be separated by ','"
    if len(fields) < len(COLUMNS):
        return (f"column {COLUMNS[len(fields)]}: row is truncated, it has {len(fields)} fields "
                f"but {len(COLUMNS)} are expected")
    if len(fields) > len(COLUMNS):
        return (f"too many fields: {len(fields)} instead of {len(COLUMNS)} "
                f"(extra value {fields[len(COLUMNS)]!r} after pixel784)")
    for column, raw in zip(COLUMNS, fields):
        problem = _cell_problem(column, raw.strip())
        if problem:
            return f"column {column}: {problem}"
    return None


def _cell_problem(column: str, text: str) -> str | None:
    """Describe why one cell is not a valid label or pixel, or None if it is valid."""
    if text == "":
        return "blank cell (every cell needs an integer)"
    if text.lower() in _NA_TEXT:
        return f"value {text!r} is NaN/missing (every cell needs an integer)"
    if not _NUMBER.fullmatch(text):
        return f"non-numeric value {text!r}"
    value = float(text)
    if not value.is_integer():
        return f"value {text} is not an integer"
    if column == LABEL_COLUMN:
        if value == UNUSED_LABEL:
            return (f"label {UNUSED_LABEL} = J is not in Sign MNIST (J needs motion); labels are 0-{MAX_LABEL} "
                    f"except {UNUSED_LABEL}")
        if not 0 <= value <= MAX_LABEL:
            return f"label {text} is outside 0-{MAX_LABEL}"
    elif not 0 <= value <= 255:
        return f"value {text} is outside 0-255"
    return None


def _check_header(fields: list[str], name: str) -> None:
    """Raise InputError naming the first header column that differs from label,pixel1..pixel784."""
    names = [field.strip() for field in fields]
    delimiter = _other_delimiter(names)
    if delimiter:
        raise InputError(f"{name}: line 1 (header): wrong delimiter {delimiter!r}: "
                         f"columns must be separated by ','")
    expected = set(COLUMNS)
    for position, (got, want) in enumerate(zip(names, COLUMNS), start=1):
        if got == want:
            continue
        where = f"{name}: line 1 (header), column {position}"
        if got not in expected and want in names:
            raise InputError(f"{where}: unexpected extra column {got!r} (expected {want!r})")
        if got not in expected:
            raise InputError(f"{where}: column is named {got!r}, expected {want!r}")
        if want not in names:
            raise InputError(f"{where}: missing column {want!r} (found {got!r})")
        raise InputError(f"{where}: column {got!r} is out of order (expected {want!r})")
    if len(names) > len(COLUMNS):
        raise InputError(f"{name}: line 1 (header), column {len(COLUMNS) + 1}: unexpected extra column "
                         f"{names[len(COLUMNS)]!r} (expected {len(COLUMNS)} columns ending with pixel784)")
    if len(names) < len(COLUMNS):
        raise InputError(f"{name}: line 1 (header), column {len(names) + 1}: missing column "
                         f"{COLUMNS[len(names)]!r} (header has {len(names)} of {len(COLUMNS)} columns)")


def _other_delimiter(fields: list[str]) -> str | None:
    """The delimiter a one-field line was evidently written with (';', tab or '|'), if any."""
    if len(fields) != 1:
        return None
    counts = {d: fields[0].count(d) for d in _OTHER_DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] > 0 else None


def _split(line: str) -> list[str]:
    """Split one raw CSV line into fields, honouring quotes as pandas does."""
    return next(csv.reader([line]), [])


def _trailing_true(mask: np.ndarray) -> int:
    """Number of True values at the end of a boolean array."""
    false_positions = np.flatnonzero(~mask)
    return len(mask) if false_positions.size == 0 else len(mask) - 1 - int(false_positions[-1])


def _open_text(path: Path) -> TextIO:
    """Open a .csv or .csv.gz as text; utf-8-sig drops a BOM that spreadsheet exports add."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_lines(path: Path, start: int, count: int) -> list[str]:
    """Lines start..start+count-1 (1-based, header = 1) without their line endings."""
    with _open_text(path) as handle:
        return [line.rstrip("\r\n") for line in islice(handle, start - 1, start - 1 + count)]


@contextmanager
def _decode_errors(name: str) -> Iterator[None]:
    """Turn unreadable bytes (bad gzip, binary data) into an InputError naming the file."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputError(f"{name}: not a readable gzip file ({err})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{name}: not a UTF-8 text CSV (byte {err.start}: {err.reason})") from None


# ---------------------------------------------------------------------------------------------
# Writing


def write_csv(data: Dataset | tuple[np.ndarray, np.ndarray], path: str | Path) -> Path:
    """Write images and labels in the exact Sign MNIST format; gzip if the path ends in .gz."""
    images, labels = (data.images, data.labels) if isinstance(data, Dataset) else data
    images = np.asarray(images).reshape(len(images), -1)
    labels = np.asarray(labels).reshape(-1)
    if images.shape != (len(labels), NUM_PIXELS):
        raise ValueError(f"expected images (N, {IMAGE_SIZE}, {IMAGE_SIZE}) or (N, "
                         f"{NUM_PIXELS}) for {len(labels)} labels, got {images.shape}")
    table = np.concatenate([labels[:, None], images], axis=1).astype(np.int64)
    if table.size and (table.min() < 0 or table.max() > 255):
        raise ValueError("labels and pixels must be integers 0-255")

    # A lookup of the 256 possible cell strings is ~5x faster than str() per cell or to_csv.
    cell = [str(v) for v in range(256)]
    text = "\n".join([",".join(COLUMNS)] + [",".join([cell[v] for v in row]) for row in table.tolist()]) + "\n"

    path = Path(path)
    with atomic_write(path) as raw:  # readers never see a half-written file
        if path.suffix == ".gz":
            # mtime=0 and no file name make the .gz bytes reproducible for the same rows.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                gz.write(text.encode("ascii"))
        else:
            raw.write(text.encode("ascii"))
    return path
