"""The Sign MNIST recognizer (asl_mlops.recognizers): image decoding and payload checks (unit), and the real
`mlflow models serve` (e2e)."""

import base64
import json
import struct
import zlib

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_model import (
    images_body,
    pixels_body,
    png_base64,
    using_store,
)

from asl_mlops.data.images import (
    MAX_IMAGE_PIXELS,
    decode_base64_image,
    decode_image,
    image_header_size,
    square_28,
)
from asl_mlops.data.sign_mnist import PIXEL_COLUMNS
from asl_mlops.errors import InputError
from asl_mlops.recognizers.requests import (
    MAX_ROWS,
    images_from_frame,
    pixel_frame,
    predictions_frame,
)

ROW = np.arange(784) % 256  # a valid pixel row


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares width x height (IHDR only): a decompression-bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def encoded(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


# --- unit: pure functions ---------------------------------------------------------------------------

def test_header_size_png_and_jpeg_without_decoding():
    image = np.zeros((30, 50, 3), np.uint8)
    assert image_header_size(encoded(image)) == ("png", 50, 30)
    assert image_header_size(encoded(image, ".jpg")) == ("jpeg", 50, 30)
    assert image_header_size(png_header_only(100_000, 100_000)) == ("png", 100_000, 100_000)
    with pytest.raises(ValueError, match="not a PNG or JPEG"):
        image_header_size(b"GIF89a....")


def test_exact_28x28_png_decodes_to_the_same_pixels():
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    assert np.array_equal(decode_image(encoded(image)), image)


def test_colour_any_size_is_padded_with_edge_pixels_then_area_resized():
    colour = np.full((60, 120, 3), (0, 0, 255), np.uint8)  # BGR red, wider than tall
    gray = decode_image(encoded(colour))
    assert gray.shape == (28, 28) and gray.dtype == np.uint8
    assert np.all(gray == round(0.299 * 255))  # BT.601 gray of red; edge replicate adds no other value
    tall = np.zeros((40, 10), np.uint8)
    tall[:, 5:] = 200
    assert square_28(tall).shape == (28, 28)


@pytest.mark.parametrize("data, message", [
    (png_header_only(5000, 5000), "more than the limit"),
    (png_header_only(0, 10), "empty image"),
    (encoded(np.zeros((28, 28), np.uint8))[:-20], "truncated PNG"),
    (encoded(np.zeros((28, 28), np.uint8), ".jpg")[:-100], "truncated JPEG"),
    (b"hello", "not a PNG or JPEG"),
])
def test_bad_image_bytes(data, message):
    with pytest.raises(ValueError, match=message):
        decode_image(data)


def test_bad_base64():
    with pytest.raises(ValueError, match="not valid base64"):
        decode_base64_image("!!not base64")
    with pytest.raises(ValueError, match="got null"):
        decode_base64_image(None)


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame([ROW[:-1]], columns=list(PIXEL_COLUMNS[:-1])), "missing column"),
    (pd.DataFrame([[*ROW, 1]], columns=[*PIXEL_COLUMNS, "pixel785"]), "unknown column.*pixel785"),
    (pd.DataFrame([[*ROW[:5], 300, *ROW[6:]]], columns=list(PIXEL_COLUMNS)), "row 0, column pixel6: 300 is not an integer 0-255"),
    (pd.DataFrame([ROW, [*ROW[:9], -1, *ROW[10:]]], columns=list(PIXEL_COLUMNS)), "row 1, column pixel10: -1"),
    (pd.DataFrame([[*ROW[:5], 1.5, *ROW[6:]]], columns=list(PIXEL_COLUMNS)), "pixel6: 1.5 is not an integer"),
    (pd.DataFrame([[*ROW[:5], np.nan, *ROW[6:]]], columns=list(PIXEL_COLUMNS)), "pixel6: value is missing, NaN"),
    (pd.DataFrame([[*ROW[:5], np.inf, *ROW[6:]]], columns=list(PIXEL_COLUMNS)), "pixel6: value is missing, NaN or infinite"),
    (pd.DataFrame([[*ROW[:5], "12", *ROW[6:]]], columns=list(PIXEL_COLUMNS)), "pixel6: '12' is not a number"),
    (pd.DataFrame(columns=list(PIXEL_COLUMNS)), "empty batch"),
    (pd.DataFrame(np.zeros((MAX_ROWS + 1, 784), np.int64), columns=list(PIXEL_COLUMNS)), "larger than the limit of 1024"),
    (pd.DataFrame({"image": ["x"], "pixel1": [0]}), "mixed input forms"),
    (pd.DataFrame({"image": ["aGVsbG8="]}), "row 0, column image: not a PNG or JPEG"),
    (np.zeros((2, 784)), "must be a table"),
])
def test_bad_frames(frame, message):
    with pytest.raises(InputError, match=message):
        images_from_frame(frame)


def test_label_column_is_ignored_and_both_forms_agree():
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with_label = pixel_frame(images).assign(label=[0, 1, 2])
    assert np.array_equal(images_from_frame(with_label), images)
    as_png = pd.DataFrame({"image": [png_base64(image) for image in images]})
    assert np.array_equal(images_from_frame(as_png), images)


def test_predictions_frame_maps_class_indices_to_labels_and_letters():
    probabilities = np.full((1, 24), 0.01)
    probabilities[0, 9], probabilities[0, 0], probabilities[0, 23] = 0.5, 0.2, 0.08  # index 9 = K = label 10
    row = predictions_frame(probabilities).iloc[0]
    assert (row.letter, row.label, row.confidence) == ("K", 10, 0.5)
    assert [t["letter"] for t in row.top3] == ["K", "A", "Y"]


# --- e2e: the real scoring server -------------------------------------------------------------------

@pytest.fixture(scope="module")
def direct_predictions(served):
    """The pyfunc loaded in this process, on the synthetic test set (pixel form)."""
    with using_store(served.tracking_uri):
        model = mlflow.pyfunc.load_model(served.result.model_uri)
    return model, model.predict(pixel_frame(served.test_images))


def assert_same_predictions(http: list[dict], direct: pd.DataFrame) -> None:
    assert [p["letter"] for p in http] == direct.letter.tolist()
    assert [p["label"] for p in http] == direct.label.tolist()
    np.testing.assert_allclose([p["confidence"] for p in http], direct.confidence, rtol=1e-6)
    assert [[t["letter"] for t in p["top3"]] for p in http] == [[t["letter"] for t in row] for row in direct.top3]


@pytest.mark.e2e
@pytest.mark.slow
def test_pyfunc_matches_the_keras_network_it_wraps(served_store, direct_predictions):
    from asl_mlops.training.evaluate import predict_probabilities
    from asl_mlops.recognizers.preprocess import to_model_input

    model, direct = direct_predictions
    keras_model = model.unwrap_python_model().model  # raw pixels in
    # the run trained with test-time augmentation (the default), which the recognizer applies too
    keras_probabilities = predict_probabilities(keras_model, to_model_input(served_store.test_images), tta=True)
    pyfunc_probabilities = model.unwrap_python_model().read(served_store.test_images).probabilities
    np.testing.assert_allclose(pyfunc_probabilities, keras_probabilities, atol=1e-5)
    from asl_mlops.labels import indices_to_labels
    assert direct.label.tolist() == indices_to_labels(keras_probabilities.argmax(axis=1)).tolist()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("form", ["pixels", "images"])
def test_http_predictions_equal_direct_pyfunc_and_logged_accuracy(served, direct_predictions, form):
    body = pixels_body(served.test_images) if form == "pixels" else images_body(served.test_images)
    response = served.post(body)
    assert response.status_code == 200, response.text[:500]
    predictions = response.json()["predictions"]
    assert_same_predictions(predictions, direct_predictions[1])
    accuracy = np.mean(np.array([p["label"] for p in predictions]) == served.test_labels)
    logged = mlflow.MlflowClient(served.tracking_uri).get_run(served.result.run_id).data.metrics["test_accuracy"]
    assert abs(accuracy - logged) < 1e-9
    assert set(predictions[0]) == {"letter", "label", "confidence", "top3"} and len(predictions[0]["top3"]) == 3


def _pixels(rows: list) -> dict:
    return {"dataframe_split": {"columns": list(PIXEL_COLUMNS), "data": rows}}


def _image(text: str) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[text]]}}


_ROW = ROW.tolist()
_BAD_REQUESTS = {
    "wrong number of values": (_pixels([_ROW[:-1]]), "784 columns passed, passed data had 783 columns"),
    "short row in a batch": (_pixels([_ROW, _ROW[:-1]]), "row 1, column pixel784: value is missing"),
    "missing columns": ({"dataframe_split": {"columns": list(PIXEL_COLUMNS[:-1]), "data": [_ROW[:-1]]}},
                        "missing column(s) pixel784"),
    "unknown column": ({"dataframe_split": {"columns": [*PIXEL_COLUMNS, "colour"], "data": [[*_ROW, 1]]}},
                       "unknown column(s) 'colour'"),
    "no column names": ({"dataframe_split": {"data": [_ROW]}}, "unknown column(s) '0', '1'"),
    "unknown input key": ({"dataframe": {"columns": ["image"], "data": [["x"]]}}, "exactly one of the input fields"),
    "value above 255": (_pixels([[*_ROW[:99], 256, *_ROW[100:]]]), "row 0, column pixel100: 256 is not an integer 0-255"),
    "negative value": (_pixels([[-3, *_ROW[1:]]]), "row 0, column pixel1: -3 is not an integer 0-255"),
    "NaN": ('{"dataframe_split": {"columns": %s, "data": [[NaN, %s]]}}'
            % (json.dumps(list(PIXEL_COLUMNS)), ", ".join(map(str, _ROW[1:]))), "row 0, column pixel1: value is missing, NaN"),
    "infinity": ('{"dataframe_split": {"columns": %s, "data": [[%s, Infinity]]}}'
                 % (json.dumps(list(PIXEL_COLUMNS)), ", ".join(map(str, _ROW[:-1]))), "column pixel784: value is missing, NaN or infinite"),
    "string for a number": (_pixels([[*_ROW[:6], "dark", *_ROW[7:]]]), "row 0, column pixel7: 'dark' is not a number"),
    "empty batch": (_pixels([]), "empty batch"),
    "batch above the limit": (_pixels([_ROW] * (MAX_ROWS + 1)), "1025 rows is larger than the limit of 1024"),
    "base64 of no image": (_image(base64.b64encode(b"just some text").decode()), "row 0, column image: not a PNG or JPEG image"),
    "not base64": (_image("%%% not base64 %%%"), "row 0, column image: not valid base64"),
    "truncated PNG": (_image(base64.b64encode(encoded(np.zeros((28, 28), np.uint8))[:-30]).decode()), "truncated PNG"),
    "decompression bomb": (_image(base64.b64encode(png_header_only(40_000, 40_000)).decode()),
                           f"40000x40000 = 1600000000 pixels, more than the limit of {MAX_IMAGE_PIXELS}"),
    "mixed forms": ({"dataframe_split": {"columns": ["image", *PIXEL_COLUMNS], "data": [["x", *_ROW]]}}, "mixed input forms"),
    "not JSON": ("{dataframe_split", "valid JSON"),
}


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("case", list(_BAD_REQUESTS))
def test_bad_input_is_a_4xx_naming_the_problem_and_the_server_stays_up(served, case):
    body, message = _BAD_REQUESTS[case]
    if isinstance(body, str):
        response = requests.post(f"{served.url}/invocations", data=body, headers={"Content-Type": "application/json"},
                                 timeout=60)
    else:
        response = served.post(body)
    assert response.status_code == 400, response.text[:500]
    assert message in response.json()["message"]
    after = served.post(pixels_body(served.test_images[:2]))
    assert after.status_code == 200 and len(after.json()["predictions"]) == 2


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)
_columns = st.lists(st.sampled_from(["image", "label", "pixel1", "pixel784", "foo", ""]) | st.text(max_size=8), max_size=4)
_payloads = st.one_of(
    _json,
    st.dictionaries(st.sampled_from(["dataframe_split", "dataframe_records", "inputs", "instances", "params",
                                     "messages", "columns", "data"]), _json, max_size=3),
    st.builds(lambda columns, data: {"dataframe_split": {"columns": columns, "data": data}}, _columns,
              st.lists(st.lists(_json, max_size=4), max_size=3)),
    st.builds(lambda rows: {"dataframe_split": {"columns": ["image"], "data": [[r] for r in rows]}},
              st.lists(st.text(max_size=30) | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
                       | st.none() | st.integers(), max_size=3)),
)


@pytest.mark.e2e
@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_payloads)
def test_random_payloads_never_get_a_5xx(served, payload):
    # json.dumps, not requests' json=: it also sends NaN/Infinity (which the server parses), and json=None
    # would send no body and no Content-Type (MLflow 3.17 answers a missing Content-Type with 500).
    response = requests.post(f"{served.url}/invocations", data=json.dumps(payload),
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code < 500, (payload, response.status_code, response.text[:500])


@pytest.mark.e2e
def test_mlflow_models_serve_prints_no_gpu_noise_on_a_cpu(served):
    # TensorFlow's wheel logs its CUDA lookups ("failed call to cuInit", "Could not find cuda drivers") at import;
    # the recognizer imports it with them silenced.
    assert served.post(pixels_body(served.test_images[:1])).status_code == 200
    log = (served.workdir / "server.log").read_text(errors="replace")
    assert "Listening at" in log or "Uvicorn running" in log or "Application startup complete" in log, log[-2000:]
    assert "cuInit" not in log and "cuda drivers" not in log.lower(), log[-3000:]
