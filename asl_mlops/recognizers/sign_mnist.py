"""Serving stage: the MLflow pyfunc model that `mlflow models serve` runs and `asl-mlops predict` calls.

Each training run logs ONE model, the recognizer (`LetterRecognizer`): the trained Keras network, which
takes raw 28x28 pixels and preprocesses them itself (asl_mlops.training.models), the request decoding below and
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

Both forms then go through `asl_mlops.recognizers.preprocess.to_model_input` into the network, as in training.
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

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import mlflow.pyfunc
import numpy as np
import pandas as pd

from asl_mlops.data.sign_mnist import IMAGE_SIZE
from asl_mlops.errors import InputError
from asl_mlops.recognizers.requests import (
    INPUT_FORMS,
    images_from_frame,
    pixel_frame,
    predictions_frame,
)
from asl_mlops.recognizers.preprocess import RAW_SHAPE, to_model_input

if TYPE_CHECKING:
    import keras
    import tensorflow as tf
#: Packages the served model imports; pinned to the versions it was logged with.
SERVING_PACKAGES = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "opencv-contrib-python")


def traced_forward(model: "keras.Model", tta: bool) -> Callable[["tf.Tensor"], "tf.Tensor"]:
    """The recognizer's forward pass over raw-pixel batches (N, 28, 28, 1) float32: softmax (N, 24), the mean
    over the test-time views (asl_mlops.recognizers.tta) when `tta`. One traced graph for every batch size (batches are at
    most MAX_ROWS, so no chunking). Measured on the cnn, 2 cores: 1.4 ms per single image against 10 ms for an
    eager model(x) call and ~20 ms for model.predict, which builds a tf.data pipeline per call."""
    import tensorflow as tf

    from asl_mlops.recognizers.tta import mean_over_views, views_of

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
        self.architecture = config["resolved_architecture"]
        # Test-time augmentation (asl_mlops.recognizers.tta), as the run measured it.
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


def log_recognizer(keras_model: Any, example_images: np.ndarray, *, architecture: str, tta: bool = False,
                   name: str = "recognizer", step: int = 0) -> "mlflow.models.model.ModelInfo":
    """Log `LetterRecognizer` around `keras_model` (raw pixels in) to the active run; returns its ModelInfo.
    `step`: the run's step the model belongs to. MLflow copies the run's metrics of that step onto the model, so
    training passes the step after its last epoch, which no per-epoch value has.
    `model_config` records the architecture and `tta`: with it, the recognizer averages each prediction over
    asl_mlops.recognizers.tta's views.

    Bundles the asl_mlops package as code_paths, so the served model runs this exact preprocessing
    even where asl_mlops is not installed. Writes the .keras file to a temporary folder first.
    """
    import asl_mlops
    from asl_mlops.tracking import (
        pinned_requirements,  # here: tracking imports Keras, which predict --endpoint avoids
    )

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
