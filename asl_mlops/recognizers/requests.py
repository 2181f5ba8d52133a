"""Request tables to model input (pixel columns or encoded images), and the answers table.
"""

from typing import Any, Callable

import numpy as np
import pandas as pd

from asl_mlops.data.images import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    decode_base64_image,
)
from asl_mlops.data.sign_mnist import IMAGE_SIZE, LABEL_COLUMN, PIXEL_COLUMNS
from asl_mlops.errors import InputError
from asl_mlops.labels import LABELS, LETTERS

IMAGE_COLUMN = "image"
# LABEL_COLUMN is accepted and ignored, so CSV rows can be sent as they are.
_KNOWN_COLUMNS = frozenset((*PIXEL_COLUMNS, IMAGE_COLUMN, LABEL_COLUMN))
#: Most rows per request: bounds memory and latency of one request (a 1024-row pixel batch is ~3 MB of JSON).
MAX_ROWS = 1024

#: What the model accepts, stored in the MLmodel metadata (asl_mlops.recognizers.sign_mnist says why not a schema).
INPUT_FORMS = {
    "pixels": "columns pixel1..pixel784 (integers 0-255, row-major 28x28); optional column 'label' is ignored",
    "images": "one column 'image': base64 PNG or JPEG, any size, colour or grayscale; "
              "gray -> pad to square (edge replicate) -> 28x28 (INTER_AREA)",
    "max_rows": str(MAX_ROWS),
    "max_image_pixels": str(MAX_IMAGE_PIXELS),
    "max_image_bytes": str(MAX_IMAGE_BYTES),
}


# --- request frame -> images ----------------------------------------------------------------------

def _pixel_rows(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Validate the pixel form (`columns`: the frame's column names); returns uint8 (N, 28, 28)."""
    present = set(columns)
    missing = [c for c in PIXEL_COLUMNS if c not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"pixel rows need all {len(PIXEL_COLUMNS)} columns "
                         f"{PIXEL_COLUMNS[0]}..{PIXEL_COLUMNS[-1]}; missing column(s) {shown}")
    # The common request has exactly the pixel columns in order: no reindexing (a 784-column copy) then.
    pixels = frame if tuple(columns) == PIXEL_COLUMNS else frame.loc[:, list(PIXEL_COLUMNS)]
    values = pixels.to_numpy()
    if values.dtype.kind not in "iuf":  # object (strings, nulls), bool, ...: find the first bad cell
        for col_index, column in enumerate(PIXEL_COLUMNS):
            for row, value in enumerate(pixels.iloc[:, col_index].tolist()):
                if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                    shown = "null" if value is None else repr(value)[:40]
                    raise InputError(f"row {row}, column {column}: {shown} is not a number (pixel values are 0-255)")
        values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(f"row {row}, column {PIXEL_COLUMNS[col]}: value is missing, NaN or infinite "
                         "(each row needs 784 numbers 0-255)")
    bad = (values < 0) | (values > 255) | (values != np.round(values))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"row {row}, column {PIXEL_COLUMNS[col]}: {values[row, col]:g} is not an integer 0-255")
    return values.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def decoded_cells(cells: list[Any], decode: Callable[[Any], Any]) -> list[Any]:
    """`decode` of each `image` cell; its ValueError becomes an InputError naming the row and column."""
    decoded = []
    for row, text in enumerate(cells):
        try:
            decoded.append(decode(text))
        except ValueError as err:
            raise InputError(f"row {row}, column {IMAGE_COLUMN}: {err}") from None
    return decoded


def _image_rows(frame: pd.DataFrame) -> np.ndarray:
    """Decode the image form; returns uint8 (N, 28, 28)."""
    return np.stack(decoded_cells(frame[IMAGE_COLUMN].tolist(), decode_base64_image)).astype(np.uint8, copy=False)


def request_table(frame: Any, expected: str) -> tuple[pd.DataFrame, list[str]]:
    """A request as a DataFrame and its column names as text; InputError if it is not a table (`expected` says
    which columns to send)."""
    if isinstance(frame, dict):
        try:
            frame = pd.DataFrame(frame)
        except (ValueError, TypeError) as err:
            raise InputError(f"input is not a table of rows: {err}") from None
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"input must be a table (dataframe_split or dataframe_records) with {expected}; "
                         f"got {type(frame).__name__}")
    # tolist() first: iterating pandas' Arrow-backed column index name by name costs ~0.5 ms for 784 names.
    return frame, [str(c) for c in frame.columns.tolist()]


def check_batch_size(rows: int) -> None:
    """InputError for an empty batch or one over MAX_ROWS."""
    if rows == 0:
        raise InputError("empty batch: send at least one row")
    if rows > MAX_ROWS:
        raise InputError(f"batch of {rows} rows is larger than the limit of {MAX_ROWS} rows per request")


def images_from_frame(frame: Any) -> np.ndarray:
    """Validate a request (either form: asl_mlops.recognizers.sign_mnist) and return its images, uint8 (N, 28, 28)."""
    frame, columns = request_table(frame, "columns pixel1..pixel784 or image")
    unknown = [c for c in columns if c not in _KNOWN_COLUMNS]
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InputError(f"unknown column(s) {shown}: send columns pixel1..pixel784 (optionally label) "
                         "or a single column image")
    if len(set(columns)) != len(columns):
        raise InputError("duplicate column names")
    has_image = IMAGE_COLUMN in columns
    if has_image and any(c.startswith("pixel") for c in columns):
        raise InputError("mixed input forms: send either pixel1..pixel784 columns or an image column, not both")
    check_batch_size(len(frame))
    if frame.columns.tolist() != columns:  # names that were not strings (e.g. from dataframe_records)
        frame = frame.set_axis(columns, axis=1)
    return _image_rows(frame) if has_image else _pixel_rows(frame, columns)


# --- probabilities -> answer ----------------------------------------------------------------------

def predictions_frame(probabilities: np.ndarray) -> pd.DataFrame:
    """Softmax outputs (N, 24) -> one row per image: letter, label, confidence, top3."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
    best = order[:, 0]
    return pd.DataFrame({
        "letter": [LETTERS[i] for i in best],
        "label": [LABELS[i] for i in best],
        "confidence": probabilities[np.arange(len(best)), best].astype(float),
        "top3": [[{"letter": LETTERS[i], "probability": float(p[i])} for i in row] for p, row in zip(probabilities, order)],
    })


def pixel_frame(images: np.ndarray) -> pd.DataFrame:
    """uint8 images (N, 28, 28) -> the pixel request form (columns pixel1..pixel784)."""
    return pd.DataFrame(np.asarray(images).reshape(len(images), -1).astype(np.int64), columns=list(PIXEL_COLUMNS))
