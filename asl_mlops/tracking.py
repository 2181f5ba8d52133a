"""The one place that talks to MLflow tracking: params, per-epoch metrics, figures, models."""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import matplotlib.pyplot as plt
import mlflow
from matplotlib.figure import Figure

from asl_mlops.config import TrainConfig

logger = logging.getLogger(__name__)


def log_config(config: TrainConfig, extra: dict[str, Any] | None = None) -> None:
    """Log every setting of `config` (and `extra` facts such as data hashes) as run params."""
    mlflow.log_params({**config.to_params(), **(extra or {})})


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every metric Keras reports at the end of an epoch (loss, accuracy, val_*, learning_rate)
    with step=epoch. Place it after the LearningRateScheduler so `learning_rate` is in the logs."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            # MLflow rejects NaN in some stores; log what is finite and stop training: it diverged.
            logger.error("epoch %d: non-finite %s; stopping", epoch, ", ".join(bad))
            self.model.stop_training = True
            metrics = {k: v for k, v in metrics.items() if k not in bad}
        mlflow.log_metrics(metrics, step=epoch)


def log_figures(figures: dict[str, Figure], artifact_dir: str = "plots") -> None:
    """Log each figure as `<artifact_dir>/<name>.png` and close it."""
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"{artifact_dir}/{name}.png")
        plt.close(figure)
