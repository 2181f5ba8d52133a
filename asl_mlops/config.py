"""Typed settings for each concern, built once from the CLI (or MLproject) and logged in one place.

One name per knob everywhere: the dataclass field `learning_rate` is the MLproject parameter
`learning_rate`, the CLI flag `--learning-rate` and the MLflow param `learning_rate`. The CLI
builds its options from these fields (`asl_mlops.cli.options_from`), and a test checks that
MLproject declares the same names, so the four cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from asl_mlops.errors import InputError

ARCHITECTURES = ("cnn", "resnet50")


def knob(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - mirrors click's name
    """A dataclass field with the help text its CLI option shows."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; logged as MLflow params by `tracking.log_config`."""

    # Data
    train_data: str = knob("data/sign_mnist_train.csv", "Sign MNIST training CSV (.csv or .csv.gz).")
    test_data: str = knob("data/sign_mnist_test.csv", "Sign MNIST test CSV, used only for the final evaluation.")
    val_fraction: float = knob(0.2, "Share of the training CSV held out for validation (stratified).")
    cache_dir: str = knob("data/cache", "Where preprocessed arrays are cached as .npy (keyed by data + settings).")
    # Model
    architecture: str = knob("cnn", "Model to train: 'cnn' (compact, default) or 'resnet50' (the original design).",
                             choices=ARCHITECTURES)
    weights: str = knob("auto", "ResNet50 initial weights: 'imagenet', 'none', or a local .h5/.weights.h5 file. "
                                "'auto' = imagenet for resnet50, none for cnn.")
    # Optimisation: Adam with lr = learning_rate / (1 + decay_rate * epoch), as in the original.
    learning_rate: float = knob(2e-3, "Initial Adam learning rate (lr0). The original ResNet50 design used 1e-5.")
    decay_rate: float = knob(0.2, "Per-epoch inverse-time decay: lr = lr0 / (1 + decay_rate * epoch).")
    l2: float = knob(1e-4, "L2 penalty on dense (and, for cnn, conv) kernels. The original used 0.001.")
    epochs: int = knob(12, "Training epochs (upper bound when early stopping is on).")
    batch_size: int = knob(128, "Mini-batch size.")
    seed: int = knob(42, "Seed for the split, weight init, shuffling and augmentation.")
    ema: bool = knob(True, "Keep an exponential moving average of the weights and use it for evaluation "
                           "(weight averaging: steadier than the last step's weights).")
    # Augmentation (training batches only); 0 or false switches each one off.
    augment: bool = knob(True, "Master switch for training-time augmentation.")
    flip_horizontal: bool = knob(False, "Random horizontal flips (mirrors the hand: left/right-handed signers).")
    flip_vertical: bool = knob(False, "Random vertical flips (the original design used them).")
    brightness: float = knob(0.1, "Random brightness change, as a fraction of the pixel range (0.1 = +-10%).")
    contrast: float = knob(0.1, "Random contrast factor range 1 +- contrast (0.1 = 0.9-1.1).")
    rotation: float = knob(10.0, "Random rotation, in degrees either way.")
    zoom: float = knob(0.1, "Random zoom, as a fraction either way.")
    translation: float = knob(0.1, "Random shift, as a fraction of the image size either way.")
    # Early stopping on validation loss, restoring the best weights.
    early_stopping: bool = knob(False, "Stop when val_loss has not improved for `patience` epochs; restore best weights.")
    patience: int = knob(3, "Epochs without val_loss improvement before early stopping.")
    # Registry (see asl_mlops.registry)
    register: bool = knob(False, "Register the model in the MLflow Model Registry after a clean run "
                                 "(the 'champion' alias moves only if it does not regress).")
    model_name: str = knob("asl-recognizer", "Registered model name used when --register is on.")

    def __post_init__(self) -> None:
        checks = [
            (self.architecture in ARCHITECTURES, f"architecture must be one of {', '.join(ARCHITECTURES)}"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be between 0 and 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.decay_rate >= 0, "decay_rate must be >= 0"),
            (self.l2 >= 0, "l2 must be >= 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (0 <= self.brightness < 1, "brightness must be in [0, 1)"),
            (0 <= self.contrast < 1, "contrast must be in [0, 1)"),
            (0 <= self.rotation <= 180, "rotation must be in [0, 180] degrees"),
            (0 <= self.zoom < 1, "zoom must be in [0, 1)"),
            (0 <= self.translation < 1, "translation must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"invalid training setting: {message}")

    @property
    def resolved_weights(self) -> str:
        """The weights actually used: 'auto' resolved per architecture."""
        if self.weights == "auto":
            return "imagenet" if self.architecture == "resnet50" else "none"
        return self.weights

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, Any]:
        """The MLflow params for this config: every field under its own name."""
        params = dataclasses.asdict(self)
        params["weights"] = self.resolved_weights
        return params
