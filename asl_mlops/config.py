"""Typed settings for each concern, built once from the CLI (or MLproject) and logged in one place.

One name per knob everywhere: the dataclass field `learning_rate` is the MLproject parameter
`learning_rate`, the CLI flag `--learning-rate` and the MLflow param `learning_rate`. The CLI
builds its options from these fields (`asl_mlops.cli.options_from`), and a test checks that
MLproject declares the same names, so the four cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asl_mlops.errors import InputError

ARCHITECTURES = ("auto", "cnn", "resnet50", "keypoints")
VAL_SPLITS = ("grouped", "random")
#: The registered model of Sign MNIST recognizers when no --model-name is given.
DEFAULT_MODEL_NAME = "asl-recognizer"
#: The alias of the registered version that serves, and the URI that loads it.
CHAMPION = "champion"
CHAMPION_URI = f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}"
#: Registered model names we accept: they are quoted into MLflow search filters, so no quotes.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]*")


def knob(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - mirrors click's name
    """A dataclass field with the help text its CLI option shows."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; logged as MLflow params by `tracking.log_config`."""

    # Data
    train_data: str = knob("data/sign_mnist_train.csv", "Training data: a Sign MNIST CSV (.csv or .csv.gz), or a photo "
                                                        "folder with one sub-folder of PNG/JPEG photos per letter.")
    test_data: str = knob("data/sign_mnist_test.csv", "Test data of the same kind (CSV or photo folder), used only for "
                                                      "the final evaluation.")
    val_split: str = knob("grouped", "How validation is held out of the training data: 'grouped' holds out whole "
                                     "families of near-duplicate images of a CSV (the variants of one photo), or "
                                     "whole signers of a photo folder that names them; 'random' holds out rows or "
                                     "photos.",
                          choices=VAL_SPLITS)
    # Small: every family held out is a photo the logged model never trains on (docs/decisions.md).
    val_fraction: float = knob(0.05, "Share of the training data held out for validation (of the families for "
                                     "'grouped'), stratified by label.")
    # Apart from `seed`: runs that differ only in their training seed validate on the same rows, so the
    # registry's champion rule can compare them.
    split_seed: int = knob(0, "Seed of the train/validation split only (fixed, so runs with other training seeds "
                              "share their validation rows).")
    cache_dir: str = knob("data/cache", "Cache folder: resnet50's frozen-trunk features go to <cache_dir>/trunk/ "
                                       "(keyed by data + settings), the hands found in photos to <cache_dir>/hands/ "
                                       "(keyed by photo and hand model). Unused by cnn.")
    # Model
    architecture: str = knob("auto", "Model to train: 'cnn' (compact Sign MNIST network), 'resnet50' (the original "
                                     "design), 'keypoints' (the photo recognizer: hand keypoints into a small network); "
                                     "'auto' = keypoints for a photo folder, cnn for a CSV.", choices=ARCHITECTURES)
    weights: str = knob("auto", "ResNet50 initial weights: 'imagenet', 'none', or a local .h5/.weights.h5 file. "
                                "'auto' = imagenet for resnet50, none for cnn.")
    # The cnn's width: filters of its three conv blocks (asl_mlops.training.models.build_cnn; docs/decisions.md).
    cnn_filters: str = knob("32,64,32", "cnn: filters of its three conv blocks, comma-separated.")
    # ResNet50 only: train the trainable tail on cached outputs of the frozen trunk (asl_mlops/training/trunk.py).
    trunk_cache: bool = knob(True, "resnet50: run the frozen part of the network once per image and view, cache its "
                                   "outputs under --cache-dir, and train only the trainable tail on them (the same "
                                   "model). No effect for cnn.")
    trunk_views: int = knob(4, "resnet50 with --trunk-cache and augmentation on: augmented views per training image, "
                               "drawn once with the seed and cached; each epoch uses one per image.")
    # A small ensemble exported as ONE Keras model (asl_mlops.training.models.average_ensemble), so serving stays one model.
    ensemble: str = knob("auto", "Networks to train (seeds seed, seed+1, ...), logged and served as one model "
                                 "that averages their softmax: a whole number from 1 to 8, or 'auto' = 2 for cnn, 1 for resnet50 and "
                                 "keypoints (which support only 1). Each trains for --epochs.")
    # Optimisation: Adam with lr = learning_rate / (1 + decay_rate * epoch), as in the original.
    learning_rate: float = knob(1e-3, "Initial Adam learning rate (lr0).")
    decay_rate: float = knob(0.1, "Per-epoch inverse-time decay: lr = lr0 / (1 + decay_rate * epoch).")
    l2: float = knob(0.0, "L2 penalty on dense (and, for cnn, conv) kernels; 0 = off.")
    label_smoothing: float = knob(0.0, "Label smoothing of the training loss: targets become 1 - s + s/24 and "
                                       "s/24; 0 = off.")
    epochs: int = knob(12, "Training epochs of each network (upper bound when early stopping is on).")
    batch_size: int = knob(128, "Mini-batch size.")
    seed: int = knob(42, "Training seed: weight init, shuffling and augmentation (the split has --split-seed).")
    ema: bool = knob(True, "Keep an exponential moving average of the weights and use it for evaluation "
                           "(Keras' Adam use_ema; per-epoch validation uses it too).")
    ema_momentum: float = knob(0.999, "Upper bound of the weight average's momentum; a run of N optimizer steps "
                                      "uses min(this, 1 - 10/N), so the average spans about its last tenth.")
    recompute_batchnorm: bool = knob(True, "cnn with --ema: after training, recompute the BatchNorm statistics for the "
                                           "averaged weights over one pass of the augmented training data.")
    # Test-time augmentation of the final evaluation and the served recognizer (asl_mlops/recognizers/tta.py).
    tta: bool = knob(True, "Test-time augmentation: the recognizer (what is registered and served) and the run's "
                           "final val/test metrics average each prediction over 9 views (1-px shifts, +-6 degree "
                           "rotations, +-6% zooms).")
    # Augmentation (training batches only); 0 or false switches each one off.
    augment: bool = knob(True, "Master switch for training-time augmentation.")
    flip_horizontal: bool = knob(False, "Random horizontal flips (mirrors the hand: left/right-handed signers).")
    flip_vertical: bool = knob(False, "Random vertical flips (the original design used them).")
    brightness: float = knob(0.1, "Random brightness change, as a fraction of the pixel range (0.1 = +-10%).")
    contrast: float = knob(0.1, "Random contrast factor range 1 +- contrast (0.1 = 0.9-1.1).")
    rotation: float = knob(10.0, "Random rotation, in degrees either way.")
    zoom: float = knob(0.1, "Random zoom, as a fraction either way.")
    translation: float = knob(0.1, "Random shift, as a fraction of the image size either way.")
    # Photos: how much each signer counts, and when the recognizer says "not sure" (asl_mlops/hands/calibration.py).
    signer_balance: float = knob(0.5, "keypoints: weight each training photo by n ** -signer_balance, n its signer's "
                                      "photo count (0 = every photo alike, 1 = every signer alike).")
    min_answered_accuracy: float = knob(0.95, "keypoints: answer 'not sure' below the lowest confidence at which the "
                                              "validation signers' answered letters are at least this accurate "
                                              "(0 = always name a letter).")
    # Early stopping on validation loss, restoring the best weights.
    early_stopping: bool = knob(False, "Stop when val_loss has not improved for `patience` epochs; restore best weights.")
    patience: int = knob(3, "Epochs without val_loss improvement before early stopping.")

    def __post_init__(self) -> None:
        checks = [
            (self.val_split in VAL_SPLITS, f"val_split must be one of {', '.join(VAL_SPLITS)}"),
            (self.architecture in ARCHITECTURES, f"architecture must be one of {', '.join(ARCHITECTURES)}"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be between 0 and 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.decay_rate >= 0, "decay_rate must be >= 0"),
            (self.l2 >= 0, "l2 must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.signer_balance <= 1, "signer_balance must be in [0, 1]"),
            (0 <= self.min_answered_accuracy < 1, "min_answered_accuracy must be in [0, 1)"),
            (0 < self.ema_momentum < 1, "ema_momentum must be between 0 and 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (1 <= self.trunk_views <= 64, "trunk_views must be between 1 and 64"),
            (self._filter_counts() is not None,
             "cnn_filters must be three whole numbers from 1 to 512, comma-separated (e.g. 32,64,32)"),
            (self._members() is not None, "ensemble must be 'auto' or a whole number from 1 to 8"),
            (self._members() in (None, 1) or self.resolved_architecture == "cnn",
             "ensemble > 1 is for architecture cnn only"),
            (0 <= self.brightness < 1, "brightness must be in [0, 1)"),
            (0 <= self.contrast < 1, "contrast must be in [0, 1)"),
            (0 <= self.rotation <= 180, "rotation must be in [0, 180] degrees"),
            (0 <= self.zoom < 1, "zoom must be in [0, 1)"),
            (0 <= self.translation < 1, "translation must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"invalid training setting: {message}")
        # One spelling per value ('auto', '2'), whether it came from the CLI, MLproject ('2.0') or Python (2).
        ensemble = str(self.ensemble).strip().lower()
        object.__setattr__(self, "ensemble", ensemble if ensemble == "auto" else str(self._members()))

    def _members(self) -> int | None:
        text = str(self.ensemble).strip().lower()
        if text == "auto":
            return 2 if self.resolved_architecture == "cnn" else 1
        try:
            number = float(text)  # `mlflow run` may pass '2.0'
        except ValueError:
            return None
        return int(number) if number.is_integer() and 1 <= number <= 8 else None

    @property
    def ensemble_members(self) -> int:
        """`ensemble` as a number of networks ('auto' resolved per architecture)."""
        members = self._members()
        assert members is not None  # checked in __post_init__
        return members

    def _filter_counts(self) -> tuple[int, int, int] | None:
        parts = [p.strip() for p in str(self.cnn_filters).split(",")]
        if len(parts) != 3 or not all(p.isdecimal() and 1 <= int(p) <= 512 for p in parts):
            return None
        return int(parts[0]), int(parts[1]), int(parts[2])

    @property
    def filter_counts(self) -> tuple[int, int, int]:
        """`cnn_filters` as three numbers."""
        counts = self._filter_counts()
        assert counts is not None  # checked in __post_init__
        return counts

    @property
    def resolved_architecture(self) -> str:
        """The model actually trained: 'auto' resolved by the training data (a photo folder: keypoints)."""
        if self.architecture == "auto":
            return "keypoints" if Path(self.train_data).is_dir() else "cnn"
        return self.architecture

    @property
    def resolved_weights(self) -> str:
        """The weights actually used: 'auto' resolved per architecture."""
        if self.weights == "auto":
            return "imagenet" if self.resolved_architecture == "resnet50" else "none"
        return self.weights

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "TrainConfig":
        """The config a run logged (its MLflow params, all strings; `to_params`), fields it did not log at their
        defaults; InputError naming a value that does not read back."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in params:
                continue
            text, kind = params[f.name], str(f.type)
            try:
                values[f.name] = ({"true": True, "false": False}[text.lower()] if kind == "bool"
                                  else int(float(text)) if kind == "int" else float(text) if kind == "float" else text)
            except (KeyError, ValueError):
                raise InputError(f"logged param {f.name}={text!r} is not a {kind}") from None
        return cls(**values)

    def to_params(self) -> dict[str, Any]:
        """The MLflow params for this config: every field under its own name, plus `resolved_architecture`,
        `resolved_weights` and `ensemble_members`."""
        # Booleans as MLproject spells them ('true'/'false'), so CLI and `mlflow run` runs log the same.
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in dataclasses.asdict(self).items()}
        return {**params, "resolved_architecture": self.resolved_architecture, "resolved_weights": self.resolved_weights,
                "ensemble_members": self.ensemble_members}


#: Default size of `asl-mlops data synth`'s training CSV: 9,600 rows give the default batch of 128 enough
#: steps (60 per epoch) for `mlflow run . -P epochs=3` to learn the set (>= 0.9; 2,400 rows, 15 steps per
#: epoch, leave BatchNorm's moving statistics unsettled after 3 epochs and score ~0.14).
DEMO_TRAIN_ROWS = 9600
DEMO_TEST_ROWS = 720
# (Here, not in asl_mlops.data.synth, so the CLI shows them without importing OpenCV and pandas at start-up.)


PRUNERS = ("median", "hyperband", "none")
SWEPT_FIELDS = ("learning_rate", "decay_rate", "l2")  # TrainConfig fields an Optuna sweep chooses per trial


@dataclass(frozen=True)
class SweepConfig:
    """How `asl-mlops tune` searches: the study, its storage, the pruner and the search-space bounds.

    Everything else a trial needs is a `TrainConfig`, fixed for the whole sweep (asl_mlops.tuning.sweep).
    """

    # The study: n_trials counts trials of the whole study, so re-running the same name resumes it.
    n_trials: int = knob(20, "Total complete + pruned trials wanted in the study; a re-run of the same "
                             "study runs only the missing ones.")
    study_name: str = knob("asl-sweep", "Optuna study name; re-using it resumes that study.")
    storage: str = knob("auto", "SQLAlchemy URL of the Optuna storage (e.g. postgresql://user@host/db). 'auto': "
                                "sqlite:///optuna.db beside the MLflow store (next to MLFLOW_TRACKING_URI's "
                                "SQLite file or mlruns folder, else in the working directory).")
    # A dead process's trial is noticed by its missing heartbeat (failed after 2x this, then retried).
    # Parallel workers: any number of `tune` processes may share one study (on one machine or many); --workers N
    # starts N of them here. Several processes need a storage server (PostgreSQL, MySQL), not SQLite.
    workers: int = knob(1, "Worker processes to start on this machine for the study (each runs trials until the "
                           "study has n_trials; needs --storage on a database server when > 1). Workers started "
                           "elsewhere on the same --storage and --study-name join the same study.")
    heartbeat_interval: int = knob(60, "Seconds between a running trial's heartbeats in the storage; a trial "
                                       "silent for twice as long is failed and retried by the next run.")
    # Pruning on val_accuracy, reported every epoch.
    pruner: str = knob("median", "Stop unpromising trials early: 'median', 'hyperband' or 'none'.", choices=PRUNERS)
    pruner_startup_trials: int = knob(3, "Median pruner: trials that always run to the end before pruning starts.")
    pruner_warmup_epochs: int = knob(2, "Epochs every trial runs before it can be pruned (hyperband: its "
                                        "minimum resource, at least 1).")
    # Search space; learning_rate and l2 are sampled log-uniformly, decay_rate uniformly.
    learning_rate_min: float = knob(3e-4, "Lower bound of learning_rate (log-uniform).")
    learning_rate_max: float = knob(1e-2, "Upper bound of learning_rate (log-uniform).")
    decay_rate_min: float = knob(0.0, "Lower bound of decay_rate (uniform).")
    decay_rate_max: float = knob(0.5, "Upper bound of decay_rate (uniform).")
    l2_min: float = knob(1e-6, "Lower bound of l2 (log-uniform).")
    l2_max: float = knob(1e-3, "Upper bound of l2 (log-uniform).")

    def __post_init__(self) -> None:
        checks = [
            (self.n_trials >= 1, "n_trials must be >= 1"),
            (bool(self.study_name.strip()) and not set("'\"`") & set(self.study_name),
             "study_name must be non-empty, without quotes"),
            (self.heartbeat_interval >= 1, "heartbeat_interval must be >= 1 second"),
            (1 <= self.workers <= 64, "workers must be between 1 and 64"),
            (self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}"),
            (self.pruner_startup_trials >= 0, "pruner_startup_trials must be >= 0"),
            (self.pruner_warmup_epochs >= 0, "pruner_warmup_epochs must be >= 0"),
            (self.learning_rate_min > 0, "learning_rate_min must be > 0 (log scale)"),
            (self.learning_rate_max > 0, "learning_rate_max must be > 0 (log scale)"),
            (self.learning_rate_min <= self.learning_rate_max, "learning_rate_min must be <= learning_rate_max"),
            (self.decay_rate_min >= 0, "decay_rate_min must be >= 0"),
            (self.decay_rate_max >= 0, "decay_rate_max must be >= 0"),
            (self.decay_rate_min <= self.decay_rate_max, "decay_rate_min must be <= decay_rate_max"),
            (self.l2_min > 0, "l2_min must be > 0 (log scale)"),
            (self.l2_max > 0, "l2_max must be > 0 (log scale)"),
            (self.l2_min <= self.l2_max, "l2_min must be <= l2_max"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"invalid sweep setting: {message}")

    def replace(self, **changes: Any) -> "SweepConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, Any]:
        """The MLflow params of the sweep's parent run (the storage URL without its password)."""
        # Booleans as MLproject spells them, like TrainConfig.to_params.
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in dataclasses.asdict(self).items()}
        params.pop("storage")  # logged as a tag, password hidden (asl_mlops.tuning.sweep)
        return params


@dataclass(frozen=True)
class RegistryConfig:
    """Whether and where `train` and `tune` register the recognizer they made (asl_mlops.registry)."""

    register: bool = knob(False, "Register the recognizer in the MLflow Model Registry after a clean run, as "
                                 "'challenger', and run the validation gate on it: 'champion' moves to it only if "
                                 "it passes every check (asl-mlops registry validate --help).")
    model_name: str = knob(DEFAULT_MODEL_NAME, "Registered model name to register under.")

    def __post_init__(self) -> None:
        if not MODEL_NAME_PATTERN.fullmatch(self.model_name):
            raise InputError("invalid registry setting: model_name must be letters, digits, spaces, '.', '_' or '-'")

    def to_params(self) -> dict[str, Any]:
        """The MLflow params `register` and `model_name`, booleans spelled as MLproject spells them."""
        return {"register": str(self.register).lower(), "model_name": self.model_name}


#: `tune` registers its best trial's recognizer unless told not to (`train` does only when told to).
TUNE_REGISTRY = RegistryConfig(register=True)


@dataclass(frozen=True)
class TeachConfig:
    """How `asl-mlops teach` adds one person's photos to the champion photo recognizer (asl_mlops.teach)."""

    model_name: str = knob("", "Registered model whose champion is taught; a new version of it is registered and "
                               "promoted if it passes the teach gate. Empty: the only registered model (with several, "
                               "the command lists them).")
    teach_weight: float = knob(10.0, "How much each of the person's photos counts in training, against an average "
                                     "photo of the champion's training data (a few photos must outweigh thousands).")
    held_out_per_letter: int = knob(1, "The person's photos of each letter kept out of the teaching, for the gate's "
                                       "check on that person (the last ones by file name; a letter with fewer photos "
                                       "than this plus one is all taught).")
    min_taught_accuracy: float = knob(0.9, "Gate: accuracy floor on the person's held-out photos, 0-1 (a photo with "
                                           "no hand found is an error).")
    max_others_drop: float = knob(0.01, "Gate: the most the accuracy on other people (the champion's test photos) "
                                        "may fall below the champion's, 0-1 (0.01 = 1 point).")

    def __post_init__(self) -> None:
        checks = [
            (not self.model_name or bool(MODEL_NAME_PATTERN.fullmatch(self.model_name)),
             "model_name must be letters, digits, spaces, '.', '_' or '-'"),
            (0 < self.teach_weight <= 1000, "teach_weight must be in (0, 1000]"),
            (0 <= self.held_out_per_letter <= 100, "held_out_per_letter must be in [0, 100]"),
            (0 <= self.min_taught_accuracy <= 1, "min_taught_accuracy must be in [0, 1]"),
            (0 <= self.max_others_drop <= 1, "max_others_drop must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"invalid teach setting: {message}")


@dataclass(frozen=True)
class GateConfig:
    """What a registered version must pass before `champion` moves to it (asl_mlops.gate; docs/registry.md)."""

    # A floor, not a ranking (min_gain ranks): the 3-epoch synthetic demo scores >= 0.9 and the real-data
    # recognizer 0.9996 on the stand-in test set, while a broken one (unsettled BatchNorm) scores ~0.14.
    min_accuracy: float = knob(0.9, "Sign MNIST recognizers: accuracy floor on the gate's data, 0-1.")
    # 0 keeps the registry's rule: strictly better, an exact tie going to the lower val_loss (registry.is_better).
    min_gain: float = knob(0.0, "Minimum gain in val_accuracy over the champion on the same validation rows, 0-1; "
                                "0 = strictly better (an exact tie goes to the lower val_loss).")
    # A letter the model cannot read costs only 1/24 of the accuracy; this floor names it.
    min_letter_recall: float = knob(0.5, "Sign MNIST recognizers: floor of the worst letter's recall on the gate's "
                                         "data, 0-1.")
    # New people's photos are few per letter, and the hard letters (P, N, M, E, S, T) are read 0.62-0.76 of the time
    # by a model that reads 85% of them (leave one signer out of 28, docs/decisions.md): this floor names a letter the
    # model cannot read at all (chance is 0.04), not one that is hard.
    min_photo_letter_recall: float = knob(0.25, "Photo recognizers: floor of the worst letter's recall on the gate's "
                                                "photo folder, 0-1.")
    # Well below the 85.3% mean over signers in leave-one-signer-out of 28 (docs/decisions.md).
    min_unseen_signer_accuracy: float = knob(0.6, "Photo recognizers: accuracy floor on the gate's photo folder, "
                                                  "which must hold signers the model never trained on (a photo "
                                                  "with no hand found is an error), 0-1.")
    # 5x the served p50 of either recognizer over HTTP (22 ms pixel row, 19.8 ms photo; README); in process the
    # synthetic demo's model answers its 2-row example in 5-10 ms (benchmarks/results/gate.json).
    max_latency_ms: float = knob(100.0, "Serving check: milliseconds within which the version, loaded in a fresh "
                                        "process, must answer its logged input example (median of 3 calls).")

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.min_accuracy <= 1, "min_accuracy must be in [0, 1]"),
            (0 <= self.min_gain <= 1, "min_gain must be in [0, 1]"),
            (0 <= self.min_letter_recall <= 1, "min_letter_recall must be in [0, 1]"),
            (0 <= self.min_photo_letter_recall <= 1, "min_photo_letter_recall must be in [0, 1]"),
            (0 <= self.min_unseen_signer_accuracy <= 1, "min_unseen_signer_accuracy must be in [0, 1]"),
            (self.max_latency_ms > 0, "max_latency_ms must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"invalid gate setting: {message}")

    def to_params(self) -> dict[str, Any]:
        """The thresholds as MLflow params of the gate's evaluation run."""
        return dataclasses.asdict(self)


#: Worker processes by default: one per CPU, at most this many (each holds TensorFlow and the model, ~0.8 GB
#: resident).
MAX_DEFAULT_WORKERS = 4
#: Default request body limit: one image at the recognizers' limit (asl_mlops.data.images.MAX_IMAGE_BYTES = 16 MiB;
#: base64 makes 4 characters of every 3 bytes) plus 1 MiB for the JSON around it; a batch of MAX_ROWS pixel rows is
#: ~3 MB. Written out, not imported (the data stage stands above config); tests/serving/test_app.py checks they agree.
DEFAULT_MAX_BODY_BYTES = 4 * -(-16 * 1024 * 1024 // 3) + 1024 * 1024


def default_workers() -> int:
    """Worker processes when --workers is not given: the CPU count, capped at MAX_DEFAULT_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True)
class ServeConfig:
    """How `asl-mlops serve` serves one model; built by the CLI, passed to the workers as JSON."""

    model_uri: str = knob(CHAMPION_URI,
                          "MLflow URI of the recognizer pyfunc: models:/NAME@ALIAS, models:/NAME/VERSION, "
                          "runs:/RUN_ID/recognizer or a local folder. Downloaded once, then loaded by each worker.")
    host: str = knob("127.0.0.1", "Interface to listen on; 0.0.0.0 listens on all (no authentication: keep it "
                                  "behind your own network controls).")
    port: int = knob(5001, "TCP port to listen on.")
    # Each worker is a process with its own copy of the model (~0.8 GB resident with TensorFlow), so the CPU
    # count (capped) is the default: more workers than cores only adds memory and contention.
    workers: int = knob(default_workers(), "Worker processes, each loading the model once; the default is this "
                                           f"machine's CPU count, at most {MAX_DEFAULT_WORKERS}.")
    max_body_bytes: int = knob(DEFAULT_MAX_BODY_BYTES,
                               "Largest request body in bytes; larger bodies get HTTP 413 before they are read or "
                               "parsed. The default fits one image at the model's limit (16 MiB, base64-encoded) "
                               "or a full batch of 1,024 pixel rows.")
    timeout: int = knob(60, "Seconds one request may take before MLflow's app answers 504 "
                            "(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT).")
    poll_seconds: float = knob(5.0, "With --model-uri models:/NAME@ALIAS: seconds between checks of the version the "
                                    "alias points at; when it moves, each worker loads that version and switches to "
                                    "it without a restart (a version that fails to load is logged and the old one "
                                    "kept). 0 = never check. A URI naming a version never switches.")
    collect_dir: str = knob("", "Teach mode: keep the photos people show the page's teach mode (or upload) in "
                                "DIR/<name>/<LETTER>/, ready for `asl-mlops teach DIR/<name>`. Empty: teach mode is "
                                "off and its endpoint answers 404.")
    collect_max_photos: int = knob(500, "Teach mode: the most photos kept of one person.")

    def check(self) -> None:
        """Raise InputError naming the first setting that cannot work."""
        if not self.model_uri.strip():
            raise InputError(f"--model-uri is empty: give a model URI such as {CHAMPION_URI}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port} is not a TCP port (0-65535)")
        if self.workers < 1:
            raise InputError(f"--workers {self.workers}: at least 1 worker is needed")
        if self.max_body_bytes < 1024:
            raise InputError(f"--max-body-bytes {self.max_body_bytes} is too small for any request (at least 1024)")
        if self.timeout < 1:
            raise InputError(f"--timeout {self.timeout}: give at least 1 second")
        if self.poll_seconds < 0:
            raise InputError(f"--poll-seconds {self.poll_seconds:g}: give 0 (never check) or more")
        if self.collect_max_photos < 1:
            raise InputError(f"--collect-max-photos {self.collect_max_photos}: at least 1 photo")
        if self.collect_dir and Path(self.collect_dir).exists() and not Path(self.collect_dir).is_dir():
            raise InputError(f"--collect-dir {self.collect_dir}: is a file, not a folder")
