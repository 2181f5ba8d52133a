"""Serving stage over HTTP: `asl-mlops serve`, MLflow's own scoring app for the recognizer, under uvicorn
worker processes, behind a guard that refuses hostile requests before they are parsed and counts what
it serves.

Request parsing and answers are MLflow's (`mlflow.pyfunc.scoring_server.init`, the app `mlflow models
serve` runs); rows, pixels and images are checked by the model (asl_mlops.serving). `RequestGuard`, an
ASGI middleware around that app, only adds what a long-running server needs in front of them:

- **limits before parsing**: POST /invocations needs a Content-Type MLflow parses (415 otherwise; MLflow
  3.17 answers a missing one with 500); a body over `max_body_bytes` gets 413, decided from
  Content-Length before reading or while a chunked body streams in; a JSON body must be an object, with
  balanced brackets, nested at most `MAX_JSON_DEPTH` deep and holding at most `MAX_JSON_CONTAINERS` arrays
  and objects (400; deep nesting makes MLflow's `json.loads` raise RecursionError, a 500). The check is a
  scan of the bytes in C (regex + numpy), not a parse: `json.loads` runs once, in MLflow.
- **Prometheus metrics** at GET /metrics, summed over the workers (prometheus_client's multiprocess
  mode in a folder this server owns): requests by path and status, a latency histogram, predictions
  by letter (read from the answers MLflow's app sends).
- **one access-log line per request**: client, method, path, status, rows answered, milliseconds.
- **the web page** at GET / (asl_mlops/page/index.html, one self-contained file): upload a photo or turn on the
  camera and see the letter. It POSTs to /invocations like any client, so the limits above apply to it too,
  and its Content-Security-Policy lets it load nothing from another host.

Each worker freezes the garbage collector's view of what loading left behind (`gc.freeze`), and the
listening socket is created as TCP explicitly (so asyncio turns Nagle off): both cost requests tens to
hundreds of milliseconds otherwise (see `worker_app`, `bind`).

Why not MLServer (the MLflow runtime the issue named first): MLflow 3.17 removed `--enable-mlserver`
(mlflow/mlflow#23356; MLServer is unmaintained), mlserver 1.7.1 pins fastapi < 0.116 and Python < 3.13,
and beside our pins it failed to start (uvloop 0.23: "no current event loop" in its inference pool) or,
without the pool, to load our model (its metadata code needs an input schema, which ours leaves out on
purpose; see asl_mlops.serving). Its /invocations handler is also a second copy of MLflow's parsing.
"""

from __future__ import annotations

import gc
import importlib.resources
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asl_mlops.config import knob
from asl_mlops.errors import InputError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The two limits below follow the model's own (asl_mlops.serving); written out, not imported, because serving
# imports MLflow (a second at every `asl-mlops` start). tests/test_server.py checks that they still agree.
#: Default body limit: one image at the model's limit (serving.MAX_IMAGE_BYTES = 16 MiB; base64 makes 4
#: characters of every 3 bytes) plus 1 MiB for the JSON around it. A batch of MAX_ROWS pixel rows is ~3 MB.
DEFAULT_MAX_BODY_BYTES = 4 * -(-16 * 1024 * 1024 // 3) + 1024 * 1024
#: Deepest JSON nesting accepted: requests need 4 (dataframe_split: object, object, data, row).
MAX_JSON_DEPTH = 32
#: Most JSON arrays + objects in one request: a dataframe_split of MAX_ROWS rows has MAX_ROWS + 4, records
#: MAX_ROWS + 2. Bounds the Python objects a small body can make MLflow build ('[[],[],...]').
MAX_JSON_CONTAINERS = 4 * 1024 + 64
#: Content types the guard passes on: the two MLflow parses from text. Parquet is refused: it is compressed,
#: so a body under the limit can expand without bound before the model's row limit applies.
ACCEPTED_CONTENT_TYPES = ("application/json", "text/csv")
#: Worker processes by default: one per CPU, at most this many (each holds TensorFlow and the model, ~0.8 GB
#: resident).
MAX_DEFAULT_WORKERS = 4
#: The environment variable that carries ServeConfig (as JSON) to the uvicorn worker processes.
CONFIG_ENV = "ASL_MLOPS_SERVE_CONFIG"
#: Paths counted under their own name in the metrics; anything else is counted as "other".
KNOWN_PATHS = ("/", "/invocations", "/ping", "/health", "/version", "/metrics")
#: Paths that answer the web page.
PAGE_PATHS = ("/", "/index.html")
#: The page's headers besides its length: it is revalidated on every load (a new version shows at once), and
#: the browser refuses anything it would load from another host (the page is self-contained and works offline).
PAGE_HEADERS = (
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
                                 b"style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
)
#: Latency histogram buckets, seconds: single images take ~5-15 ms, batches of 1,024 a few hundred.
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0, 10.0)

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("asl_mlops.access")


def default_workers() -> int:
    """Worker processes when --workers is not given: the CPU count, capped at MAX_DEFAULT_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True)
class ServeConfig:
    """How `asl-mlops serve` serves one model; built by the CLI, passed to the workers as JSON."""

    model_uri: str = knob("models:/asl-recognizer@champion",
                          "MLflow URI of the recognizer pyfunc: models:/NAME@ALIAS, models:/NAME/VERSION, "
                          "runs:/RUN_ID/recognizer or a local folder. Downloaded once, then loaded by each worker.")
    host: str = knob("127.0.0.1", "Interface to listen on; 0.0.0.0 listens on all (no authentication: keep it "
                                  "behind your own network controls).")
    port: int = knob(5001, "TCP port to listen on.")
    # Each worker is a process with its own copy of the model (~0.8 GB resident with TensorFlow), so the CPU
    # count (capped) is the default: more workers than cores only adds memory and contention.
    workers: int = knob(default_workers(), "Worker processes, each loading the model once. The default is this "
                                           f"machine's CPU count, at most {MAX_DEFAULT_WORKERS}:")
    max_body_bytes: int = knob(DEFAULT_MAX_BODY_BYTES,
                               "Largest request body in bytes; larger bodies get HTTP 413 before they are read or "
                               "parsed. The default fits one image at the model's limit (16 MiB, base64-encoded) "
                               "or a full batch of 1,024 pixel rows.")
    timeout: int = knob(60, "Seconds one request may take before MLflow's app answers 504 "
                            "(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT).")

    def check(self) -> None:
        """Raise InputError naming the first setting that cannot work."""
        if not self.model_uri.strip():
            raise InputError("--model-uri is empty: give a model URI such as models:/asl-recognizer@champion")
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port} is not a TCP port (0-65535)")
        if self.workers < 1:
            raise InputError(f"--workers {self.workers}: at least 1 worker is needed")
        if self.max_body_bytes < 1024:
            raise InputError(f"--max-body-bytes {self.max_body_bytes} is too small for any request (at least 1024)")
        if self.timeout < 1:
            raise InputError(f"--timeout {self.timeout}: give at least 1 second")


# --- the request guard: pure checks ---------------------------------------------------------------

class Refusal(Exception):
    """A request the guard answers itself, with an HTTP status and a message naming the problem."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def check_content_type(value: str | None) -> None:
    """Refuse (415) a missing Content-Type or one MLflow's app would not parse; charset checks stay MLflow's."""
    accepted = " or ".join(ACCEPTED_CONTENT_TYPES)
    if value is None or not value.strip():
        raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"missing Content-Type header: send 'Content-Type: application/json' (accepted: {accepted})")
    mime = value.split(";")[0].strip()
    if mime not in ACCEPTED_CONTENT_TYPES:
        raise Refusal(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"Content-Type '{value[:100]}' is not accepted: send {accepted}")


def check_declared_length(value: str | None, limit: int) -> None:
    """Refuse a Content-Length that is not a number (400) or over the limit (413), before any byte is read."""
    if value is None:
        return
    if not value.strip().isdigit():
        raise Refusal(400, "BAD_REQUEST", f"Content-Length '{value[:40]}' is not a number of bytes")
    if int(value) > limit:
        raise Refusal(413, "REQUEST_TOO_LARGE",
                      f"request body of {int(value)} bytes is larger than the limit of {limit} bytes")


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_KEYS = "dataframe_split, dataframe_records, instances or inputs"


def json_shape_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH,
                       max_containers: int = MAX_JSON_CONTAINERS) -> str | None:
    """Why a JSON request body cannot be a request, from its bytes alone; None if it may be one.

    Checks that it is an object (not a list or scalar), that strings end and brackets balance, its
    nesting depth and its number of arrays and objects. Not a parser: MLflow's `json.loads` still decides
    the rest (a body passing this may be refused there with 400). Strings are removed first (a regex, in C),
    so brackets inside them do not count; the depth is a cumulative sum over the remaining brackets (numpy).
    """
    import numpy as np

    text = body.lstrip(b" \t\r\n")
    if not text:
        return f"the body is empty: send a JSON object with one of the keys {_KEYS}"
    if text[:1] == b"[":
        return f"the body is a JSON list: send a JSON object with one of the keys {_KEYS}"
    if text[:1] != b"{":
        return f"the body is not a JSON object: send a JSON object with one of the keys {_KEYS}"
    skeleton = _JSON_STRING.sub(b"", text)
    if b'"' in skeleton:
        return "not valid JSON: a string is not closed"
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    if containers > max_containers:
        return (f"the JSON holds {containers} arrays and objects, more than the limit of {max_containers} "
                "(a request has at most 1024 rows)")
    step = np.zeros(256, dtype=np.int8)  # byte -> +1 for [ {, -1 for ] }
    step[[ord("["), ord("{")]], step[[ord("]"), ord("}")]] = 1, -1
    steps = step[np.frombuffer(skeleton, dtype=np.uint8)]
    depth = np.cumsum(steps[steps != 0], dtype=np.int32)
    if int(depth.max()) > max_depth:
        return f"the JSON is nested {int(depth.max())} levels deep, more than the limit of {max_depth}"
    if int(depth.min()) < 0 or int(depth[-1]) != 0:
        return "not valid JSON: brackets do not balance"
    return None


def answered_rows(body: bytes) -> list[str]:
    """The letters of a 200 answer of MLflow's app ({"predictions": [{"letter": ...}, ...]})."""
    predictions = json.loads(body)["predictions"]
    return [str(p["letter"]) for p in predictions]


# --- the request guard: metrics and the ASGI middleware -------------------------------------------

class Metrics:
    """The server's Prometheus metrics, written to prometheus_client's multiprocess files (one set per worker)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set: the server sets it before starting workers")
        # Not the global registry: the multiprocess collector reads the files, so this one only holds the
        # objects (and a second app in one process must not register the same names twice).
        own = CollectorRegistry()
        self.requests = Counter("asl_http_requests", "HTTP requests answered, by path and status code.",
                                ["method", "path", "status"], registry=own)
        self.latency = Histogram("asl_http_request_duration_seconds",
                                 "Seconds from a request's arrival to the end of its answer.", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=own)
        self.predictions = Counter("asl_predictions", "Predicted letters in 200 answers of /invocations.",
                                   ["letter"], registry=own)
        self.refusals = Counter("asl_guard_refusals", "Requests the guard refused before MLflow parsed them.",
                                ["reason"], registry=own)

    @staticmethod
    def exposition() -> tuple[bytes, str]:
        """The metrics of all workers in the text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def page_html() -> bytes:
    """The web page served at GET /, read from the installed package."""
    return (importlib.resources.files("asl_mlops") / "page" / "index.html").read_bytes()


class RequestGuard:
    """ASGI middleware around MLflow's scoring app: refuses hostile /invocations requests before they reach
    it, serves the web page and /metrics, and observes every answer (metrics, access log). See the module
    docstring."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 metrics: Metrics | None = None) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.metrics = metrics or Metrics()
        self.page = page_html()  # once per worker: a missing page fails at start-up, not at the first visit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: MLflow's app has nothing to start, pass it on
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        state: dict[str, Any] = {"status": None, "letters": None}
        try:
            if path == "/metrics" and method == "GET":
                body, content_type = self.metrics.exposition()
                state["status"] = 200
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", content_type.encode())]})
                await send({"type": "http.response.body", "body": body})
            elif path in PAGE_PATHS and method == "GET":
                state["status"] = 200
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*PAGE_HEADERS, (b"content-length", str(len(self.page)).encode())]})
                await send({"type": "http.response.body", "body": self.page})
            elif path == "/invocations" and method == "POST":
                await self._invocations(scope, receive, send, state)
            else:
                await self.app(scope, receive, self._observing(send, state, capture=False))
        finally:
            self._record(scope, method, path, state, time.perf_counter() - start)

    async def _invocations(self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any]) -> None:
        try:
            check_content_type(_header(scope, b"content-type"))
            check_declared_length(_header(scope, b"content-length"), self.max_body_bytes)
            body = await self._read_body(receive)
            if body is None:  # the client went away
                return
            if _header(scope, b"content-type").split(";")[0].strip() == "application/json":
                problem = json_shape_problem(body)
                if problem:
                    raise Refusal(400, "BAD_REQUEST", problem)
        except Refusal as refusal:
            state["status"] = refusal.status
            self.metrics.refusals.labels(refusal.error_code.lower()).inc()
            await _send_json(send, refusal.status, {"error_code": refusal.error_code, "message": refusal.message})
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, self._observing(send, state, capture=True))

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, refusing (413) as soon as it grows over the limit; None if the client disconnected."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise Refusal(413, "REQUEST_TOO_LARGE",
                              f"request body is larger than the limit of {self.max_body_bytes} bytes "
                              f"(more than {size - len(chunk)} bytes read when the next chunk arrived)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _observing(self, send: Send, state: dict[str, Any], capture: bool) -> Send:
        """`send`, noting the status and (with `capture`) the body of a 200 answer to count its letters."""
        parts: list[bytes] = []

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and capture and state["status"] == 200:
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        state["letters"] = answered_rows(b"".join(parts))
                    except (ValueError, KeyError, TypeError) as err:  # an answer not of the recognizer's shape
                        logger.warning("answer of /invocations has no predictions with letters (%s)", err)
            await send(message)

        return observed

    def _record(self, scope: Scope, method: str, path: str, state: dict[str, Any], seconds: float) -> None:
        status, letters = state["status"], state["letters"]
        client = scope.get("client") or ("-", 0)
        rows = "-" if letters is None else str(len(letters))
        if status is None:  # no answer was sent: client disconnected, or the app raised before answering
            access_logger.info("%s:%s %s %s - rows=- %.1fms (no answer)", client[0], client[1], method, path,
                               1e3 * seconds)
            return
        label = path if path in KNOWN_PATHS else "other"
        self.metrics.requests.labels(method, label, str(status)).inc()
        self.metrics.latency.labels(label).observe(seconds)
        for letter, count in Tally(letters or ()).items():
            self.metrics.predictions.labels(letter).inc(count)
        access_logger.info("%s:%s %s %s %d rows=%s %.1fms", client[0], client[1], method, path, status, rows,
                           1e3 * seconds)


# --- workers and the supervisor -------------------------------------------------------------------

def build_app(model: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> RequestGuard:
    """MLflow's scoring app for a loaded pyfunc `model`, behind the guard."""
    from mlflow.pyfunc.scoring_server import init

    return RequestGuard(init(model), max_body_bytes)


def worker_app() -> RequestGuard:
    """uvicorn's app factory in each worker process: load the model the parent downloaded, build the app.

    A model that fails to load exits the worker with uvicorn's STARTUP_FAILURE code, so the supervisor
    stops instead of restarting it forever."""
    from uvicorn.config import STARTUP_FAILURE

    from asl_mlops.quiet_import import import_tensorflow_quietly

    settings = json.loads(os.environ[CONFIG_ENV])
    import_tensorflow_quietly()  # the wheel's "Could not find cuda drivers" lines, once per worker otherwise
    try:
        from mlflow.pyfunc.scoring_server import load_model_with_mlflow_config

        model = load_model_with_mlflow_config(settings["local_model"])
    except Exception as err:  # noqa: BLE001 - any load failure ends this worker with a one-line reason
        logging.getLogger("uvicorn.error").error("cannot load model %s: %s: %s", settings["model_uri"],
                                                 type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        sys.exit(STARTUP_FAILURE)
    app = build_app(model, settings["max_body_bytes"])
    # Move everything loaded so far (TensorFlow, Keras, MLflow, the model: millions of objects) out of the
    # cyclic garbage collector's reach. Without this, a full collection now and then walks all of them while
    # requests wait: one such collection per worker within 15 s of 8-client load, pausing it 243 and 878 ms.
    gc.collect()
    gc.freeze()
    return app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is a one-line error before any model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every keep-alive answer (headers and body are two writes) waits ~40 ms for a delayed ACK.
    # (uvicorn's own --workers socket has proto 0, which `mlflow models serve -w N` inherits.)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = "the port is in use" if err.errno == 98 else err.strerror or str(err)
        raise InputError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def download_model(model_uri: str, dest: Path) -> Path:
    """Download the model once for all workers; InputError if the URI names no pyfunc model."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))
    except (MlflowException, OSError) as err:
        lines = [line.strip("# ") for line in (getattr(err, "message", None) or str(err)).splitlines() if line.strip("# ")]
        raise InputError(f"cannot load model {model_uri}: {' '.join(lines)[:400]}") from None
    if not (local / "MLmodel").is_file():
        raise InputError(f"cannot load model {model_uri}: it has no MLmodel file (is it a model folder?)")
    if "python_function" not in Model.load(str(local)).flavors:
        raise InputError(f"cannot load model {model_uri}: it has no python_function flavor to serve")
    return local


def uvicorn_logging() -> dict[str, Any]:
    """uvicorn's logging config plus our access log (uvicorn's own access log is off: ours has rows and ms)."""
    from uvicorn.config import LOGGING_CONFIG

    config = json.loads(json.dumps(LOGGING_CONFIG))
    config["formatters"]["access_line"] = {"format": "%(asctime)s %(levelname)s access: %(message)s"}
    config["handlers"]["access_line"] = {"class": "logging.StreamHandler", "formatter": "access_line",
                                         "stream": "ext://sys.stdout"}
    config["loggers"]["asl_mlops"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["asl_mlops.access"] = {"handlers": ["access_line"], "level": "INFO", "propagate": False}
    return config


def worker_environment(config: ServeConfig, local_model: Path, metrics_dir: Path) -> dict[str, str]:
    """Environment variables the workers inherit: their settings, the metrics folder, their CPU share."""
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    return {CONFIG_ENV: json.dumps({**asdict(config), "local_model": str(local_model)}),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(config.timeout),
            # N workers share the cores: each gets 1/N of TensorFlow's threads instead of all of them.
            "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": str(threads)}


def serve(config: ServeConfig) -> None:
    """Serve `config.model_uri` until SIGINT/SIGTERM: bind, download the model, run uvicorn's supervisor
    with `config.workers` worker processes (a dead worker is replaced). Raises InputError for a bad
    setting, a port in use or a model that cannot be loaded."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config.check()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar line per file otherwise
    sock = bind(config.host, config.port)
    workdir = Path(tempfile.mkdtemp(prefix="asl-mlops-serve-"))
    try:
        local_model = download_model(config.model_uri, workdir / "model")
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        os.environ.update(worker_environment(config, local_model, metrics_dir))
        server_config = uvicorn.Config(
            "asl_mlops.server:worker_app", factory=True, workers=config.workers, host=config.host,
            port=sock.getsockname()[1], access_log=False, log_config=uvicorn_logging(), lifespan="off",
            # a worker importing TensorFlow can miss the supervisor's 5-second health ping
            timeout_worker_healthcheck=60)
        logger.info("serving %s on http://%s:%d with %d worker(s); metrics at /metrics", config.model_uri,
                    config.host, sock.getsockname()[1], config.workers)
        supervisor = Multiprocess(server_config, sockets=[sock])
        supervisor.run()
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            raise InputError(f"cannot load model {config.model_uri} in a worker (its reason is logged above)")
    finally:
        sock.close()
        shutil.rmtree(workdir, ignore_errors=True)
