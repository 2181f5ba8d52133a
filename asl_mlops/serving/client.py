"""Predict letters for image files: with the registered pyfunc model loaded here, or a running server.

Both ways send the file's bytes, base64-encoded, in the `image` request form of the recognizers
(asl_mlops.recognizers.requests), so the CLI gets exactly what an HTTP client of `mlflow models serve` gets.
"""

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TextIO

from asl_mlops.data.images import encode_image_file
from asl_mlops.errors import InputError
from asl_mlops.recognizers.requests import IMAGE_COLUMN

QUIT = "x"  # typed alone on a line, ends the interactive loop (as in the original tool)
REQUEST_TIMEOUT = 60.0  # seconds; the scoring server's own request timeout is 60 s too


@dataclass(frozen=True)
class Prediction:
    """One answer row of the recognizer."""

    letter: str  # "" when the photo recognizer names no letter (`reason` says why)
    label: int
    confidence: float
    top3: list[dict]  # the best guesses, also when the recognizer is "not sure"
    box: dict | None = None  # the hand's box as fractions of the photo (photo recognizer only)
    reason: str = ""  # why there is no letter: "not sure" (a hand, no letter sure enough) or "no hand found"


class Predictor(Protocol):
    def __call__(self, image_base64: str) -> Prediction: ...


def _prediction(row: dict) -> Prediction:
    box = row.get("box")
    return Prediction(str(row["letter"]), int(row["label"]), float(row["confidence"]), list(row["top3"]),
                      box if isinstance(box, dict) else None, str(row.get("reason") or ""))


def local_predictor(model_uri: str) -> Predictor:
    """Load the pyfunc model at `model_uri` once; the predictor raises InputError for bad images."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from asl_mlops.quiet_import import import_tensorflow_quietly

    from asl_mlops.recognizers.base import load_model
    from asl_mlops.registry import explain_model_uri

    if reason := explain_model_uri(model_uri):  # a missing store, model, alias or run: what to do instead
        raise InputError(f"cannot load model {model_uri}: {reason}")
    import_tensorflow_quietly()  # before the model loads TensorFlow, which would print its no-GPU lines
    try:
        model = load_model(model_uri)
    except (MlflowException, OSError) as err:
        raise InputError(f"cannot load model {model_uri}: {getattr(err, 'message', err)}") from None

    def predict(image_base64: str) -> Prediction:
        try:
            frame = model.predict(pd.DataFrame({IMAGE_COLUMN: [image_base64]}))
        except MlflowException as err:  # the recognizer's bad-input error (HTTP 400 when served)
            raise InputError(err.message) from None
        return _prediction(frame.iloc[0].to_dict())

    return predict


def endpoint_predictor(endpoint: str) -> Predictor:
    """POST each image to `endpoint`/invocations; 4xx answers become InputError with the server's reason."""
    import requests

    url = endpoint.rstrip("/") + "/invocations"
    session = requests.Session()

    def predict(image_base64: str) -> Prediction:
        body = {"dataframe_split": {"columns": [IMAGE_COLUMN], "data": [[image_base64]]}}
        try:
            response = session.post(url, json=body, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as err:
            raise InputError(f"cannot reach {url}: {err}") from None
        if response.status_code != 200:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text
            # The scoring server prefixes our reason with a dump of the request; keep the reason.
            raise InputError(f"{message.rsplit('Error: ', 1)[-1].strip()} (HTTP {response.status_code})")
        return _prediction(response.json()["predictions"][0])

    return predict


#: How the recognizer names the one cell a file becomes; for a file argument, the file's name says it instead.
FILE_CELL = f"row 0, column {IMAGE_COLUMN}: "


def predict_file(path: str, predictor: Predictor) -> Prediction:
    """Prediction for one image file; InputError naming the file if it is unreadable or not an image (in file
    words: `notes.txt: not a PNG or JPEG image`, not the request's row and column)."""
    try:
        image = encode_image_file(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read file ({err.strerror or err})") from None
    try:
        return predictor(image)
    except InputError as err:
        raise InputError(f"{path}: {str(err).removeprefix(FILE_CELL)}") from None


def paths_from(stream: TextIO, prompt: TextIO | None = None) -> Iterator[str]:
    """Image paths typed one per line, until a line `x` or end of input; blank lines are skipped.

    With `prompt` (a terminal), asks for each path there; piped input gets no prompts.
    """
    while True:
        if prompt is not None:
            prompt.write(f"image path ({QUIT} to quit): ")
            prompt.flush()
        line = stream.readline()
        if not line:
            return
        path = line.strip()
        if path == QUIT:
            return
        if path:
            yield path


def answer_line(path: str, prediction: Prediction) -> str:
    """`path: letter (confidence)`; where there is no letter, `path: reason` and the guesses there are
    (`path: not sure (maybe B 0.410, D 0.220, F 0.100)`, `path: no hand found`); then the hand's box if any
    (`, hand at x 0.31, y 0.12, w 0.40, h 0.75`)."""
    if prediction.reason:
        guesses = ", ".join(f"{guess['letter']} {float(guess['probability']):.3f}" for guess in prediction.top3)
        line = f"{path}: {prediction.reason}" + (f" (maybe {guesses})" if guesses else "")
    else:
        line = f"{path}: {prediction.letter} ({prediction.confidence:.3f})"
    if prediction.box:
        line += ", hand at " + ", ".join(f"{k} {prediction.box[k]:.2f}" for k in ("x", "y", "w", "h"))
    return line


def run(paths: Iterable[str], predictor: Predictor, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print one `answer_line` per image, or `error: path: reason`; returns how many failed.

    `out` and `err` default to the sys.stdout and sys.stderr of the moment of the call.
    """
    out, err = out or sys.stdout, err or sys.stderr
    failures = 0
    for path in paths:
        try:
            prediction = predict_file(path, predictor)
        except InputError as error:
            failures += 1
            err.write(f"error: {error}\n")
            err.flush()
            continue
        out.write(answer_line(path, prediction) + "\n")
        out.flush()
    return failures
