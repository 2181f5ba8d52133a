"""Training stage: load and split data once, fit, evaluate and log one MLflow run and its one model.

`train_and_evaluate` is the single training function: `asl-mlops train`, the MLproject `main`
entry point and every Optuna trial (asl_mlops.sweep) call it with a `TrainConfig`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import mlflow
import numpy as np

from asl_mlops import plots
from asl_mlops.augment import build_augmentation, make_dataset
from asl_mlops.config import TrainConfig
from asl_mlops.data import Dataset, load_csv
from asl_mlops.errors import InputError
from asl_mlops.hands import file_sha256
from asl_mlops.evaluate import Evaluation, evaluate_probabilities, log_evaluation, predict_probabilities
from asl_mlops.fused_batchnorm import fused_batchnorm
from asl_mlops.labels import NUM_CLASSES, labels_to_indices
from asl_mlops.models import average_ensemble, build_model, count_params
from asl_mlops.optimizer import WarmupEMAAdam, as_keras_adam
from asl_mlops.preprocess import to_model_input
from asl_mlops.serving import log_recognizer
from asl_mlops.split import Split, split_train_val
from asl_mlops.tracking import MlflowEpochLogger, log_config, log_figures, log_input, training_device
from asl_mlops.trunk import (ViewBatches, check_cache_dir, split_at_trainable, trunk_cache_dir, trunk_features,
                             uses_trunk_cache)

if TYPE_CHECKING:
    from asl_mlops.registry import Registration

logger = logging.getLogger(__name__)

#: How every network is compiled (for training, and in the saved .keras file).
LOSS_AND_METRICS: dict[str, Any] = {"loss": "categorical_crossentropy", "metrics": ["accuracy"]}


def loss_and_metrics(config: TrainConfig) -> dict[str, Any]:
    """`compile` arguments: cross-entropy (with `config.label_smoothing`) and accuracy."""
    if not config.label_smoothing:
        return LOSS_AND_METRICS
    return {**LOSS_AND_METRICS,
            "loss": keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)}


@dataclass(frozen=True)
class PreparedData:
    """Train/validation/test model inputs (raw pixels, float32 (N, 28, 28, 1)) plus the facts about them that a
    run logs."""

    x_train: np.ndarray
    y_train: np.ndarray  # one-hot (N, 24)
    x_val: np.ndarray
    y_val: np.ndarray  # one-hot
    x_test: np.ndarray
    y_test: np.ndarray  # class indices (N,)
    # raw uint8 (N, 28, 28), or the test photos' thumbnails (asl_mlops.photo_data.Thumbnails), for the misclassified grid
    test_images: np.ndarray | Sequence[np.ndarray]
    params: dict[str, object] = field(default_factory=dict)  # data hashes and row counts
    # Photo data only: which validation and test photos had a hand found (the others count as errors).
    val_found: np.ndarray | None = None  # over all validation photos; x_val/y_val hold the found ones only
    val_labels: np.ndarray | None = None  # class indices of all validation photos
    test_found: np.ndarray | None = None  # x_test has zero rows where no hand was found


@dataclass(frozen=True)
class RunResult:
    """What one training run produced."""

    run_id: str
    model_uri: str  # the run's one model, the recognizer: what is registered and served (asl_mlops.serving)
    val_accuracy: float  # of the final (EMA / restored) weights on the validation split
    val_loss: float
    test: Evaluation
    history: dict[str, list[float]]
    trainable_params: int
    total_params: int


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Sign MNIST labels -> one-hot class vectors (N, 24)."""
    return keras.utils.to_categorical(labels_to_indices(labels), NUM_CLASSES).astype(np.float32)


def prepare_data(config: TrainConfig) -> PreparedData:
    """Validate both data sets (raising InputError before any run starts), split, shape the model inputs: raw
    pixels of CSVs, keypoint features of photo folders (architecture keypoints)."""
    if (config.resolved_architecture == "keypoints") != Path(config.train_data).is_dir():
        if config.resolved_architecture == "keypoints":
            raise InputError(f"train_data {config.train_data}: architecture keypoints trains on a photo folder (one "
                             "sub-folder of photos per letter), not a CSV")
        raise InputError(f"train_data {config.train_data} is a photo folder: architecture {config.resolved_architecture} "
                         "trains on Sign MNIST CSVs; photo folders train architecture keypoints (or auto)")
    if config.resolved_architecture == "keypoints":
        return prepare_photo_data(config)
    train_csv = load_csv(config.train_data)
    test = load_csv(config.test_data)
    split = split_train_val(train_csv, config.val_split, config.val_fraction, config.split_seed)
    return split_data(train_csv, split, test)


def split_data(train_csv: Dataset, split: Split, test: Dataset) -> PreparedData:
    """Model inputs (raw pixels; the model preprocesses them itself) of the training and validation parts of
    `train_csv` and of the test set, with the hashes and row counts a run logs."""
    params = {
        # val_data_hash identifies the validation rows themselves (data, val_split, val_fraction and split_seed
        # together): the registry compares models only when they were validated on the same rows.
        "train_data_hash": train_csv.content_hash, "val_data_hash": split.held_out.content_hash,
        "test_data_hash": test.content_hash, "train_csv_rows": len(train_csv), "train_rows": len(split.train),
        "val_rows": len(split.held_out), "test_rows": len(test), **split.params("val"),
    }
    return PreparedData(to_model_input(split.train.images), one_hot(split.train.labels),
                        to_model_input(split.held_out.images), one_hot(split.held_out.labels),
                        to_model_input(test.images), labels_to_indices(test.labels), test.images, params)


def prepare_photo_data(config: TrainConfig) -> PreparedData:
    """Photo folders -> keypoint features: find the hand in every photo (cached under <cache_dir>/hands/), split
    the training photos at random per letter, and turn each training hand into augmented copies."""
    from asl_mlops import photo_data
    from asl_mlops.hands import hand_model_path

    train_set, test_set = photo_data.load_photo_sets(config.train_data, config.test_data)
    model = hand_model_path()
    cache = Path(config.cache_dir)
    check_cache_dir(cache)
    train_hands = photo_data.detect(train_set, model, cache, "training photos").hands
    test_hands = photo_data.detect(test_set, model, cache, "test photos").hands
    train_index, val_index = photo_data.stratified_split(train_set.labels, config.val_fraction, config.split_seed)
    x_train, y_train = photo_data.augmented_training_features(
        tuple(train_hands[i] for i in train_index), train_set.labels[train_index], config.split_seed)
    val_hands = tuple(train_hands[i] for i in val_index)
    x_val, val_found = photo_data.features_or_zeros(val_hands)
    x_test, test_found = photo_data.features_or_zeros(test_hands)
    val_set = train_set.subset(val_index)
    params = {"train_data_hash": train_set.content_hash, "val_data_hash": val_set.content_hash,
              "test_data_hash": test_set.content_hash, "train_photos": len(train_set),
              "train_rows": len(train_index), "val_rows": len(val_index), "test_rows": len(test_set),
              "train_hands_found": int(sum(h is not None for h in train_hands)),
              "test_hands_found": int(test_found.sum()), "augment_copies": photo_data.AUGMENT_COPIES,
              "hand_model_sha256": file_sha256(model)}
    return PreparedData(x_train, y_train, x_val[val_found], photo_data.one_hot_labels(val_set.labels)[val_found],
                        x_test, labels_to_indices(test_set.labels), photo_data.Thumbnails(test_set, test_hands),
                        params, val_found=val_found, val_labels=labels_to_indices(val_set.labels),
                        test_found=test_found)


def learning_rate_schedule(config: TrainConfig) -> Callable[[int], float]:
    """Inverse-time decay per epoch, as in the original: lr = lr0 / (1 + decay_rate * epoch)."""
    return lambda epoch, lr=None: config.learning_rate / (1.0 + config.decay_rate * epoch)


def training_optimizer(config: TrainConfig) -> WarmupEMAAdam:
    """The optimizer `fit` trains with. WarmupEMAAdam, not Adam(use_ema=True): Keras' average would still be
    mostly the initial weights after a short run (asl_mlops.optimizer)."""
    return WarmupEMAAdam(config.learning_rate, use_ema=config.ema, ema_momentum=config.ema_momentum)


def fit(model: keras.Model, data: PreparedData, config: TrainConfig,
        callbacks: Sequence[keras.callbacks.Callback] = (), metric_prefix: str = "") -> keras.callbacks.History:
    """Compile with Adam and fit on the training split, validating each epoch.

    With `uses_trunk_cache(config)` (resnet50) only the trainable tail is fitted, on cached trunk features
    (asl_mlops.trunk); it shares its layers with `model`, so `model` ends trained all the same.
    With `config.ema` the model ends with the averaged weights; with `config.recompute_batchnorm` too, a cnn's
    BatchNorm statistics are then recomputed for them (`reestimate_batchnorm`; per-epoch validation used the
    training statistics). It is returned compiled with a plain `keras.optimizers.Adam` (holding the trained
    state), so the saved model loads without asl_mlops.
    Per-epoch metrics go to the active MLflow run, their keys prefixed with `metric_prefix`.
    """
    if uses_trunk_cache(config):
        split = split_at_trainable(model)
        features = trunk_features(split, data.x_train, data.x_val, config, trunk_cache_dir(config))
        if mlflow.active_run():
            mlflow.set_tags({"trunk_cache": "hit" if features.misses == 0 else "miss",
                             "trunk_boundary": ",".join(split.boundary)})
            mlflow.log_metrics({"trunk_cache_hits": features.hits, "trunk_cache_misses": features.misses,
                                "trunk_features_seconds": features.seconds})
        target = split.tail
        train_input: Any = ViewBatches(features.views, data.y_train, config.batch_size, config.seed)
        val_input: Any = (tuple(features.val), data.y_val)
    else:
        target = model
        # Keypoint features were augmented as keypoints (asl_mlops.photo_data); image layers don't apply to them.
        augmentation = build_augmentation(config) if config.resolved_architecture != "keypoints" else None
        train_input = make_dataset(data.x_train, data.y_train, config.batch_size, seed=config.seed,
                                   augmentation=augmentation, shuffle=True)
        for layer in model.layers:  # the keypoint network standardises its features with training statistics
            if isinstance(layer, keras.layers.Normalization):
                layer.adapt(data.x_train)
        val_input = make_dataset(data.x_val, data.y_val, config.batch_size, seed=config.seed)
    target.compile(optimizer=training_optimizer(config), **loss_and_metrics(config))
    # The scheduler must run before the loggers so `learning_rate` is in each epoch's logs.
    all_callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.LearningRateScheduler(learning_rate_schedule(config)), keras.callbacks.TerminateOnNaN()]
    if config.ema:  # validate each epoch with the averaged weights, the ones that will be kept
        all_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if config.early_stopping:
        all_callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=1))
    all_callbacks += [MlflowEpochLogger(metric_prefix), *callbacks]
    # A live progress bar on a terminal; one line per epoch in logs (mlflow run, CI).
    verbose = 1 if sys.stdout.isatty() else 2
    # BatchNormalization trains on TensorFlow's fused op: a cnn step takes 21% less time (asl_mlops.fused_batchnorm).
    # `target` was compiled above, so its training step is traced inside the block.
    with fused_batchnorm(model):
        # shuffle=False: the training input shuffles itself (seeded); Keras would only warn that it ignores the flag.
        history = target.fit(train_input, validation_data=val_input, epochs=config.epochs, callbacks=all_callbacks,
                             verbose=verbose, shuffle=False)
        if any(not np.isfinite(v) for v in history.history.get("loss", [])):
            raise FloatingPointError("training diverged: the loss became NaN/inf (try a lower learning_rate)")
        if config.ema and config.recompute_batchnorm and config.resolved_architecture == "cnn":
            # The averaged weights (in the model since fit ended) get BatchNorm statistics of their own.
            start = time.perf_counter()
            reestimate_batchnorm(model, data.x_train, data.y_train, config)
            if mlflow.active_run():
                mlflow.log_metric(f"{metric_prefix}batchnorm_seconds", time.perf_counter() - start)
    # The saved .keras file includes the compile config: a class of ours there would make the logged model
    # fail to load wherever asl_mlops is not imported (plain keras.models.load_model of the logged .keras file).
    # The tail's trainable variables are the full model's, in the same order.
    model.compile(optimizer=as_keras_adam(target.optimizer, model.trainable_variables), **loss_and_metrics(config))
    return history


def reestimate_batchnorm(model: keras.Model, x: np.ndarray, y: np.ndarray, config: TrainConfig) -> None:
    """Recompute `model`'s BatchNorm moving statistics for its current weights: the mean of the batch
    statistics over one pass of (x, y) with the training augmentation, forward only, no weight update (as
    PyTorch's `swa_utils.update_bn` does for averaged weights).

    Training leaves the statistics of the raw weights of its last steps, while the weight average that
    `config.ema` keeps spans more steps than that (--ema-momentum), so the two would not match.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    import tensorflow as tf

    momentum = [layer.momentum for layer in layers]
    batches = make_dataset(x, y, config.batch_size, seed=config.seed, augmentation=build_augmentation(config),
                           shuffle=True)
    # Momentum 0: each traced call leaves one batch's statistics in the moving ones, which are averaged here,
    # each batch weighted by its size (a short last batch counts for its rows). Traced once: a graph, not one
    # eager call per batch (each network's pass: batchnorm_seconds).
    forward = tf.function(lambda xb: model(xb, training=True), reduce_retracing=True)
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
    seen = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for xb, _ in batches:
            forward(xb)  # updates the moving statistics only; no optimizer step
            n = int(xb.shape[0])
            for layer, (mean, variance) in zip(layers, sums):
                mean += n * layer.moving_mean.numpy()
                variance += n * layer.moving_variance.numpy()
            seen += n
        for layer, (mean, variance) in zip(layers, sums):
            layer.moving_mean.assign(mean / seen)
            layer.moving_variance.assign(variance / seen)
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m


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
        return (f"Photo recognizer (hand keypoints into a small network) trained for {config.epochs} epochs (Adam lr "
                f"{config.learning_rate:g}, seed {config.seed}) on the hands found in {data.params['train_rows']} "
                f"photos of {config.train_data} ({data.params['train_hands_found']} of "
                f"{data.params['train_photos']} had a hand), validated on {data.params['val_rows']} photos held out "
                f"at random per letter (split_seed {config.split_seed}), tested on {config.test_data} (a photo with "
                "no hand found counts as an error). Logged model: `recognizer` (pyfunc with the hand model as an "
                "artifact; takes base64 photos, answers letter, top 3 and the hand's box; what is registered and "
                "served).")
    return (f"{config.resolved_architecture} trained for {config.epochs} epochs (Adam lr {config.learning_rate:g}, decay "
            f"{config.decay_rate:g}, batch {config.batch_size}, seed {config.seed}) on {data.params['train_rows']} "
            f"rows of {config.train_data}, validated on {data.params['val_rows']} rows held out "
            f"{'as whole families of near-duplicates' if config.val_split == 'grouped' else 'at random'} "
            f"(split_seed {config.split_seed}), tested on {config.test_data}. Logged model: `recognizer` (pyfunc "
            f"around the Keras network, which preprocesses raw pixels itself; takes pixel rows or images; what is "
            f"registered and served).")


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
    """MLflow's own random run name (adjective-animal-number)."""
    from mlflow.utils.name_utils import _generate_random_name

    return _generate_random_name()


#: Python random numbers that the training seed never touches (seeded from OS entropy at import).
_UNSEEDED = random.Random()


@contextlib.contextmanager
def unseeded_python_random():
    """Run the block with Python's `random` drawing from `_UNSEEDED`, so MLflow's random run names differ
    between runs with the same training seed; the seeded state is back after the block."""
    seeded = random.getstate()
    random.setstate(_UNSEEDED.getstate())
    try:
        yield
    finally:
        _UNSEEDED.setstate(random.getstate())
        random.setstate(seeded)


def train_and_evaluate(config: TrainConfig, data: PreparedData | None = None, *, run_name: str | None = None,
                       nested: bool = False, tags: dict[str, str] | None = None,
                       callbacks: Sequence[keras.callbacks.Callback] = ()) -> RunResult:
    """Train one model and log it all to one MLflow run (the active one under `mlflow run`).

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
    with unseeded_python_random():
        # Names say what ran and differ between runs: cnn-seed42-<MLflow's random words>.
        name = run_name or f"{config.resolved_architecture}-seed{config.seed}-{generate_run_name()}"
        run_context = mlflow.start_run(run_name=name, nested=nested, tags=tags)
    with run_context as run:
        if run.info.run_name != name:  # a run `mlflow run` created (and named) for us
            mlflow.set_tag("mlflow.runName", name)
        log_config(config, data.params)
        mlflow.set_tags({"device": training_device(),
                         "mlflow.note.content": run_description(config, data)})
        datasets = mlflow_datasets(data, config)
        for context, dataset in datasets.items():
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
        # The run's one validation accuracy: the served model's (per-epoch values are epoch_val_accuracy, ...).
        final_val = {"val_accuracy": val.accuracy, "val_loss": val.loss}
        mlflow.log_metrics(final_val)
        log_evaluation(test, data.test_images, prefix="test")
        log_figures({"training_curves": plots.training_curves_figure(history.history)})
        # The run's one model, registered and served as it was measured above. Logged at the step after the last
        # epoch: MLflow copies the run's metrics of the model's step onto it, and per-epoch values are not its own.
        if config.resolved_architecture == "keypoints":
            from asl_mlops.hand_recognizer import log_hand_recognizer
            from asl_mlops.hands import hand_model_path

            model_info = log_hand_recognizer(model, hand_model_path(), config.test_data, step=config.epochs)
        else:
            model_info = log_recognizer(model, data.test_images, architecture=config.resolved_architecture,
                                        tta=config.tta, step=config.epochs)
        # The final metrics, linked to the logged model (its page in the UI, and every registered version of
        # it, show these, per dataset).
        final_test = {k: v for k, v in test.metrics("test").items()
                      if k in ("test_accuracy", "test_loss", "test_errors")}
        mlflow.log_metrics(final_val, model_id=model_info.model_id, dataset=datasets["validation"])
        mlflow.log_metrics(final_test, model_id=model_info.model_id, dataset=datasets["test"])
        # The logged model's "Description" in the UI (and of every registered version of it).
        mlflow.set_logged_model_tags(model_info.model_id,
                                     {"mlflow.note.content": model_description(config, data, val, test)})
        logger.info("run %s: val_accuracy %.4f, test_accuracy %.4f (%d errors of %d)", run.info.run_id,
                    val.accuracy, test.accuracy, test.errors, len(data.y_test))
    return RunResult(run.info.run_id, model_info.model_uri, val.accuracy, val.loss, test,
                     {k: [float(v) for v in vs] for k, vs in history.history.items()}, trainable, total)


def train_and_register(config: TrainConfig) -> tuple[RunResult, "Registration | None"]:
    """`train_and_evaluate`, then, with `config.register`, register the run's recognizer under the
    no-regression rule. Reached only when the run finished cleanly, so a failed run never registers."""
    result = train_and_evaluate(config)
    if not config.register:
        return result, None
    from asl_mlops.registry import register_if_better

    return result, register_if_better(result.run_id, result.model_uri, config.model_name,
                                      tags={"source": "asl-mlops train"})
