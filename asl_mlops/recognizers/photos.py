"""The photo recognizer: a photo in, the letter its hand spells out (a `Recognizer`, asl_mlops.recognizers.base).

`PhotoRecognizer` bundles the hand model (MediaPipe's HandLandmarker bundle, an artifact, so serving needs no
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

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from asl_mlops.errors import InputError
from asl_mlops.recognizers.base import Reading, Recognizer, traced
from asl_mlops.recognizers.requests import predictions_frame

if TYPE_CHECKING:
    from mlflow.types import ColSpec

    from asl_mlops.hands.detector import Hand

NO_HAND = "no hand found"
NOT_SURE = "not sure"
INPUT_FORMS = {
    "images": "one column 'image': base64 PNG or JPEG photos, any size, colour or grayscale",
    "answer": "letter, label, confidence, top3, box (x, y, w, h as fractions of the photo) and reason "
              f"('', '{NOT_SURE}' or '{NO_HAND}': then letter is '' and label -1)",
}


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


def answer_rows(probabilities: np.ndarray, hands: list[Hand | None] | tuple[Hand | None, ...],
                not_sure_below: float = 0.0) -> pd.DataFrame:
    """Calibrated probabilities of the found hands (in order) and every photo's hand (None: not found) -> answer
    rows (the Sign MNIST recognizer's, asl_mlops.recognizers.requests.predictions_frame, with the hand's box and a
    reason); a found hand whose best letter is less than `not_sure_below` sure is answered "not sure"."""
    read = iter(predictions_frame(probabilities).to_dict("records"))
    rows: list[dict[str, Any]] = []
    for hand in hands:
        if hand is None:
            rows.append({"letter": "", "label": -1, "confidence": 0.0, "top3": [], "box": None, "reason": NO_HAND})
            continue
        row = next(read)
        x, y, w, h = hand.box
        sure = row["confidence"] >= not_sure_below
        rows.append({**row, "letter": row["letter"] if sure else "", "label": row["label"] if sure else -1,
                     "box": {"x": x, "y": y, "w": w, "h": h}, "reason": "" if sure else NOT_SURE})
    return pd.DataFrame(rows, columns=["letter", "label", "confidence", "top3", "box", "reason"])


class PhotoRecognizer(Recognizer):
    """Photos in, letters out: the hand model + the keypoint network."""

    packages = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "mediapipe", "opencv-contrib-python", "scipy")
    input_forms = INPUT_FORMS

    def __init__(self, temperature: float = 1.0, not_sure_below: float = 0.0) -> None:
        """The run's calibration (asl_mlops.hands.calibration): its softmax temperature, and the confidence below
        which a found hand is answered "not sure"."""
        super().__init__(resolved_architecture="keypoints", temperature=float(temperature),
                         not_sure_below=float(not_sure_below))

    def setup(self, artifacts: dict[str, str]) -> None:
        from asl_mlops.hands.detector import HandDetector

        self.detector = HandDetector(artifacts["hand_model"])
        self.temperature = float(self.config.get("temperature", 1.0))
        self.not_sure_below = float(self.config.get("not_sure_below", 0.0))
        model = self.model
        self._forward = traced(lambda x: model(x, training=False), (model.input_shape[-1],))

    def blank(self) -> list[np.ndarray]:
        return [np.zeros((64, 64, 3), dtype=np.uint8)]

    def inputs(self, request: Any) -> list[np.ndarray]:
        """RGB photos, any size."""
        return photos_from_frame(request)

    def read(self, inputs: list[np.ndarray]) -> Reading:
        """Calibrated probabilities (M, 24) of the M photos with a hand, and every photo's hand or None."""
        from asl_mlops.hands.calibration import tempered
        from asl_mlops.hands.keypoints import NUM_FEATURES, features

        hands = tuple(self.detector.detect(photo) for photo in inputs)
        found = [hand for hand in hands if hand is not None]
        x = features(found) if found else np.zeros((0, NUM_FEATURES), dtype=np.float32)
        return Reading(tempered(np.asarray(self._forward(x)), self.temperature),
                       np.array([hand is not None for hand in hands], dtype=bool), hands)

    def answers(self, reading: Reading) -> pd.DataFrame:
        return answer_rows(reading.probabilities, reading.hands, self.not_sure_below)

    @classmethod
    def more_outputs(cls) -> list[ColSpec]:
        from mlflow.types import ColSpec
        from mlflow.types.schema import Object, Property

        box = Object([Property(name, "double") for name in ("x", "y", "w", "h")])
        return [ColSpec(box, "box", required=False), ColSpec("string", "reason")]

    def artifacts(self) -> dict[str, str]:
        """The hand model (asl_mlops.hands.landmarker), so the served model finds hands with no network."""
        from asl_mlops.hands.landmarker import hand_model_path

        return {"hand_model": str(hand_model_path())}


def example_frame(photo: str | Path | None) -> pd.DataFrame | None:
    """A one-photo request (the model's input example), or None without a photo."""
    from asl_mlops.data.images import encode_image_file

    return pd.DataFrame({"image": [encode_image_file(photo)]}) if photo is not None else None
