"""The Sign MNIST recognizer: 28x28 gray hands in, letters out (a `Recognizer`, asl_mlops.recognizers.base).

A Sign MNIST training run logs ONE model, this recognizer (`SignMnistRecognizer`): the trained Keras network, which
takes raw 28x28 pixels and preprocesses them itself (its first layers), the request decoding below and the label
map, so a client sends raw data and gets letters back. Its `model_config` names the architecture and whether
test-time augmentation is on; `read` gives the softmax outputs that `asl-mlops evaluate` scores. A request is a
DataFrame in one of two forms:

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

Bad input raises `InputError` naming the row (counted from 0) and column, which `predict` answers with HTTP 400
(asl_mlops.recognizers.base).

Why the signature declares outputs but no input schema: MLflow enforces a column schema column by
column, which for the 784 pixel columns costs 28 ms per request, single row or 32 (against 0.1 ms without
a schema; `python benchmarks/schema.py`, MLflow 3.17, 2 cores; the bar for declaring one is 2 ms), and it
silently drops columns it does not know, so a misspelt column could never be reported. The accepted inputs are
described in the model's metadata (`INPUT_FORMS`, visible in the MLmodel file and the MLflow UI) and
shown by its input example, and `predict` checks them itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from asl_mlops.data.sign_mnist import IMAGE_SIZE
from asl_mlops.recognizers.base import Reading, Recognizer, traced
from asl_mlops.recognizers.preprocess import RAW_SHAPE, to_model_input
from asl_mlops.recognizers.requests import INPUT_FORMS, images_from_frame, predictions_frame

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def traced_forward(model: keras.Model, tta: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    """The recognizer's forward pass over raw-pixel batches (N, 28, 28, 1) float32: softmax (N, 24), the mean
    over the test-time views (asl_mlops.recognizers.tta) when `tta`; one traced graph (base.traced)."""
    import tensorflow as tf

    from asl_mlops.recognizers.tta import mean_over_views, views_of

    def forward(x):
        if not tta:
            return model(x, training=False)
        return mean_over_views(model(views_of(x), training=False), tf.shape(x)[0])

    return traced(forward, RAW_SHAPE)


class SignMnistRecognizer(Recognizer):
    """Raw pixels or encoded images in, letters out: the Keras network (raw pixels in) + label map."""

    packages = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "opencv-contrib-python")
    input_forms = INPUT_FORMS

    def __init__(self, architecture: str, tta: bool = False) -> None:
        """`architecture`: the network's (a run's `resolved_architecture`); `tta`: average each prediction over
        asl_mlops.recognizers.tta's views, as the run measured it."""
        super().__init__(resolved_architecture=architecture, tta="true" if tta else "false")

    def setup(self, artifacts: dict[str, str]) -> None:
        self.architecture = self.config["resolved_architecture"]
        self.tta = str(self.config.get("tta", False)).lower() == "true"
        self._forward = traced_forward(self.model, self.tta)

    def blank(self) -> np.ndarray:
        return np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)

    def inputs(self, request: Any) -> np.ndarray:
        """uint8 images (N, 28, 28) of either request form."""
        return images_from_frame(request)

    def read(self, inputs: np.ndarray) -> Reading:
        """Softmax outputs (N, 24) for uint8 images (N, 28, 28), as the network saw inputs in training; every
        image is read."""
        probabilities = np.asarray(self._forward(to_model_input(inputs)), dtype=np.float64)
        return Reading(probabilities, np.ones(len(probabilities), dtype=bool))

    def answers(self, reading: Reading) -> pd.DataFrame:
        return predictions_frame(reading.probabilities)
