"""Training stage: load and split data once, fit, evaluate and log one MLflow run and its one model.

`train_and_evaluate` is the single training function: `asl-mlops train`, the MLproject `main`
entry point and every Optuna trial (asl_mlops.tuning.sweep) call it with a `TrainConfig`.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import mlflow
import numpy as np

from asl_mlops.config import RegistryConfig, TrainConfig
from asl_mlops.recognizers.base import Recognizer
from asl_mlops.recognizers.photos import PhotoRecognizer, example_frame
from asl_mlops.recognizers.requests import pixel_frame
from asl_mlops.recognizers.sign_mnist import SignMnistRecognizer
from asl_mlops.tracking import log_config, log_figures, log_input, training_device
from asl_mlops.training import plots
from asl_mlops.training.evaluate import (
    Evaluation,
    evaluate_probabilities,
    log_evaluation,
    predict_probabilities,
)
from asl_mlops.training.fit import fit, loss_and_metrics
from asl_mlops.training.inputs import PreparedData, prepare_data
from asl_mlops.training.models import average_ensemble, build_model, count_params
from asl_mlops.training.trunk import (
    check_cache_dir,
    trunk_cache_dir,
    uses_trunk_cache,
)

if TYPE_CHECKING:
    from asl_mlops.hands.calibration import Calibration
    from asl_mlops.registry import Registration
    from asl_mlops.gate import Verdict

logger = logging.getLogger(__name__)

#: The test metrics linked to the logged model (and logged once, there, not with the rest of the test metrics).
FINAL_TEST_METRICS = ("test_accuracy", "test_loss", "test_errors")


@dataclass(frozen=True)
class RunResult:
    """What one training run produced."""

    run_id: str
    model_uri: str  # the run's one model, the recognizer: what is registered and served (asl_mlops.recognizers)
    val_accuracy: float  # of the final (EMA / restored) weights on the validation split
    val_loss: float
    test: Evaluation
    history: dict[str, list[float]]
    trainable_params: int
    total_params: int


def final_evaluations(model: keras.Model, data: PreparedData, config: TrainConfig) -> tuple[Evaluation, Evaluation]:
    """(validation, test) evaluations of the model as it will be served: with test-time augmentation when on
    (Sign MNIST), counting photos with no hand found as errors (photos)."""
    if data.val_found is None or data.test_found is None or data.val_labels is None:
        val = evaluate_probabilities(data.y_val.argmax(axis=1), predict_probabilities(model, data.x_val, tta=config.tta))
        test = evaluate_probabilities(data.y_test, predict_probabilities(model, data.x_test, tta=config.tta))
        return val, test
    val = evaluate_probabilities(data.val_labels, predict_probabilities(model, data.x_val), found=data.val_found)
    test = evaluate_probabilities(data.y_test, predict_probabilities(model, data.x_test[data.test_found]),
                                  found=data.test_found)
    return val, test


def mlflow_datasets(data: PreparedData, config: TrainConfig) -> dict[str, "mlflow.data.dataset.Dataset"]:
    """The run's training, validation and test data as MLflow datasets (model inputs, class indices),
    with the data's content hash as digest and its CSV as source, so the UI lists them under "Datasets"."""
    import mlflow.data

    def dataset(x: np.ndarray, y: np.ndarray, csv: str, part: str, digest: str) -> "mlflow.data.dataset.Dataset":
        source = str(Path(csv).resolve()) if Path(csv).exists() else None
        with warnings.catch_warnings():
            # MLflow registers its local-file source under two schemes and warns, every run, that a path "can be
            # interpreted in multiple ways" (both LocalArtifactDatasetSource): the same source either way.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            return mlflow.data.from_numpy(x, targets=y, source=source, digest=str(digest)[:16],
                                          name=f"{Path(csv).name.split('.')[0]}-{part}")

    return {"training": dataset(data.x_train, data.y_train.argmax(axis=1), config.train_data, "train",
                                data.params["train_data_hash"]),
            "validation": dataset(data.x_val, data.y_val.argmax(axis=1), config.train_data, "val",
                                  data.params["val_data_hash"]),
            "test": dataset(data.x_test, data.y_test, config.test_data, "test", data.params["test_data_hash"])}


def run_description(config: TrainConfig, data: PreparedData) -> str:
    """The run's description (the UI's "Description"): what was trained, on what, validated how."""
    if config.resolved_architecture == "keypoints":
        held_out = (f"of signers held out of training ({data.params['val_signers']})"
                    if data.params.get("val_held_out") == "signers" else "held out at random per letter (the folder "
                    "names no signers)")
        return (f"Photo recognizer (hand keypoints into a small network) trained for {config.epochs} epochs (Adam lr "
                f"{config.learning_rate:g}, seed {config.seed}) on the hands found in {data.params['train_rows']} "
                f"photos of {config.train_data} ({data.params['train_hands_found']} of "
                f"{data.params['train_photos']} had a hand), validated on {data.params['val_rows']} photos "
                f"{held_out} (split_seed {config.split_seed}), calibrated on them, tested on {config.test_data} (a "
                "photo with no hand found counts as an error). Logged model: `recognizer` (pyfunc with the hand model "
                "as an artifact; takes base64 photos, answers letter, top 3, the hand's box or 'not sure'; what is "
                "registered and served).")
    return (f"{config.resolved_architecture} trained for {config.epochs} epochs (Adam lr {config.learning_rate:g}, decay "
            f"{config.decay_rate:g}, batch {config.batch_size}, seed {config.seed}) on {data.params['train_rows']} "
            f"rows of {config.train_data}, validated on {data.params['val_rows']} rows held out "
            f"{'as whole families of near-duplicates' if config.val_split == 'grouped' else 'at random'} "
            f"(split_seed {config.split_seed}), tested on {config.test_data}. Logged model: `recognizer` (pyfunc "
            f"around the Keras network, which preprocesses raw pixels itself; takes pixel rows or images; what is "
            f"registered and served).")


def calibrate_photo_recognizer(model: keras.Model, data: PreparedData, config: TrainConfig) -> "Calibration":
    """Fit the photo recognizer's temperature and "not sure" threshold on the validation photos (held-out signers)
    and log them, with how reliable the calibrated confidence is on validation and test photos
    (val_/test_ coverage, answered_accuracy, confidently_wrong) and its reliability figure."""
    from asl_mlops.hands.calibration import answers, calibrate, reliability, tempered

    assert data.val_found is not None and data.val_labels is not None and data.test_found is not None
    val_p = predict_probabilities(model, data.x_val)
    calibration = calibrate(val_p, data.val_labels[data.val_found], config.min_answered_accuracy)
    mlflow.log_metrics(calibration.params())
    for part, p, y, found in (("val", val_p, data.val_labels, data.val_found),
                              ("test", predict_probabilities(model, data.x_test[data.test_found]), data.y_test,
                               data.test_found)):
        y_pred, confidence = answers(tempered(p, calibration.temperature), found)
        mlflow.log_metrics(reliability(y, y_pred, confidence, calibration.not_sure_below).metrics(part))
        if part == "test":
            log_figures({"test_reliability": plots.reliability_figure(y, y_pred, confidence,
                                                                        calibration.not_sure_below)})
    return calibration


def model_description(config: TrainConfig, data: PreparedData, val: Evaluation, test: Evaluation) -> str:
    """What the logged model is, what it takes and answers, and how it scored (its UI "Description")."""
    if config.resolved_architecture == "keypoints":
        what = ("Photo recognizer: finds one hand in a photo (MediaPipe HandLandmarker, bundled) and reads the letter "
                "from its 21 keypoints. Input: column `image`, base64 PNG/JPEG photos. Answer: letter, label, "
                "confidence, top3, box (the hand) and reason ('no hand found' instead of a guess).")
    else:
        members = f"{config.ensemble_members} averaged " if config.ensemble_members > 1 else ""
        what = (f"Sign MNIST recognizer: {members}{config.resolved_architecture} network(s) on 28x28 gray hands"
                f"{', test-time augmentation on' if config.tta else ''}. Input: columns pixel1..pixel784, or column "
                "`image` (base64 PNG/JPEG). Answer: letter, label, confidence, top3.")
    return (f"{what}\n\nValidation accuracy {val.accuracy:.4f} on {len(val.y_true)} held-out rows of "
            f"{config.train_data}; test accuracy {test.accuracy:.4f} ({test.errors} errors of {len(test.y_true)}) on "
            f"{config.test_data}.")


def generate_run_name() -> str:
    """A fresh run-name suffix: the UTC time and 6 hex digits from the OS (not the seeded `random`), e.g.
    20261204-152410-3fa9c1, so runs with the same training seed get different names that sort by start."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def train_and_evaluate(config: TrainConfig, data: PreparedData | None = None, *, run_name: str | None = None,
                       nested: bool = False, tags: dict[str, str] | None = None,
                       callbacks: Sequence[keras.callbacks.Callback] = (),
                       params: dict[str, Any] | None = None,
                       inputs: dict[str, "mlflow.data.dataset.Dataset"] | None = None) -> RunResult:
    """Train one model and log it all to one MLflow run (the active one under `mlflow run`); `params` are
    logged beside the config's (e.g. the registry settings), `inputs` beside its training, validation and test
    datasets (context -> dataset, e.g. the photos `asl-mlops teach` adds).

    Data problems raise `InputError` before a run is started; any error inside the run marks it FAILED.
    """
    data = data if data is not None else prepare_data(config)
    members = []
    for k in range(config.ensemble_members):  # before the run: a bad --weights must not leave a run behind
        keras.utils.set_random_seed(config.seed + k)
        members.append(build_model(config))
    # With --ensemble K, the network logged and served averages the K members' softmax.
    model = members[0] if len(members) == 1 else average_ensemble(members)
    if uses_trunk_cache(config):
        check_cache_dir(trunk_cache_dir(config))  # likewise a cache folder that cannot be written
    # Names say what ran and differ between runs: cnn-seed42-20261204-152410-3fa9c1.
    name = run_name or f"{config.resolved_architecture}-seed{config.seed}-{generate_run_name()}"
    with mlflow.start_run(run_name=name, nested=nested, tags=tags) as run:
        if run.info.run_name != name:  # a run `mlflow run` created (and named) for us
            mlflow.set_tag("mlflow.runName", name)
        log_config(config, {**data.params, **(params or {})})
        mlflow.set_tags({"device": training_device(),
                         "mlflow.note.content": run_description(config, data)})
        datasets = mlflow_datasets(data, config)
        for context, dataset in {**datasets, **(inputs or {})}.items():
            log_input(dataset, context=context)  # retried if another worker registers it at once
        trainable, total = count_params(model)
        mlflow.log_params({"trainable_params": trainable, "total_params": total})
        start = time.perf_counter()
        keras.utils.set_random_seed(config.seed)
        # The first member's per-epoch metrics under their plain names (and the callbacks, e.g. a sweep's
        # pruning, see them); further members' as member<k>_loss, ...
        history = fit(members[0], data, config, callbacks)
        for k, member in enumerate(members[1:], start=1):
            keras.utils.set_random_seed(config.seed + k)
            fit(member, data, config.replace(seed=config.seed + k), metric_prefix=f"member{k}_")
        if len(members) > 1:  # compiled like each member, so the saved file loads the same way
            model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), **loss_and_metrics(config))
        mlflow.log_metric("train_seconds", time.perf_counter() - start)
        # Final figures with test-time augmentation when on: what the registered recognizer will answer.
        val, test = final_evaluations(model, data, config)
        # The run's one validation accuracy: the served model's (per-epoch values are epoch_val_accuracy, ...),
        # logged once, below, linked to the logged model.
        final_val = {"val_accuracy": val.accuracy, "val_loss": val.loss}
        if config.resolved_architecture == "keypoints":  # before the model is logged: it carries the calibration
            calibration = calibrate_photo_recognizer(model, data, config)
        log_evaluation(test, data.test_images, prefix="test", logged_elsewhere=FINAL_TEST_METRICS)
        log_figures({"training_curves": plots.training_curves_figure(history.history)})
        # The run's one model, registered and served as it was measured above. Logged at the step after the last
        # epoch: MLflow copies the run's metrics of the model's step onto it, and per-epoch values are not its own.
        recognizer: Recognizer
        if config.resolved_architecture == "keypoints":
            # The input example is the first test photo with a hand: the gate's serving check times answering it.
            test_photos = data.test_images.paths
            example = example_frame(next((path for path, found in zip(test_photos, data.test_found) if found),
                                         test_photos[0]))
            recognizer = PhotoRecognizer(**calibration.params())
        else:
            example = pixel_frame(data.test_images[:2])
            recognizer = SignMnistRecognizer(config.resolved_architecture, tta=config.tta)
        model_info = recognizer.log(model, example, step=config.epochs)
        # The final metrics, linked to the logged model (its page in the UI, and every registered version of
        # it, show these, per dataset). Also the run's: logged once, so each has one value in the run's history.
        final_test = {k: v for k, v in test.metrics("test").items() if k in FINAL_TEST_METRICS}
        mlflow.log_metrics(final_val, model_id=model_info.model_id, dataset=datasets["validation"])
        mlflow.log_metrics(final_test, model_id=model_info.model_id, dataset=datasets["test"])
        # The logged model's "Description" in the UI (and of every registered version of it).
        mlflow.set_logged_model_tags(model_info.model_id,
                                     {"mlflow.note.content": model_description(config, data, val, test)})
        logger.info("run %s: val_accuracy %.4f, test_accuracy %.4f (%d errors of %d)", run.info.run_id,
                    val.accuracy, test.accuracy, test.errors, len(data.y_test))
    return RunResult(run.info.run_id, model_info.model_uri, val.accuracy, val.loss, test,
                     {k: [float(v) for v in vs] for k, vs in history.history.items()}, trainable, total)


def train_and_register(config: TrainConfig, registry: RegistryConfig = RegistryConfig()
                       ) -> tuple[RunResult, "Verdict | Registration | None"]:
    """`train_and_evaluate`, then, with `registry.register`, register the run's recognizer as `challenger` and
    run the validation gate on it with promotion (asl_mlops.gate; GateConfig's defaults, the run's test
    data). Reached only when the run finished cleanly, so a failed run never registers."""
    result = train_and_evaluate(config, params=registry.to_params())
    if not registry.register:
        return result, None
    from asl_mlops.gate import register_and_validate

    return result, register_and_validate(result.run_id, result.model_uri, registry.model_name,
                                         tags={"source": "asl-mlops train"})
