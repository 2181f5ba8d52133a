"""One trained, registered and served recognizer shared by tests/serving/test_recognizer.py, test_client.py and test_app.py.

Training (~1 min) and starting `mlflow models serve` (~15 s) dominate those tests, so they share one
`ServedModel`: the session fixture `served` (tests/conftest.py) takes it from `acquire` and gives it back with
`release`; the server stops and its folder is deleted when the last user releases it. Everything (synthetic data, SQLite store, artifacts,
server log) lives in one `tempfile.mkdtemp` folder, not under pytest's basetemp: concurrent pytest
sessions prune old basetemp folders, which would pull the store from under a running server.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import requests
from conftest import PLUMBING_CNN

from asl_mlops.config import TrainConfig
from asl_mlops.data.sign_mnist import PIXEL_COLUMNS, load_csv
from asl_mlops.data.synth import write_synthetic
from asl_mlops.train import RunResult, train_and_evaluate

MODEL_NAME = "asl-recognizer"
START_TIMEOUT = 90.0  # seconds for the scoring server to answer /ping


@dataclass
class ServedModel:
    url: str  # http://127.0.0.1:PORT
    tracking_uri: str
    result: RunResult
    test_images: np.ndarray  # uint8 (N, 28, 28), the synthetic test set
    test_labels: np.ndarray
    workdir: Path
    process: subprocess.Popen
    users: int = 0

    def post(self, body: object, timeout: float = 60.0) -> requests.Response:
        return requests.post(f"{self.url}/invocations", json=body, timeout=timeout)


_served: ServedModel | None = None
_STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextmanager
def using_store(uri: str) -> Iterator[None]:
    """Make `uri` this process's tracking and registry store, then put back the previous ones.

    mlflow.set_tracking_uri / set_registry_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into
    os.environ (for subprocesses), so those are restored too.
    """
    saved_env = {name: os.environ.get(name) for name in _STORE_VARIABLES}
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def pixels_body(images: np.ndarray) -> dict:
    return {"dataframe_split": {"columns": list(PIXEL_COLUMNS), "data": images.reshape(len(images), -1).tolist()}}


def png_base64(image: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def images_body(images: np.ndarray) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[png_base64(image)] for image in images]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_uri: str, tracking_uri: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start `mlflow models serve` on a free loopback port; returns once /ping answers 200."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri, "TF_CPP_MIN_LOG_LEVEL": "2",
           # the CLI runs `uvicorn` by name, so the venv's bin must be on PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(log_path, "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-p", str(port), "--host", "127.0.0.1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    stop_server(process)
    raise RuntimeError(f"no /ping answer within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server's process group (the mlflow CLI and the uvicorn it started)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def train_small_recognizer(workdir: Path, experiment: str, **changes: object) -> tuple[str, RunResult]:
    """A small Sign MNIST recognizer (synthetic set written to workdir/data; 5 epochs of batch 32 learn it) logged
    in a SQLite store in `workdir`, with `changes` to its TrainConfig; returns (tracking URI, its run)."""
    write_synthetic(workdir / "data", train_rows=2400, test_rows=720)
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    config = TrainConfig(train_data=str(workdir / "data" / "sign_mnist_train.csv"),
                         test_data=str(workdir / "data" / "sign_mnist_test.csv"), cache_dir=str(workdir / "cache"),
                         epochs=5, batch_size=32, ema=False, seed=0, cnn_filters=PLUMBING_CNN, ensemble=1)
    cwd = Path.cwd()
    os.chdir(workdir)  # the store's artifacts (./mlruns) land in workdir
    try:
        # Through the environment, as the CLI does: MLflow creates the experiment at the first run.
        with using_store(tracking_uri), pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
            return tracking_uri, train_and_evaluate(config.replace(**changes))
    finally:
        os.chdir(cwd)


def acquire() -> ServedModel:
    """The shared served model, trained and started on first use."""
    global _served
    if _served is None:
        workdir = Path(tempfile.mkdtemp(prefix="asl-serving-tests-"))
        tracking_uri, result = train_small_recognizer(workdir, "serving-tests")
        test = load_csv(workdir / "data" / "sign_mnist_test.csv")
        with using_store(tracking_uri):
            version = mlflow.register_model(result.model_uri, MODEL_NAME)
            mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version.version)
        process, url = start_server(f"models:/{MODEL_NAME}@champion", tracking_uri, workdir / "server.log")
        _served = ServedModel(url, tracking_uri, result, test.images, test.labels, workdir, process)
    _served.users += 1
    return _served


def release(served: ServedModel) -> None:
    global _served
    served.users -= 1
    if served.users == 0:
        stop_server(served.process)
        shutil.rmtree(served.workdir, ignore_errors=True)
        _served = None
