"""The one recognizer contract (asl_mlops.recognizers.base): loading, the request-to-answer path, bad requests,
the signature and logging are written once; a recognizer says only how a request becomes probabilities."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from asl_mlops.errors import InputError
from asl_mlops.labels import NUM_CLASSES
from asl_mlops.recognizers.base import Reading, Recognizer, traced
from asl_mlops.recognizers.photos import PhotoRecognizer
from asl_mlops.recognizers.requests import predictions_frame
from asl_mlops.recognizers.sign_mnist import SignMnistRecognizer


class LetterNumbers(Recognizer):
    """A third recognizer, as small as one can be: column `number` (0-23) names a letter; the network is a softmax
    over sharp one-hot logits."""

    packages = ("mlflow", "numpy")
    input_forms = {"numbers": "one column 'number': integers 0-23"}

    def setup(self, artifacts: dict[str, str]) -> None:
        model = self.model
        self.sharpness = float(self.config["sharpness"])
        self._forward = traced(lambda x: model(x, training=False), (NUM_CLASSES,))

    def blank(self) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)

    def inputs(self, request: Any) -> np.ndarray:
        numbers = request["number"].to_numpy()
        if ((numbers < 0) | (numbers >= NUM_CLASSES)).any():
            raise InputError(f"column number: values must be 0-{NUM_CLASSES - 1}")
        return numbers

    def read(self, inputs: np.ndarray) -> Reading:
        logits = np.eye(NUM_CLASSES, dtype=np.float32)[inputs] * self.sharpness
        probabilities = np.asarray(self._forward(logits), dtype=np.float64)
        return Reading(probabilities, np.ones(len(inputs), dtype=bool))

    def answers(self, reading: Reading) -> pd.DataFrame:
        return predictions_frame(reading.probabilities)


def test_a_new_recognizer_is_only_how_inputs_become_probabilities(mlflow_store):
    import keras

    network = keras.Sequential([keras.Input((NUM_CLASSES,)), keras.layers.Softmax()])
    with mlflow.start_run():
        info = LetterNumbers(sharpness=20.0).log(network, pd.DataFrame({"number": [0]}), step=3)
    model = mlflow.pyfunc.load_model(info.model_uri)
    answers = model.predict(pd.DataFrame({"number": [0, 5, 23]}))
    assert answers.letter.tolist() == ["A", "F", "Y"] and answers.confidence.min() > 0.99
    with pytest.raises(MlflowException, match="column number: values must be 0-23") as refused:
        model.predict(pd.DataFrame({"number": [24]}))
    assert refused.value.error_code == "BAD_REQUEST"  # what the scoring server answers with HTTP 400
    logged = mlflow.models.Model.load(info.model_uri)
    assert logged.metadata == {"input_forms": LetterNumbers.input_forms}
    assert logged.flavors["python_function"]["config"] == {"sharpness": 20.0}
    assert [c.name for c in logged.signature.outputs.inputs] == ["letter", "label", "confidence", "top3"]
    assert model.unwrap_python_model().sharpness == 20.0


@pytest.mark.parametrize("recognizer, request_, message", [
    (SignMnistRecognizer("cnn"), pd.DataFrame({"colour": [1]}), "unknown column(s) 'colour'"),
    (PhotoRecognizer(), pd.DataFrame({"pixel1": [0]}), "Sign MNIST pixel rows are for the Sign MNIST recognizer"),
])
def test_a_bad_request_is_refused_before_the_network_is_asked(recognizer, request_, message):
    with pytest.raises(MlflowException) as refused:  # not loaded: the request never reaches the network
        recognizer.predict(None, request_)
    assert refused.value.error_code == "BAD_REQUEST" and message in refused.value.message


def test_every_recognizer_answers_letter_label_confidence_and_top3_first():
    common = ["letter", "label", "confidence", "top3"]
    assert [c.name for c in SignMnistRecognizer.signature().outputs.inputs] == common
    assert [c.name for c in PhotoRecognizer.signature().outputs.inputs] == [*common, "box", "reason"]


def test_a_recognizers_settings_are_its_logged_model_config():
    assert SignMnistRecognizer("resnet50", tta=True).config == {"resolved_architecture": "resnet50", "tta": "true"}
    assert PhotoRecognizer(temperature=1.5, not_sure_below=0.4).config == {
        "resolved_architecture": "keypoints", "temperature": 1.5, "not_sure_below": 0.4}


def test_a_model_logged_by_an_earlier_asl_mlops_is_a_re_train_message_not_a_traceback():
    from asl_mlops.recognizers.base import load_error

    gone = ModuleNotFoundError("No module named 'asl_mlops.serving.recognizer'", name="asl_mlops.serving.recognizer")
    message = load_error("models:/asl-recognizer/1", gone)
    assert message is not None and "models:/asl-recognizer/1 was logged by an earlier asl-mlops" in message
    assert "train it again" in message
    assert load_error("models:/m/1", ModuleNotFoundError("No module named 'sklearn'", name="sklearn")) is None
    assert load_error("models:/m/1", ValueError("asl_mlops")) is None
