"""Test-time augmentation: the views, and one implementation for the run's metrics and the recognizer."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

from asl_mlops.data.synth import make_synthetic
from asl_mlops.training.evaluate import predict_probabilities
from asl_mlops.training.models import build_cnn
from asl_mlops.recognizers.preprocess import to_model_input
from asl_mlops.recognizers.tta import VIEWS, mean_over_views, views_of


def test_views_are_the_image_its_shifts_rotations_and_zooms():
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    views = np.asarray(views_of(x)).reshape(len(VIEWS), 3, 28, 28, 1)
    assert np.allclose(views[0], x, atol=1e-6)  # the image itself
    down, up = views[1], views[2]  # one pixel down / up, the edge row repeated
    assert np.allclose(down[:, 1:], x[:, :-1], atol=1e-5) and np.allclose(down[:, 0], x[:, 0], atol=1e-5)
    assert np.allclose(up[:, :-1], x[:, 1:], atol=1e-5)
    right = views[3]
    assert np.allclose(right[:, :, 1:], x[:, :, :-1], atol=1e-5)
    for v in range(5, len(VIEWS)):  # rotations and zooms change the image but keep its centre pixel
        assert not np.allclose(views[v], x, atol=1e-3)
        assert np.allclose(views[v][:, 13:15, 13:15], x[:, 13:15, 13:15], atol=0.35)


def test_another_view_set_gives_its_own_views_and_means():
    x = np.random.default_rng(1).random((2, 28, 28, 1)).astype(np.float32)
    views = [(0, 0, 0, 1.0), (0, 2, 0, 1.0)]  # the image, then two pixels right
    out = np.asarray(views_of(x, views)).reshape(2, 2, 28, 28, 1)
    assert np.allclose(out[0], x, atol=1e-6)
    assert np.allclose(out[1][:, :, 2:], x[:, :, :-2], atol=1e-5)
    probabilities = np.stack([np.full((2, 24), 0.2), np.full((2, 24), 0.6)]).reshape(4, 24)  # view-major
    assert np.allclose(np.asarray(mean_over_views(probabilities, 2, len(views))), 0.4)


def test_tta_probabilities_are_the_mean_over_the_views():
    keras.utils.set_random_seed(0)
    model = build_cnn()
    x = to_model_input(make_synthetic(10, seed=1).images)
    plain = predict_probabilities(model, x)
    tta = predict_probabilities(model, x, tta=True, batch_size=4)  # batches that split the images
    by_view = [predict_probabilities(model, np.asarray(v)) for v in np.split(np.asarray(views_of(x)), len(VIEWS))]
    assert np.allclose(tta, np.mean(by_view, axis=0), atol=1e-6)
    assert np.allclose(by_view[0], plain, atol=1e-6) and not np.allclose(tta, plain, atol=1e-4)
    assert np.allclose(np.asarray(mean_over_views(np.concatenate(by_view), 10)), tta, atol=1e-6)
    # another view set: the image alone is the plain prediction; two views are their mean
    assert np.allclose(predict_probabilities(model, x, tta=True, views=VIEWS[:1]), plain, atol=1e-6)
    assert np.allclose(predict_probabilities(model, x, tta=True, views=VIEWS[:2]), np.mean(by_view[:2], axis=0),
                       atol=1e-6)


@pytest.mark.slow
def test_recognizer_answers_what_the_run_measured(mlflow_store):
    from asl_mlops.recognizers.requests import pixel_frame
    from asl_mlops.recognizers.sign_mnist import SignMnistRecognizer

    keras.utils.set_random_seed(1)
    model = build_cnn()
    images = make_synthetic(12, seed=2).images
    with mlflow.start_run():
        with_tta = SignMnistRecognizer("cnn", tta=True).log(model, pixel_frame(images[:2])).model_uri
        without = SignMnistRecognizer("cnn", tta=False).log(model, pixel_frame(images[:2]), name="plain").model_uri
    x = to_model_input(images)
    served = mlflow.pyfunc.load_model(with_tta).unwrap_python_model().read(images).probabilities
    assert np.allclose(served, predict_probabilities(model, x, tta=True), atol=1e-5)
    plain = mlflow.pyfunc.load_model(without).unwrap_python_model().read(images).probabilities
    assert np.allclose(plain, predict_probabilities(model, x), atol=1e-5)
