"""Serving benchmark: the real `mlflow models serve` (and, with --load, `asl-mlops serve`) on the registered
recognizer, over loopback HTTP.

    python benchmarks/serve.py                          # trains a cnn on synthetic data first
    python benchmarks/serve.py --train-data ../shared/data/sign_mnist_train.csv.gz --epochs 3
    python benchmarks/serve.py --model-uri models:/asl-recognizer@champion   # uses MLFLOW_TRACKING_URI
    python benchmarks/serve.py --load                   # both servers under 8 clients -> serve-load.json
    python benchmarks/serve.py --load --ensemble 1 --ensemble 2   # the same for each, and their ratios
    python benchmarks/serve.py --tiny --out /tmp/serve.json      # a narrow 1-epoch model, few requests (a smoke test)

--load: `mlflow models serve -w N` and `asl-mlops serve --workers N` (N = CPU count), one after the other
on the same model: single-client p50/p99 (pixel row, PNG), then 8 clients for 20 s each sending LOAD_MIX
(45% pixel rows, 45% PNGs, 10% hostile: no Content-Type, JSON nested 3,000 deep, a JSON list, cut-off JSON,
a 25 MiB body), with status codes by kind, p50/p99 of the valid requests, throughput, 5xx count and the
server's resident memory, side by side with asl-mlops/mlflow ratios. The clients share the CPUs with the
server, as on one machine. Targets (asl-mlops serve): p50 < 40 ms and p99 < 150 ms under load, single-client
p50 < 15 ms. With several --ensemble values, a model of each (trained alike, registered under its own name) is
put through the same, one after the other, with the ratios of each to the first.

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

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGETS = {"p50_single_ms": 25.0, "batch256_ms": 150.0, "cold_start_s": 15.0}


def train_and_register(workdir: Path, train_data: str | None, epochs: int, ensemble: str = "auto",
                       name: str = "asl-recognizer", tiny: bool = False) -> str:
    """Train a cnn (synthetic data unless `train_data`; `ensemble` networks; `tiny`: benchmarks/tiny.py's few rows
    and narrow network), register it as <name>@champion."""
    import mlflow

    from asl_mlops.config import TrainConfig
    from asl_mlops.data.synth import write_synthetic
    from asl_mlops.train import train_and_evaluate

    narrow: dict[str, object] = {}
    if tiny:
        import tiny as tiny_data

        tiny_data.sign_mnist(workdir / "data")
        narrow = {k: v for k, v in tiny_data.TRAIN.items() if k not in ("epochs", "ensemble")}
    else:
        write_synthetic(workdir / "data")
    train = train_data or str(workdir / "data" / "sign_mnist_train.csv")
    config = TrainConfig(train_data=train, test_data=str(workdir / "data" / "sign_mnist_test.csv"),
                         cache_dir=str(workdir / "cache"), epochs=epochs, batch_size=32 if not train_data else 128,
                         ema=False, seed=0, ensemble=ensemble).replace(**narrow)
    result = train_and_evaluate(config)
    version = mlflow.register_model(result.model_uri, name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)
    print(f"trained run {result.run_id} ({config.ensemble_members} network(s)): val_accuracy "
          f"{result.val_accuracy:.4f}", file=sys.stderr)
    return f"models:/{name}@champion"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(server: str, model_uri: str, port: int, workers: int | None = None) -> list[str]:
    """The command line of `mlflow models serve` ("mlflow") or `asl-mlops serve` ("asl-mlops") on loopback."""
    bin_dir = Path(sys.executable).parent
    if server == "mlflow":
        return [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "-p", str(port),
                "--host", "127.0.0.1", *(["-w", str(workers)] if workers else [])]
    return [str(bin_dir / "asl-mlops"), "serve", "--model-uri", model_uri, "--port", str(port), "--host", "127.0.0.1",
            *(["--workers", str(workers)] if workers else [])]


def start_server(model_uri: str, log_path: Path, first_body: str, server: str = "mlflow",
                 workers: int | None = None) -> tuple[subprocess.Popen, str, float]:
    """Start the server; returns (process, url, seconds from start to the first answered prediction)."""
    import requests

    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    process = subprocess.Popen(server_command(server, model_uri, port, workers), env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
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


# --- concurrent load: `mlflow models serve` and `asl-mlops serve` side by side --------------------------

#: The load mix: (kind, weight). Valid single images (pixel row, PNG) and hostile bodies (see load_bodies).
LOAD_MIX = (("pixels", 45), ("png", 45), ("no_content_type", 2), ("deep_json", 2), ("json_list", 2),
            ("malformed_json", 2), ("oversized", 2))
VALID_KINDS = ("pixels", "png")
LOAD_TARGETS = {"load_p50_ms": 40.0, "load_p99_ms": 150.0, "single_client_p50_ms": 15.0}
OVERSIZED_BYTES = 25 * 1024 * 1024  # over asl-mlops serve's default limit (~22.3 MiB)


def load_bodies(pixels_body: str, png_body: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Body and headers of each kind in LOAD_MIX."""
    json_type = {"Content-Type": "application/json"}
    return {
        "pixels": (pixels_body.encode(), json_type),
        "png": (png_body.encode(), json_type),
        "no_content_type": (pixels_body.encode(), {}),
        # 3,000 levels: MLflow's json.loads raises RecursionError (a 500)
        "deep_json": (b'{"dataframe_split": ' + b"[" * 3000 + b"]" * 3000 + b"}", json_type),
        "json_list": (("[" + pixels_body + "]").encode(), json_type),
        "malformed_json": (pixels_body[: len(pixels_body) // 2].encode(), json_type),
        # one 'image' cell of 25 MiB of base64 text: valid JSON, refused by the model only after parsing
        "oversized": (b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * OVERSIZED_BYTES + b'"]]}}',
                      json_type),
    }


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client on one socket (light on the CPU the servers share with it).

    Sends a big body in pieces and stops when the server answers early (a 413 before the body is read), as
    a careful client does; http.client would only see a broken pipe there."""

    def __init__(self, host: str, port: int) -> None:
        self.address, self.sock, self.buffer = (host, port), None, b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def post(self, path: str, body: bytes, headers: dict[str, str], timeout: float = 120.0) -> tuple[int, bytes]:
        """(status, body) of one POST; a kept-alive connection the server has closed meanwhile is reopened
        and the request sent once more, as HTTP clients do."""
        if self.sock is not None:
            try:
                return self._post(path, body, headers)
            except (ConnectionError, OSError):
                self.close()
        self.sock = socket.create_connection(self.address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._post(path, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        import select

        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "%s:%d" % self.address, **headers,
                                                     "Content-Length": str(len(body))}.items())
        self.sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body[:65536])
        sent_all = True
        try:
            for offset in range(65536, len(body), 1 << 20):
                if select.select([self.sock], [], [], 0)[0]:
                    sent_all = False  # answered before the whole body was sent
                    break
                self.sock.sendall(body[offset:offset + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            sent_all = False  # the server stopped reading; its answer may still be readable
        answer = self._response()
        if not sent_all:  # the request is unfinished on this connection: it cannot carry another
            self.close()
        return answer

    def _read_more(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection before answering")
        self.buffer += chunk

    def _response(self) -> tuple[int, bytes]:
        try:
            while b"\r\n\r\n" not in self.buffer:
                self._read_more()
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(fields.get("content-length", "0"))
            while len(self.buffer) < length:
                self._read_more()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        except (ConnectionError, OSError):
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body


def run_load(url: str, bodies: dict, clients: int, seconds: float, seed: int = 0) -> list[tuple[str, int, float]]:
    """`clients` threads, each sending requests drawn from LOAD_MIX back to back for `seconds`; returns
    (kind, status, seconds) per request (status 0: the connection failed)."""
    import random
    import threading

    host, port = url.removeprefix("http://").split(":")
    kinds, weights = zip(*LOAD_MIX)
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        connection, mine = HttpConnection(host, int(port)), []
        while time.perf_counter() < deadline:
            kind = rng.choices(kinds, weights)[0]
            body, headers = bodies[kind]
            start = time.perf_counter()
            try:
                status, _ = connection.post("/invocations", body, headers)
            except OSError:
                status = 0
                connection.close()
            mine.append((kind, status, time.perf_counter() - start))
        connection.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def load_summary(results: list[tuple[str, int, float]], seconds: float) -> dict:
    """Codes by kind, p50/p99 per kind and over the valid kinds, throughput."""
    from collections import Counter

    def stats(times: list[float]) -> dict:
        return {"p50_ms": 1e3 * percentile(times, 50), "p99_ms": 1e3 * percentile(times, 99), "n": len(times)} \
            if times else {"n": 0}

    by_kind = {}
    for kind, _ in LOAD_MIX:
        rows = [r for r in results if r[0] == kind]
        by_kind[kind] = {"codes": dict(sorted(Counter(str(r[1]) for r in rows).items())),
                         **stats([r[2] for r in rows])}
    valid = [r[2] for r in results if r[0] in VALID_KINDS and r[1] == 200]
    return {"seconds": seconds, "requests": len(results), "throughput_rps": len(results) / seconds,
            "valid_200_rps": len(valid) / seconds, "valid": stats(valid),
            "server_errors_5xx": sum(1 for r in results if r[1] >= 500),
            "failed_connections": sum(1 for r in results if r[1] == 0), "by_kind": by_kind}


def single_client(url: str, bodies: dict, n: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    connection, out = HttpConnection(host, int(port)), {}
    for kind in VALID_KINDS:
        body, headers = bodies[kind]
        for _ in range(20):
            connection.post("/invocations", body, headers)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            status, answer = connection.post("/invocations", body, headers)
            times.append(time.perf_counter() - start)
            assert status == 200, answer[:300]
        out[kind] = {"p50_ms": 1e3 * percentile(times, 50), "p99_ms": 1e3 * percentile(times, 99), "n": n}
    connection.close()
    return out


def group_cpu_seconds(process: subprocess.Popen) -> dict[int, float]:
    """CPU seconds (user + system) so far of each process in the server's process group, by pid."""
    out = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == process.pid:
                out[int(status.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return out


def server_memory_mb(process: subprocess.Popen) -> float:
    """Resident memory of the server's process group (the CLI, the supervisor and its workers), MB."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == process.pid:  # process group id (the server was started in its own session)
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


def load_mode(args: argparse.Namespace, model_uri: str, workdir: Path, pixels_body: str, png_body: str) -> dict:
    """Both servers, one after the other, with the same workers, clients, mix and duration."""
    bodies = load_bodies(pixels_body, png_body)
    servers = {}
    for server in ("mlflow", "asl-mlops"):
        name = "mlflow models serve" if server == "mlflow" else "asl-mlops serve"
        print(f"{name}: starting with {args.workers} workers", file=sys.stderr)
        process, url, cold_start = start_server(model_uri, workdir / f"{server}.log", pixels_body, server, args.workers)
        try:
            single = single_client(url, bodies, args.requests)
            load_start, cpu_before = time.perf_counter(), group_cpu_seconds(process)
            results = run_load(url, bodies, args.clients, args.load_seconds)
            summary = load_summary(results, time.perf_counter() - load_start)
            cpu_after = group_cpu_seconds(process)
            # per process: shows whether the workers shared the load (8 kept-alive connections over N workers)
            summary["server_cpu_seconds_by_process"] = sorted(
                round(cpu_after[pid] - cpu_before.get(pid, 0.0), 2) for pid in cpu_after)
            summary["server_cpu_ms_per_request"] = 1e3 * sum(summary["server_cpu_seconds_by_process"]) / len(results)
            summary["server_rss_mb_after"] = server_memory_mb(process)
            host, port = url.removeprefix("http://").split(":")
            summary["healthy_after"] = HttpConnection(host, int(port)).post("/invocations", *bodies["pixels"])[0] == 200
        finally:
            stop_server(process)
        servers[name] = {"cold_start_s": cold_start, "single_client": single, "load": summary}
    mlflow_load, ours = servers["mlflow models serve"]["load"], servers["asl-mlops serve"]["load"]
    ratios = {"valid_p50": ours["valid"]["p50_ms"] / mlflow_load["valid"]["p50_ms"],
              "valid_p99": ours["valid"]["p99_ms"] / mlflow_load["valid"]["p99_ms"],
              "valid_200_rps": ours["valid_200_rps"] / mlflow_load["valid_200_rps"]}
    single_ours = servers["asl-mlops serve"]["single_client"]
    met = {"load_p50_ms": ours["valid"]["p50_ms"] < LOAD_TARGETS["load_p50_ms"],
           "load_p99_ms": ours["valid"]["p99_ms"] < LOAD_TARGETS["load_p99_ms"],
           "single_client_p50_ms": max(s["p50_ms"] for s in single_ours.values()) < LOAD_TARGETS["single_client_p50_ms"],
           "no_5xx": ours["server_errors_5xx"] == 0}
    return {"workers": args.workers, "clients": args.clients, "mix": dict(LOAD_MIX), "servers": servers,
            "ratios_asl_over_mlflow": ratios, "targets": LOAD_TARGETS, "targets_met": met}


def ratios_to_first(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Each `load_mode` run's asl-mlops serve figures (p50, p99, server CPU per request) over the first run's."""
    def ours(run: dict) -> dict:
        return run["servers"]["asl-mlops serve"]["load"]

    first = ours(next(iter(runs.values())))
    return {e: {"valid_p50": ours(r)["valid"]["p50_ms"] / first["valid"]["p50_ms"],
                "valid_p99": ours(r)["valid"]["p99_ms"] / first["valid"]["p99_ms"],
                "server_cpu_ms_per_request": ours(r)["server_cpu_ms_per_request"] / first["server_cpu_ms_per_request"]}
            for e, r in runs.items()}


def print_load(results: dict) -> None:
    print(f"{args_line(results)}")
    print(f"{'server':<22}{'1-client p50 px/png':>22}{'load p50':>10}{'load p99':>10}{'valid/s':>9}{'all/s':>8}"
          f"{'5xx':>6}{'RSS MB':>8}")
    for name, s in results["servers"].items():
        single, load = s["single_client"], s["load"]
        print(f"{name:<22}{single['pixels']['p50_ms']:>12.1f} / {single['png']['p50_ms']:<7.1f}"
              f"{load['valid']['p50_ms']:>10.1f}{load['valid']['p99_ms']:>10.1f}{load['valid_200_rps']:>9.0f}"
              f"{load['throughput_rps']:>8.0f}{load['server_errors_5xx']:>6}{load['server_rss_mb_after']:>8.0f}")
    for name, s in results["servers"].items():
        load = s["load"]
        print(f"{name}: server CPU {load['server_cpu_ms_per_request']:.1f} ms per request; CPU seconds by process "
              f"during the load: {load['server_cpu_seconds_by_process']}")
    print("status codes by kind:")
    for kind, _ in LOAD_MIX:
        cells = "   ".join(f"{name.split()[0]}: {s['load']['by_kind'][kind]['codes']}" for name, s in results["servers"].items())
        print(f"  {kind:<16}{cells}")
    r = results["ratios_asl_over_mlflow"]
    print(f"asl-mlops / mlflow: p50 x{r['valid_p50']:.2f}, p99 x{r['valid_p99']:.2f}, valid throughput x{r['valid_200_rps']:.2f}")
    print(f"targets met: {results['targets_met']}")


def args_line(results: dict) -> str:
    m = results["machine"]
    return (f"{results['clients']} clients, {results['workers']} workers each, {m['cpus']} CPUs, 1-min load average "
            f"{m['load_average_1min']:.2f} before the run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="Serve this model (from MLFLOW_TRACKING_URI) instead of training one.")
    parser.add_argument("--train-data", help="Train on this Sign MNIST CSV instead of synthetic data.")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ensemble", action="append", default=None,
                        help="Networks of the model trained (TrainConfig.ensemble; default 'auto', as `mlflow run` "
                             "trains: 2 for the cnn). Repeatable with --load: each model in turn, with ratios to "
                             "the first.")
    parser.add_argument("--requests", type=int, default=200, help="Requests per single-image latency figure.")
    parser.add_argument("--out", type=Path, help="Result JSON [default: benchmarks/results/serve.json, "
                                                  "serve-load.json with --load].")
    parser.add_argument("--load", action="store_true",
                        help="Concurrent load instead: `mlflow models serve` and `asl-mlops serve`, one after the "
                             "other, each with --workers workers, under --clients clients sending a mix of valid "
                             "single images and hostile bodies for --load-seconds.")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="--load: workers of each server.")
    parser.add_argument("--clients", type=int, default=8, help="--load: concurrent clients.")
    parser.add_argument("--load-seconds", type=float, default=20.0, help="--load: seconds of load per server.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: a narrow 1-epoch model on a few synthetic rows, 5 requests per figure "
                             "(--load: 1 worker, 2 clients for 2 s).")
    args = parser.parse_args()
    if args.tiny:
        args.epochs, args.requests, args.workers, args.clients, args.load_seconds = 1, 5, 1, 2, 2.0
        if not args.model_uri:
            args.ensemble = args.ensemble or ["1"]
    # Resolved now: training below runs in a temporary folder (its ./mlruns land there).
    args.out = (args.out or ROOT / "benchmarks" / "results" / ("serve-load.json" if args.load else "serve.json")).resolve()
    if args.train_data:
        args.train_data = str(Path(args.train_data).resolve())
    ensembles = args.ensemble or ["auto"]
    if args.ensemble and args.model_uri:
        parser.error("--ensemble sets the model trained here: not with --model-uri")
    if len(ensembles) > 1 and not args.load:
        parser.error("several --ensemble values need --load")

    import cv2
    import mlflow
    import numpy as np
    import requests

    from asl_mlops.data.sign_mnist import PIXEL_COLUMNS

    workdir = Path(tempfile.mkdtemp(prefix="asl-serve-bench-"))
    try:
        if args.model_uri:
            model_uris = {"given": args.model_uri}
        else:
            uri = f"sqlite:///{workdir / 'mlflow.db'}"
            os.chdir(workdir)  # artifacts (./mlruns) land in workdir
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)  # also exported to the server through the environment
            model_uris = {e: train_and_register(workdir, args.train_data, args.epochs, e,
                                                "asl-recognizer" if len(ensembles) == 1 else f"asl-recognizer-{e}",
                                                args.tiny)
                          for e in ensembles}
        model_uri = next(iter(model_uris.values()))

        images = np.random.default_rng(0).integers(0, 256, (256, 28, 28), dtype=np.uint8)

        def pixels(n: int) -> str:
            return json.dumps({"dataframe_split": {"columns": list(PIXEL_COLUMNS),
                                                   "data": images[:n].reshape(n, -1).tolist()}})

        png = base64.b64encode(cv2.imencode(".png", images[0])[1].tobytes()).decode()
        png_body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[png]]}})

        if args.load:
            runs = {}
            for ensemble, uri in model_uris.items():
                load_before = os.getloadavg()[0]
                results = load_mode(args, uri, workdir, pixels(1), png_body)
                runs[ensemble] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                              "python": platform.python_version(), "load_average_1min": load_before,
                                              "load_average_1min_after": os.getloadavg()[0]},
                                  "model_uri": uri, "ensemble": ensemble,
                                  "trained_on": args.train_data or ("synthetic" if not args.model_uri else None),
                                  **results}
                print_load(runs[ensemble])
            if len(runs) == 1:
                results = next(iter(runs.values()))
            else:
                results = {"by_ensemble": runs, "asl_mlops_serve_ratios_to_first": ratios_to_first(runs)}
                for e, ratio in results["asl_mlops_serve_ratios_to_first"].items():
                    print(f"ensemble {e} / ensemble {ensembles[0]} (asl-mlops serve): p50 x{ratio['valid_p50']:.2f}, "
                          f"p99 x{ratio['valid_p99']:.2f}, server CPU per request x{ratio['server_cpu_ms_per_request']:.2f}")
            write_results(args.out, stamped(results))
            return
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
            model.read(images[:n])
            times = []
            for _ in range(30):
                start = time.perf_counter()
                model.read(images[:n])
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

    write_results(args.out, stamped(results))
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
