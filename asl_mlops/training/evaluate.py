"""Evaluation on held-out data: accuracy, loss, per-class precision/recall/F1, plots.

Importing this module does not import TensorFlow, so `asl-mlops evaluate` checks its data and model URI
first and fails on bad input in about a second."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from sklearn.metrics import accuracy_score, classification_report, log_loss

from asl_mlops.data.sign_mnist import Dataset, load_csv
from asl_mlops.errors import InputError
from asl_mlops.labels import LETTERS, NUM_CLASSES
from asl_mlops.quiet_import import import_tensorflow_quietly
from asl_mlops.training import plots

if TYPE_CHECKING:
    import keras

    from asl_mlops.recognizers.base import Recognizer


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a model on one labelled set (class indices, not Sign MNIST labels)."""

    accuracy: float
    loss: float  # mean categorical cross-entropy on the data (no L2 penalty)
    report: dict  # sklearn classification_report(output_dict=True), keyed by letter
    y_true: np.ndarray
    y_pred: np.ndarray

    @property
    def errors(self) -> int:
        return int(np.sum(self.y_true != self.y_pred))

    def metrics(self, prefix: str = "test") -> dict[str, float]:
        """Flat MLflow metrics: accuracy, loss, macro averages and per-letter precision/recall/F1."""
        out = {f"{prefix}_accuracy": self.accuracy, f"{prefix}_loss": self.loss,
               f"{prefix}_errors": float(self.errors)}
        for stat in ("precision", "recall", "f1-score"):
            out[f"{prefix}_macro_{stat.replace('-score', '')}"] = float(self.report["macro avg"][stat])
        for letter in LETTERS:
            for stat in ("precision", "recall", "f1-score"):
                out[f"{prefix}_{stat.replace('-score', '')}_{letter}"] = float(self.report[letter][stat])
        return out


def predict_probabilities(model: "keras.Model", x: np.ndarray, batch_size: int = 512, tta: bool = False,
                          views=None) -> np.ndarray:
    """Softmax outputs (N, 24) for model inputs (raw pixels, asl_mlops.recognizers.preprocess.to_model_input);
    with `tta`, averaged over asl_mlops.recognizers.tta's views (`views`: another set in
    `asl_mlops.recognizers.tta.VIEWS`' format)."""
    if not tta:
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    from asl_mlops.recognizers.tta import VIEWS, mean_over_views, views_of

    views = VIEWS if views is None else views
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        probabilities = model.predict(views_of(batch, views), batch_size=batch_size, verbose=0)
        out.append(np.asarray(mean_over_views(probabilities, len(batch), len(views))))
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), dtype=np.float32)


def evaluate_probabilities(y_true: np.ndarray, probabilities: np.ndarray, found: np.ndarray | None = None) -> Evaluation:
    """Score predicted probabilities against true class indices. With `found` (photos), `probabilities` are those
    of the photos where a hand was found; the others count as errors (predicted class -1, uniform
    probabilities in the loss)."""
    if found is not None:
        full = np.full((len(found), NUM_CLASSES), 1.0 / NUM_CLASSES)
        full[found] = probabilities
        probabilities = full
    y_pred = probabilities.argmax(axis=1)
    if found is not None:
        y_pred = np.where(found, y_pred, -1)
    report = classification_report(y_true, y_pred, labels=np.arange(NUM_CLASSES), target_names=list(LETTERS),
                                   output_dict=True, zero_division=0)
    clipped = np.clip(probabilities, 1e-7, 1.0)  # float32 softmax rows sum to 1 only within rounding
    loss = log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=np.arange(NUM_CLASSES))
    return Evaluation(float(accuracy_score(y_true, y_pred)), float(loss), report, y_true, y_pred)


def log_evaluation(evaluation: Evaluation, images: "np.ndarray | Sequence[np.ndarray]", prefix: str = "test",
                   logged_elsewhere: Sequence[str] = ()) -> None:
    """Log metrics (but those `logged_elsewhere`), the classification report (text + JSON) and the evaluation plots
    to the active run."""
    from asl_mlops.tracking import log_figures

    mlflow.log_metrics({k: v for k, v in evaluation.metrics(prefix).items() if k not in logged_elsewhere})
    text = classification_report(evaluation.y_true, evaluation.y_pred, labels=np.arange(NUM_CLASSES),
                                 target_names=list(LETTERS), digits=4, zero_division=0)
    mlflow.log_text(text, f"reports/{prefix}_classification_report.txt")
    mlflow.log_text(json.dumps(evaluation.report, indent=2), f"reports/{prefix}_classification_report.json")
    log_figures({
        f"{prefix}_confusion_matrix": plots.confusion_matrix_figure(
            evaluation.y_true, evaluation.y_pred, title=f"{prefix} confusion matrix"),
        f"{prefix}_misclassified": plots.misclassified_figure(images, evaluation.y_true, evaluation.y_pred),
    })


def check_model_uri(model_uri: str) -> None:
    """Raise InputError unless there is a logged model at `model_uri` (cheap: reads its MLmodel only); for a
    missing store, model, alias or run it says what to do (`registry.explain_model_uri`)."""
    from asl_mlops.registry import explain_model_uri

    if reason := explain_model_uri(model_uri):
        raise InputError(f"--model-uri {model_uri}: {reason}")
    try:
        mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as err:
        raise InputError(f"--model-uri {model_uri}: no model there ({err})") from err


def load_recognizer(model_uri: str) -> "Recognizer":
    """The Python model of a logged recognizer (asl_mlops.recognizers); InputError otherwise."""
    from asl_mlops.recognizers.base import Recognizer, load_model

    check_model_uri(model_uri)  # before TensorFlow is imported: a wrong URI fails in about a second
    import_tensorflow_quietly()
    try:
        recognizer = load_model(model_uri).unwrap_python_model()
    except MlflowException as err:  # a pyfunc that is not a PythonModel
        raise InputError(f"--model-uri {model_uri}: not an asl-mlops recognizer ({err.message})") from err
    if not isinstance(recognizer, Recognizer):
        raise InputError(f"--model-uri {model_uri}: not an asl-mlops recognizer")
    return recognizer


def evaluate_model_uri(model_uri: str, data_path: str, batch_size: int = 512, log: bool = True,
                       dataset: Dataset | None = None) -> Evaluation:
    """Evaluate a logged recognizer (a run's `recognizer`, or a registered version) on a Sign MNIST CSV
    (`dataset`, if already loaded from `data_path`) or a photo folder, as it would answer when served
    (test-time augmentation included if its run used it; a photo with no hand found is an error); with `log`,
    record it as an MLflow run."""
    from pathlib import Path

    from tqdm import tqdm

    from asl_mlops.data.photos import load_photo_folder, read_rgb
    from asl_mlops.training.photo_inputs import Thumbnails
    from asl_mlops.labels import labels_to_indices
    from asl_mlops.recognizers.photos import PhotoRecognizer

    photos = Path(data_path).is_dir()
    # Validated before anything is loaded or logged.
    data = load_photo_folder(data_path) if photos else dataset if dataset is not None else load_csv(data_path)
    recognizer = load_recognizer(model_uri)
    if photos and not isinstance(recognizer, PhotoRecognizer):
        raise InputError(f"--data {data_path}: {model_uri} is a Sign MNIST recognizer: evaluate it on a CSV")
    if not photos and isinstance(recognizer, PhotoRecognizer):
        raise InputError(f"--data {data_path}: {model_uri} is a photo recognizer: evaluate it on a photo folder")
    if photos:  # photo by photo, with progress: each is decoded from its file and searched for a hand
        batches = ([read_rgb(path)] for path in tqdm(data.paths, desc="evaluating", unit="photo",
                                                     disable=not sys.stderr.isatty()))
    else:
        batches = (data.images[i:i + batch_size] for i in range(0, len(data), batch_size))
    readings = [recognizer.read(batch) for batch in batches]
    found = np.concatenate([reading.found for reading in readings])
    evaluation = evaluate_probabilities(labels_to_indices(data.labels),
                                        np.concatenate([reading.probabilities for reading in readings]), found=found)
    if log:
        with mlflow.start_run(run_name="evaluate"):
            mlflow.log_params({"model_uri": model_uri, "data": data_path, "data_hash": data.content_hash,
                               "rows": len(data)})
            if photos:
                mlflow.log_metric("test_hands_found", float(found.sum()))
            images = (Thumbnails(data, [hand for reading in readings for hand in reading.hands]) if photos
                      else data.images)
            log_evaluation(evaluation, images, prefix="test")
    return evaluation
