"""The one place that talks to MLflow tracking: params, per-epoch metrics, figures, models."""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.parse
from importlib import metadata as importlib_metadata
from typing import Any

import keras
import matplotlib.pyplot as plt
import mlflow
from matplotlib.figure import Figure

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError

logger = logging.getLogger(__name__)


#: Seconds to wait for a tracking server's /health before calling it down.
TRACKING_CHECK_TIMEOUT = 5.0


def check_tracking_server(tracking_uri: str | None = None) -> None:
    """InputError (one line, within seconds) if the tracking URI is an HTTP server that does not answer its
    /health endpoint; run before any work, since MLflow's client would retry for minutes at the first call."""
    import requests

    uri = tracking_uri or mlflow.get_tracking_uri()
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return
    health = uri.rstrip("/") + "/health"
    try:
        response = requests.get(health, timeout=TRACKING_CHECK_TIMEOUT)
    except requests.RequestException as err:
        reason = type(err).__name__ + (": connection refused" if "refused" in str(err).lower() else "")
        raise InputError(f"MLflow tracking server {uri} is not reachable ({reason}); start it "
                         f"(mlflow server ...) or set MLFLOW_TRACKING_URI to a running one") from None
    if response.status_code != 200:
        raise InputError(f"MLflow tracking server {uri} is not healthy: GET {health} answered HTTP "
                         f"{response.status_code}")


def ensure_experiment() -> None:
    """Create the experiment MLFLOW_EXPERIMENT_NAME names, if missing, tolerating another process creating it at
    the same moment (MLflow would create it at the first run, and one of two racing workers would crash)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name or os.environ.get("MLFLOW_RUN_ID"):
        return
    client = MlflowClient()
    if client.get_experiment_by_name(name) is None:
        try:
            client.create_experiment(name)
        except MlflowException as err:
            if client.get_experiment_by_name(name) is None:  # not the race: a real error
                raise err


def same_param(logged: str, value: Any) -> bool:
    """Whether an already-logged param string means `value` (`mlflow run` logs -P values as typed,
    e.g. 'false' or '1e-5', before our code runs)."""
    if isinstance(value, bool) or value in ("true", "false"):
        truthy = logged.strip().lower() in ("true", "1", "yes")
        return truthy == (value in (True, "true"))
    if isinstance(value, (int, float)):
        try:
            return float(logged) == float(value)
        except ValueError:
            return False
    if logged == str(value):
        return True
    # A setting we respell ('2.0' or ' AUTO ' typed, `ensemble` '2' or 'auto' in TrainConfig).
    try:
        return float(logged) == float(value)
    except ValueError:
        return logged.strip().lower() == str(value).strip().lower()


def log_new_params(params: dict[str, Any]) -> None:
    """Log `params` on the active run, keeping those `mlflow run` already logged from MLproject when
    they mean the same value; a different value is an error (MLflow params are immutable)."""
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    clashes = {k: (logged[k], v) for k, v in params.items() if k in logged and not same_param(logged[k], v)}
    if clashes:
        raise ValueError(f"params already logged with other values: {clashes}")
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})


def log_config(config: TrainConfig, extra: dict[str, Any] | None = None) -> None:
    """Log every setting of `config` (and `extra` facts such as data hashes) as params of the active run."""
    log_new_params({**config.to_params(), **(extra or {})})


#: The distributions that provide the `tensorflow` module; a logged model names the one installed.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel")


def installed_tensorflow() -> str:
    """The TensorFlow distribution installed here (`tensorflow` if none is found by name)."""
    for name in TENSORFLOW_DISTRIBUTIONS:
        try:
            importlib_metadata.version(name)
            return name
        except importlib_metadata.PackageNotFoundError:
            continue
    return "tensorflow"


def pinned_requirements(packages: tuple[str, ...]) -> list[str]:
    """`package==installed version` for each package: a logged model's pip requirements, given explicitly
    because MLflow's inference of them imports the model in a subprocess (~14 s per logged model).
    `tensorflow` stands for whichever TensorFlow distribution is installed (tensorflow, tensorflow-cpu...)."""
    requirements = []
    for package in packages:
        package = installed_tensorflow() if package == "tensorflow" else package
        try:
            requirements.append(f"{package}=={importlib_metadata.version(package)}")
        except importlib_metadata.PackageNotFoundError:
            requirements.append(package)
    return requirements


def training_device() -> str:
    """What Keras trains on here: the first GPU's name (TensorFlow uses a visible GPU with no flag), else
    the CPU's model name and whether TensorFlow's CPU kernels are oneDNN's or Eigen's (asl_mlops/__init__.py):
    on one AVX2 CPU a default training step took 1.23x as long on Eigen's."""
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    try:  # what TF_ENABLE_ONEDNN_OPTS decided at import; TensorFlow has no public call for it
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return f"CPU: {name}"
    return f"CPU: {name} ({'oneDNN' if _pywrap_util_port.IsMklEnabled() else 'Eigen'})"


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every metric Keras reports at the end of an epoch (loss, accuracy, val_*, learning_rate) as
    `epoch_<name>` with step=epoch, and `epoch_seconds` (the epoch's wall time, validation included): names
    that say they are per epoch, apart from the run's one `val_accuracy`, the served model's. Place it after the
    LearningRateScheduler so `learning_rate` is in the logs. With `prefix`, every key gets it (the further
    members of an ensemble: `member1_epoch_loss`, ...)."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        if hasattr(self, "_epoch_start"):
            metrics["epoch_seconds"] = time.perf_counter() - self._epoch_start
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            # MLflow rejects NaN in some stores; log what is finite and stop training: it diverged.
            logger.error("epoch %d: non-finite %s; stopping", epoch, ", ".join(bad))
            self.model.stop_training = True
            metrics = {k: v for k, v in metrics.items() if k not in bad}
        mlflow.log_metrics({self.prefix + (k if k.startswith("epoch_") else f"epoch_{k}"): v
                            for k, v in metrics.items()}, step=epoch)


def log_figures(figures: dict[str, Figure], artifact_dir: str = "plots") -> None:
    """Log each figure as `<artifact_dir>/<name>.png` and close it."""
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"{artifact_dir}/{name}.png")
        plt.close(figure)


def log_input(dataset: "mlflow.data.dataset.Dataset", context: str, attempts: int = 3) -> None:
    """`mlflow.log_input`, retried when another run registered the same dataset at the same moment.

    MLflow's SQL store looks the dataset up, then inserts it; two workers of one sweep starting a trial together
    can both miss it, and the second insert fails on the (experiment, name, digest) key (seen with PostgreSQL
    behind `mlflow server`). The failed call wrote nothing, and on retry the store finds the dataset and links it."""
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as err:
            duplicate = "duplicate key" in str(err) or "UNIQUE constraint failed" in str(err)
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
