"""Serving benchmark: the real `mlflow models serve` on the registered recognizer, over loopback HTTP.

    python benchmarks/serve.py                          # trains a cnn on synthetic data first
    python benchmarks/serve.py --train-data ../shared/data/sign_mnist_train.csv.gz --epochs 3
    python benchmarks/serve.py --model-uri models:/asl-recognizer@champion   # uses MLFLOW_TRACKING_URI

Measures: cold start (process start -> first answered /invocations), p50/p99 latency of single-image
requests (pixel row and 28x28 PNG), and latency/throughput of pixel batches of 1, 32 and 256, plus the
model's own forward time per batch in-process (the floor under the HTTP figures). Targets: p50 single
< 25 ms, batch of 256 < 150 ms, cold start <= 15 s. Prints a table; writes benchmarks/results/serve.json.
"""

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGETS = {"p50_single_ms": 25.0, "batch256_ms": 150.0, "cold_start_s": 15.0}


def train_and_register(workdir: Path, train_data: str | None, epochs: int) -> str:
    """Train a cnn (synthetic data unless `train_data`), register it as asl-recognizer@champion."""
    import mlflow

    from asl_mlops.config import TrainConfig
    from asl_mlops.synth import write_synthetic
    from asl_mlops.train import train_and_evaluate

    write_synthetic(workdir / "data")
    train = train_data or str(workdir / "data" / "sign_mnist_train.csv")
    config = TrainConfig(train_data=train, test_data=str(workdir / "data" / "sign_mnist_test.csv"),
                         cache_dir=str(workdir / "cache"), epochs=epochs, batch_size=32 if not train_data else 128,
                         ema=False, seed=0)
    result = train_and_evaluate(config)
    version = mlflow.register_model(result.recognizer_uri, "asl-recognizer")
    mlflow.MlflowClient().set_registered_model_alias("asl-recognizer", "champion", version.version)
    print(f"trained run {result.run_id}: val_accuracy {result.val_accuracy:.4f}", file=sys.stderr)
    return "models:/asl-recognizer@champion"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_uri: str, log_path: Path, first_body: str) -> tuple[subprocess.Popen, str, float]:
    """Start the server; returns (process, url, seconds from start to the first answered prediction)."""
    import requests

    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-p", str(port), "--host", "127.0.0.1"],
        env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - start < 120:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-2000:]}")
        try:
            response = requests.post(f"{url}/invocations", data=first_body,
                                     headers={"Content-Type": "application/json"}, timeout=30)
            if response.status_code == 200:
                return process, url, time.perf_counter() - start
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("server did not answer within 120 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def latencies(session, url: str, body: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        out.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text[:300]
    return out


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="Serve this model (from MLFLOW_TRACKING_URI) instead of training one.")
    parser.add_argument("--train-data", help="Train on this Sign MNIST CSV instead of synthetic data.")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="Requests per single-image latency figure.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()

    import cv2
    import mlflow
    import numpy as np
    import requests

    from asl_mlops.serving import PIXEL_COLUMNS

    workdir = Path(tempfile.mkdtemp(prefix="asl-serve-bench-"))
    try:
        if args.model_uri:
            model_uri = args.model_uri
        else:
            uri = f"sqlite:///{workdir / 'mlflow.db'}"
            os.chdir(workdir)  # artifacts (./mlruns) land in workdir
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)  # also exported to the server through the environment
            model_uri = train_and_register(workdir, args.train_data, args.epochs)

        images = np.random.default_rng(0).integers(0, 256, (256, 28, 28), dtype=np.uint8)

        def pixels(n: int) -> str:
            return json.dumps({"dataframe_split": {"columns": list(PIXEL_COLUMNS),
                                                   "data": images[:n].reshape(n, -1).tolist()}})

        png = base64.b64encode(cv2.imencode(".png", images[0])[1].tobytes()).decode()
        png_body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[png]]}})

        process, url, cold_start = start_server(model_uri, workdir / "server.log", pixels(1))
        try:
            session = requests.Session()
            latencies(session, url, pixels(1), 20)  # warm the connection and the server
            single = {"pixels": latencies(session, url, pixels(1), args.requests),
                      "png": latencies(session, url, png_body, args.requests)}
            batches = {n: latencies(session, url, pixels(n), max(10, args.requests // max(1, n // 8)))
                       for n in (1, 32, 256)}
        finally:
            stop_server(process)

        model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        forward = {}
        for n in (1, 32, 256):
            model.probabilities(images[:n])
            times = []
            for _ in range(30):
                start = time.perf_counter()
                model.probabilities(images[:n])
                times.append(time.perf_counter() - start)
            forward[n] = percentile(times, 50)

        results = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_average_1min": os.getloadavg()[0]},
            "model_uri": model_uri, "trained_on": args.train_data or ("synthetic" if not args.model_uri else None),
            "cold_start_s": cold_start,
            "single": {kind: {"p50_ms": 1e3 * percentile(v, 50), "p99_ms": 1e3 * percentile(v, 99), "n": len(v)}
                       for kind, v in single.items()},
            "batches": {str(n): {"p50_ms": 1e3 * percentile(v, 50), "p99_ms": 1e3 * percentile(v, 99),
                                 "images_per_s": n / percentile(v, 50), "model_forward_ms": 1e3 * forward[n],
                                 "n": len(v)} for n, v in batches.items()},
            "targets": TARGETS,
        }
        results["targets_met"] = {
            "p50_single_ms": max(s["p50_ms"] for s in results["single"].values()) < TARGETS["p50_single_ms"],
            "batch256_ms": results["batches"]["256"]["p50_ms"] < TARGETS["batch256_ms"],
            "cold_start_s": cold_start <= TARGETS["cold_start_s"],
        }
    finally:
        os.chdir(ROOT)
        shutil.rmtree(workdir, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"cold start to first answer: {cold_start:6.2f} s   (target <= {TARGETS['cold_start_s']:.0f} s)")
    print(f"{'request':<16}{'p50 ms':>9}{'p99 ms':>9}{'images/s':>10}{'model ms':>10}")
    for kind, s in results["single"].items():
        print(f"{'single ' + kind:<16}{s['p50_ms']:>9.1f}{s['p99_ms']:>9.1f}{1e3 / s['p50_ms']:>10.0f}{'':>10}")
    for n, b in results["batches"].items():
        print(f"{'batch ' + n:<16}{b['p50_ms']:>9.1f}{b['p99_ms']:>9.1f}{b['images_per_s']:>10.0f}{b['model_forward_ms']:>10.1f}")
    print(f"targets met: {results['targets_met']}  (1-min load average {results['machine']['load_average_1min']:.1f} "
          f"on {os.cpu_count()} CPUs)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
