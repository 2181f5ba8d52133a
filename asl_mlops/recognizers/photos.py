"""The photo recognizer as an MLflow model: a photo in, the letter its hand spells out.

`HandRecognizer` bundles the hand model (MediaPipe's HandLandmarker bundle, an artifact, so serving needs no
network) and the trained keypoint network. Per photo: decode (asl_mlops.data.photos.decode_rgb, with the same size
guards as the Sign MNIST recognizer) -> find the hand (asl_mlops.hands) -> keypoint features
(asl_mlops.hands.keypoints, as in training) -> softmax over 24 letters.

Requests carry one column `image` of base64 PNG/JPEG photos (the Sign MNIST recognizer's image form). Each
answer row has `letter`, `label`, `confidence` and `top3` as the Sign MNIST recognizer's do, plus `box`, the
hand's box as fractions of the photo ({"x", "y", "w", "h"}, origin top-left), and `reason`:
- "" when a hand was found and the letter is named;
- "not sure" when a hand was found but its letter's confidence is below the model's threshold: `letter` is empty
  and `label` -1, while `confidence`, `top3` and `box` say what it saw;
- "no hand found" when none was: `letter` empty, `label` -1, `confidence` 0, `top3` and `box` empty.

The confidence is calibrated: the network's softmax at the temperature fitted on signers held out of training
(asl_mlops.hands.calibration), and the "not sure" threshold was chosen on the same signers. Both are in the
logged model's `model_config` (`temperature`, `not_sure_below`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from asl_mlops.errors import InputError
from asl_mlops.labels import LABELS, LETTERS

NO_HAND = "no hand found"
NOT_SURE = "not sure"
INPUT_FORMS = {
    "images": "one column 'image': base64 PNG or JPEG photos, any size, colour or grayscale",
    "answer": "letter, label, confidence, top3, box (x, y, w, h as fractions of the photo) and reason "
              f"('', '{NOT_SURE}' or '{NO_HAND}': then letter is '' and label -1)",
}
#: Packages the served model imports; pinned to the versions it was logged with.
SERVING_PACKAGES = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "mediapipe", "opencv-contrib-python",
                    "scipy")


def photos_from_frame(frame: Any) -> list[np.ndarray]:
    """Validate a request and decode its photos to RGB arrays; InputError naming the row and column."""
    from asl_mlops.data.images import base64_bytes
    from asl_mlops.data.photos import decode_rgb
    from asl_mlops.recognizers.requests import (
        IMAGE_COLUMN,
        check_batch_size,
        decoded_cells,
        request_table,
    )

    frame, columns = request_table(frame, "one column 'image'")
    if columns != [IMAGE_COLUMN]:
        pixel = any(c.startswith("pixel") for c in columns)
        raise InputError("this recognizer reads photos: send one column 'image' (base64 PNG or JPEG)"
                         + ("; Sign MNIST pixel rows are for the Sign MNIST recognizer" if pixel
                            else f", not {', '.join(repr(c) for c in columns[:5])}"))
    check_batch_size(len(frame))
    return decoded_cells(frame.iloc[:, 0].tolist(), lambda text: decode_rgb(base64_bytes(text)))


def answer_rows(probabilities: np.ndarray, hands: list[Any], not_sure_below: float = 0.0) -> pd.DataFrame:
    """Calibrated probabilities of the found hands (in order) and every photo's hand (None: not found) -> answer
    rows; a found hand whose best letter is less than `not_sure_below` sure is answered "not sure"."""
    rows: list[dict[str, Any]] = []
    found = iter(probabilities)
    for hand in hands:
        if hand is None:
            rows.append({"letter": "", "label": -1, "confidence": 0.0, "top3": [], "box": None, "reason": NO_HAND})
            continue
        p = next(found)
        order = np.argsort(-p, kind="stable")[:3]
        x, y, w, h = hand.box
        sure = p[order[0]] >= not_sure_below
        rows.append({"letter": LETTERS[order[0]] if sure else "", "label": LABELS[order[0]] if sure else -1,
                     "confidence": float(p[order[0]]),
                     "top3": [{"letter": LETTERS[i], "probability": float(p[i])} for i in order],
                     "box": {"x": x, "y": y, "w": w, "h": h}, "reason": "" if sure else NOT_SURE})
    return pd.DataFrame(rows, columns=["letter", "label", "confidence", "top3", "box", "reason"])


class HandRecognizer(mlflow.pyfunc.PythonModel):
    """Photos in, letters out: the hand model + the keypoint network."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from asl_mlops.quiet_import import import_tensorflow_quietly

        import_tensorflow_quietly()  # `mlflow models serve` would print TensorFlow's CUDA lookups on a CPU machine
        import keras

        from asl_mlops.hands.detector import HandDetector

        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        self.detector = HandDetector(context.artifacts["hand_model"])
        config = context.model_config or {}
        self.temperature = float(config.get("temperature", 1.0))
        self.not_sure_below = float(config.get("not_sure_below", 0.0))
        self._forward = _traced(self.model)
        self.probabilities_of([np.zeros((64, 64, 3), dtype=np.uint8)])  # trace and warm up before a request

    def probabilities_of(self, photos: list[np.ndarray]) -> tuple[np.ndarray, list[Any]]:
        """(calibrated probabilities (M, 24) of the M photos with a hand, every photo's hand or None)."""
        from asl_mlops.hands.calibration import tempered
        from asl_mlops.hands.keypoints import NUM_FEATURES, features

        hands = [self.detector.detect(photo) for photo in photos]
        found = [hand for hand in hands if hand is not None]
        x = features(found) if found else np.zeros((0, NUM_FEATURES), dtype=np.float32)
        return tempered(np.asarray(self._forward(x)), self.temperature), hands

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST

        try:
            photos = photos_from_frame(model_input)
        except InputError as err:  # the scoring server answers MlflowException(BAD_REQUEST) with HTTP 400
            raise MlflowException(str(err), error_code=BAD_REQUEST) from err
        return answer_rows(*self.probabilities_of(photos), not_sure_below=self.not_sure_below)


def _traced(model: Any) -> Any:
    """The network's forward pass as one traced graph for every batch size (a plain call is ~10x slower)."""
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False),
                       input_signature=[tf.TensorSpec((None, model.input_shape[-1]), tf.float32)], autograph=False)


def signature() -> "mlflow.models.ModelSignature":
    """Output schema of `HandRecognizer.predict` (inputs: INPUT_FORMS)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    top3 = Array(Object([Property("letter", "string"), Property("probability", "double")]))
    box = Object([Property(name, "double") for name in ("x", "y", "w", "h")])
    return ModelSignature(outputs=Schema([ColSpec("string", "letter"), ColSpec("long", "label"),
                                          ColSpec("double", "confidence"), ColSpec(top3, "top3"),
                                          ColSpec(box, "box", required=False), ColSpec("string", "reason")]))


def example_frame(photo: str | Path | None) -> pd.DataFrame | None:
    """A one-photo request (the model's input example), or None without a photo."""
    from asl_mlops.data.images import encode_image_file

    return pd.DataFrame({"image": [encode_image_file(photo)]}) if photo is not None else None


def log_hand_recognizer(keras_model: Any, hand_model: Path, example_photo: str | Path | None,
                        name: str = "recognizer", step: int = 0, temperature: float = 1.0,
                        not_sure_below: float = 0.0) -> "mlflow.models.model.ModelInfo":
    """Log `HandRecognizer` (the keypoint network and the hand model as artifacts, asl_mlops as code) to the
    active run, with its calibration (`temperature`, `not_sure_below`) in its model_config and `example_photo` as its
    input example (a photo with a hand: the gate's serving check times answering it); returns its ModelInfo.
    `step`: the run's step the model belongs to (asl_mlops.recognizers.sign_mnist.log_recognizer)."""
    import asl_mlops
    from asl_mlops.tracking import pinned_requirements

    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "model.keras"
        keras_model.save(keras_path)
        return mlflow.pyfunc.log_model(
            name=name, python_model=HandRecognizer(),
            artifacts={"keras_model": str(keras_path), "hand_model": str(hand_model)},
            code_paths=[str(Path(asl_mlops.__file__).parent)], signature=signature(),
            input_example=example_frame(example_photo), pip_requirements=pinned_requirements(SERVING_PACKAGES),
            metadata={"input_forms": INPUT_FORMS}, model_config={"resolved_architecture": "keypoints", "temperature": float(temperature),
                          "not_sure_below": float(not_sure_below)},
            step=step)
