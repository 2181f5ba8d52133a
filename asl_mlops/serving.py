"""Serving stage: the MLflow pyfunc model that `mlflow models serve` runs and `asl-mlops predict` calls.

Each training run logs ONE model, the recognizer (`LetterRecognizer`): the trained Keras network, which
takes raw 28x28 pixels and preprocesses them itself (asl_mlops.models), the request decoding below and
the label map, so a client sends raw data and gets letters back. Its `model_config` names the
architecture and whether test-time augmentation is on; `probabilities` gives the softmax outputs that
`asl-mlops evaluate` scores. A request is a DataFrame in one of two forms:

- **pixels**: columns `pixel1` .. `pixel784` (the Sign MNIST CSV layout; a `label` column, if sent, is
  ignored), one 28x28 image per row, row-major, integer values 0-255;
- **images**: one column `image`, each cell a base64-encoded PNG or JPEG of any size, colour or gray.

An encoded image becomes a 28x28 uint8 image by these steps (`decode_image`):

1. base64-decode (standard alphabet, strict); at most `MAX_IMAGE_BYTES` bytes.
2. Read width and height from the PNG IHDR chunk or the JPEG SOFn marker *without decoding*, and refuse
   anything that is not PNG/JPEG or has more than `MAX_IMAGE_PIXELS` pixels (decompression bombs: a
   few-kB PNG can declare gigapixels).
3. Refuse truncated files: a PNG must end with its IEND chunk, a JPEG needs an end-of-image marker
   after its scan.
4. `cv2.imdecode(..., IMREAD_GRAYSCALE)`: colour -> gray with OpenCV's BT.601 weights
   (0.299 R + 0.587 G + 0.114 B), alpha dropped, 16-bit scaled to 8-bit.
5. Pad the short side to a square, centred, by replicating the edge pixels (`cv2.BORDER_REPLICATE`):
   the hand keeps its aspect ratio and no black or white bars that Sign MNIST never shows appear.
6. `cv2.resize` to 28x28 with `INTER_AREA` (averages pixel areas: the right filter for shrinking).

Both forms then go through `asl_mlops.preprocess.to_model_input` into the network, as in training.
Each row of the answer has `letter`, `label` (Sign MNIST label 0-24), `confidence` (softmax probability
of that letter) and `top3` (the three most likely letters with probabilities).

Bad input raises `InputError` naming the row (counted from 0) and column; `LetterRecognizer.predict` re-raises it as
an `MlflowException` with error code BAD_REQUEST, which MLflow's scoring server answers with HTTP 400.

Why the signature declares outputs but no input schema: MLflow enforces a column schema column by
column, which for the 784 pixel columns costs 28 ms per request, single row or 32 (against 0.1 ms without
a schema; `python benchmarks/schema.py`, MLflow 3.17, 2 cores; the bar for declaring one is 2 ms), and it
silently drops columns it does not know, so a misspelt column could never be reported. The accepted inputs are
described in the model's metadata (`INPUT_FORMS`, visible in the MLmodel file and the MLflow UI) and
shown by its input example, and `predict` checks them itself.
"""

import base64
import binascii
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import mlflow.pyfunc
import numpy as np
import pandas as pd

from asl_mlops.errors import InputError
from asl_mlops.labels import LABELS, LETTERS
from asl_mlops.preprocess import IMAGE_SIZE, RAW_SHAPE, to_model_input

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

#: Sign MNIST pixel columns, in image order.
PIXEL_COLUMNS: tuple[str, ...] = tuple(f"pixel{i}" for i in range(1, 785))
IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"  # accepted and ignored, so CSV rows can be sent as they are
_KNOWN_COLUMNS = frozenset((*PIXEL_COLUMNS, IMAGE_COLUMN, LABEL_COLUMN))
#: Most rows per request: bounds memory and latency of one request (a 1024-row pixel batch is ~3 MB of JSON).
MAX_ROWS = 1024
#: Most pixels of one encoded image, read from its header before decoding (4096 x 4096 = 16.7 MP).
MAX_IMAGE_PIXELS = 4096 * 4096
#: Most bytes of one encoded image after base64 decoding.
MAX_IMAGE_BYTES = 16 * 1024 * 1024

#: What the model accepts, stored in the MLmodel metadata (see the module docstring for why not a schema).
INPUT_FORMS = {
    "pixels": "columns pixel1..pixel784 (integers 0-255, row-major 28x28); optional column 'label' is ignored",
    "images": "one column 'image': base64 PNG or JPEG, any size, colour or grayscale; "
              "gray -> pad to square (edge replicate) -> 28x28 (INTER_AREA)",
    "max_rows": str(MAX_ROWS),
    "max_image_pixels": str(MAX_IMAGE_PIXELS),
    "max_image_bytes": str(MAX_IMAGE_BYTES),
}
#: Packages the served model imports; pinned to the versions it was logged with.
SERVING_PACKAGES = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "opencv-contrib-python")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
# JPEG start-of-frame markers carry the image size (C4 = DHT, C8 = JPG, CC = DAC are not frames).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


# --- encoded images -> 28x28 uint8 -----------------------------------------------------------------

def image_header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from a PNG or JPEG header, without decoding; raises ValueError otherwise."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("truncated PNG (no IHDR header)")
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ValueError("corrupt JPEG (bad marker)")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                return "jpeg", int.from_bytes(data[pos + 7:pos + 9], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
            if marker == 0xDA or length < 2:  # start of scan before any frame header
                raise ValueError("corrupt JPEG (no frame header before the image data)")
            pos += 2 + length
        raise ValueError("truncated JPEG (no frame header)")
    raise ValueError("not a PNG or JPEG image")


def square_28(gray: np.ndarray) -> np.ndarray:
    """Pad a 2-D uint8 image to a centred square (edge replicate), then area-resize to 28x28."""
    import cv2

    height, width = gray.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = cv2.copyMakeBorder(gray, top, side - height - top, left, side - width - left, cv2.BORDER_REPLICATE)
    return cv2.resize(square, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)


def check_encoded_image(data: bytes) -> str:
    """The format ("png" or "jpeg") of bytes that are safe to decode: steps 2-3 of the module docstring (size
    limits from the header, no truncation). Raises ValueError with a short reason; every decoder calls it first."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image is {len(data)} bytes, more than the limit of {MAX_IMAGE_BYTES}")
    kind, width, height = image_header_size(data)
    if width < 1 or height < 1:
        raise ValueError(f"{kind.upper()} header declares an empty image ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image is {width}x{height} = {width * height} pixels, more than the limit of "
                         f"{MAX_IMAGE_PIXELS} (4096x4096)")
    if kind == "png" and not data.rstrip(b"\x00").endswith(_PNG_IEND):
        raise ValueError("truncated PNG (no IEND chunk at the end)")
    if kind == "jpeg":
        scan = data.find(b"\xff\xda")
        if scan < 0 or data.rfind(b"\xff\xd9") < scan:
            raise ValueError("truncated JPEG (no image data, or no end-of-image marker after it)")
    return kind


def decode_image(data: bytes) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> 28x28 uint8 gray image (steps 2-6 of the module docstring).

    Raises ValueError with a short reason; callers add where the bytes came from.
    """
    import cv2

    kind = check_encoded_image(data)
    gray = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None or gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"{kind.upper()} data could not be decoded (corrupt file)")
    return square_28(gray)


def decode_base64_image(text: object) -> np.ndarray:
    """A base64 string of a PNG/JPEG -> 28x28 uint8 image; ValueError with a short reason."""
    return decode_image(base64_bytes(text))


def base64_bytes(text: object) -> bytes:
    """The bytes of a request's base64 `image` cell (at most MAX_IMAGE_BYTES); ValueError with a short reason."""
    if not isinstance(text, str):
        shown = "null" if text is None or (isinstance(text, float) and np.isnan(text)) else type(text).__name__
        raise ValueError(f"expected a base64-encoded PNG or JPEG string, got {shown}")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ValueError(f"base64 text is longer than an image of {MAX_IMAGE_BYTES} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"not valid base64 ({err})") from None
    if not data:
        raise ValueError("empty image (no bytes after base64 decoding)")
    return data


def encode_image_file(path: str | Path) -> str:
    """Base64 text of an image file, as a request's `image` cell carries it."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


# --- request frame -> images ----------------------------------------------------------------------

def _pixel_rows(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Validate the pixel form (`columns`: the frame's column names); returns uint8 (N, 28, 28)."""
    present = set(columns)
    missing = [c for c in PIXEL_COLUMNS if c not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"pixel rows need all 784 columns pixel1..pixel784; missing column(s) {shown}")
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
    """Validate a request (either form, see the module docstring) and return its images, uint8 (N, 28, 28)."""
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


def with_preprocessing(network: Any) -> tuple[Any, str]:
    """A recognizer's network logged before the model owned its preprocessing (its model_config names no
    architecture; it takes preprocessed input) -> (the same network behind `asl_mlops.models`'
    preprocessing layers, so it takes raw pixels like every newer one, its architecture).

    A recognizer bundles its own asl_mlops (code_paths) and runs that code in a fresh process, but in one
    that has imported this asl_mlops first (`asl-mlops evaluate`, `predict`), this class loads it."""
    import keras

    from asl_mlops.models import RESNET50_SHAPE, preprocessing_layers
    from asl_mlops.preprocess import RAW_SHAPE

    # What those networks took: the cnn's shape was the raw one (scaled to [0, 1]), resnet50's its own.
    legacy_inputs = {RAW_SHAPE: "cnn", RESNET50_SHAPE: "resnet50"}
    shape = tuple(network.input_shape[1:])
    if shape not in legacy_inputs:
        raise ValueError(f"recognizer network with input shape {shape} and no architecture in its model_config")
    architecture = legacy_inputs[shape]
    inputs = keras.Input(RAW_SHAPE, name="image")
    return keras.Model(inputs, network(preprocessing_layers(architecture, inputs)), name=network.name), architecture


def traced_forward(model: "keras.Model", tta: bool) -> Callable[["tf.Tensor"], "tf.Tensor"]:
    """The recognizer's forward pass over raw-pixel batches (N, 28, 28, 1) float32: softmax (N, 24), the mean
    over the test-time views (asl_mlops.tta) when `tta`. One traced graph for every batch size (batches are at
    most MAX_ROWS, so no chunking). Measured on the cnn, 2 cores: 1.4 ms per single image against 10 ms for an
    eager model(x) call and ~20 ms for model.predict, which builds a tf.data pipeline per call."""
    import tensorflow as tf

    from asl_mlops.tta import mean_over_views, views_of

    def forward(x):
        if not tta:
            return model(x, training=False)
        return mean_over_views(model(views_of(x), training=False), tf.shape(x)[0])

    return tf.function(forward, input_signature=[tf.TensorSpec((None, *RAW_SHAPE), tf.float32)], autograph=False)


class LetterRecognizer(mlflow.pyfunc.PythonModel):
    """Raw pixels or encoded images in, letters out: the Keras network (raw pixels in) + label map."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from asl_mlops.quiet_import import import_tensorflow_quietly

        import_tensorflow_quietly()  # `mlflow models serve` would print TensorFlow's CUDA lookups on a CPU machine
        import keras

        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        config = context.model_config or {}
        # `resolved_architecture` since architecture 'auto'; `architecture` in models logged before it.
        self.architecture = config.get("resolved_architecture", config.get("architecture"))
        if self.architecture is None:  # logged before networks took raw pixels
            self.model, self.architecture = with_preprocessing(self.model)
        # Test-time augmentation (asl_mlops.tta), as the run measured it.
        self.tta = str(config.get("tta", False)).lower() == "true"
        self._forward = traced_forward(self.model, self.tta)
        self.probabilities(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))  # trace before the first request

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax outputs (N, 24) for uint8 images (N, 28, 28), as the network saw inputs in training."""
        return np.asarray(self._forward(to_model_input(images)), dtype=np.float64)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST

        try:
            images = images_from_frame(model_input)
        except InputError as err:  # the scoring server answers MlflowException(BAD_REQUEST) with HTTP 400
            raise MlflowException(str(err), error_code=BAD_REQUEST) from err
        return predictions_frame(self.probabilities(images))


def recognizer_signature() -> "mlflow.models.ModelSignature":
    """Output schema of `LetterRecognizer.predict` (inputs: see INPUT_FORMS and the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    top3 = Array(Object([Property("letter", "string"), Property("probability", "double")]))
    return ModelSignature(outputs=Schema([ColSpec("string", "letter"), ColSpec("long", "label"),
                                          ColSpec("double", "confidence"), ColSpec(top3, "top3")]))


def pixel_frame(images: np.ndarray) -> pd.DataFrame:
    """uint8 images (N, 28, 28) -> the pixel request form (columns pixel1..pixel784)."""
    return pd.DataFrame(np.asarray(images).reshape(len(images), -1).astype(np.int64), columns=list(PIXEL_COLUMNS))


def log_recognizer(keras_model: Any, example_images: np.ndarray, *, architecture: str, tta: bool = False,
                   name: str = "recognizer", step: int = 0) -> "mlflow.models.model.ModelInfo":
    """Log `LetterRecognizer` around `keras_model` (raw pixels in) to the active run; returns its ModelInfo.
    `step`: the run's step the model belongs to. MLflow copies the run's metrics of that step onto the model, so
    training passes the step after its last epoch, which no per-epoch value has.
    `model_config` records the architecture and `tta`: with it, the recognizer averages each prediction over
    asl_mlops.tta's views.

    Bundles the asl_mlops package as code_paths, so the served model runs this exact preprocessing
    even where asl_mlops is not installed. Writes the .keras file to a temporary folder first.
    """
    import asl_mlops
    from asl_mlops.tracking import pinned_requirements  # here: tracking imports Keras, which predict --endpoint avoids

    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "model.keras"
        keras_model.save(keras_path)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=LetterRecognizer(), artifacts={"keras_model": str(keras_path)},
            code_paths=[str(Path(asl_mlops.__file__).parent)], signature=recognizer_signature(),
            input_example=pixel_frame(example_images[:2]), pip_requirements=pinned_requirements(SERVING_PACKAGES),
            # Keys and values as the run's params spell them: MLflow also logs model_config as run params, which
            # must agree (the run's `architecture` may be 'auto'; `resolved_architecture` is what was trained).
            metadata={"input_forms": INPUT_FORMS}, model_config={"resolved_architecture": architecture,
                                                                 "tta": "true" if tta else "false"},
            step=step)
    return info
