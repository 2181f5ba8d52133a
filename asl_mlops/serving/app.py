"""Serving stage over HTTP: `asl-mlops serve`, MLflow's own scoring app for the recognizer, under uvicorn
worker processes, behind a guard that refuses hostile requests before they are parsed and counts what
it serves.

Request parsing and answers are MLflow's (`mlflow.pyfunc.scoring_server.init`, the app `mlflow models
serve` runs); rows, pixels and images are checked by the model (asl_mlops.recognizers). `RequestGuard`, an
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
- **the web page** at GET / (asl_mlops/serving/page/index.html, one self-contained file): upload a photo or turn on the
  camera and see the letter. It POSTs to /invocations like any client, so the limits above apply to it too,
  and its Content-Security-Policy lets it load nothing from another host.

Each worker freezes the garbage collector's view of what loading left behind (`gc.freeze`), and the
listening socket is created as TCP explicitly (so asyncio turns Nagle off): both cost requests tens to
hundreds of milliseconds otherwise (see `worker_app`, `bind`).

Why not MLServer (the MLflow runtime the issue named first): MLflow 3.17 removed `--enable-mlserver`
(mlflow/mlflow#23356; MLServer is unmaintained), mlserver 1.7.1 pins fastapi < 0.116 and Python < 3.13,
and beside our pins it failed to start (uvloop 0.23: "no current event loop" in its inference pool) or,
without the pool, to load our model (its metadata code needs an input schema, which ours leaves out on
purpose; see asl_mlops.recognizers.sign_mnist). Its /invocations handler is also a second copy of MLflow's parsing.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asl_mlops.config import DEFAULT_MAX_BODY_BYTES, ServeConfig
from asl_mlops.errors import InputError
from asl_mlops.serving.guard import RequestGuard

#: The environment variable that carries ServeConfig (as JSON) to the uvicorn worker processes.
CONFIG_ENV = "ASL_MLOPS_SERVE_CONFIG"

logger = logging.getLogger(__name__)


#: models:/NAME@ALIAS and models:/NAME/VERSION, the registry URIs the server knows the version of.
ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)")
VERSION_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")


@dataclass(frozen=True)
class Source:
    """Where the served model comes from: the URI to download, the registered version (None if unregistered) and,
    for an alias, the (name, alias) to follow."""

    download_uri: str
    version: str | None = None
    follow: tuple[str, str] | None = None


def resolve_source(model_uri: str) -> Source:
    """The version a registry URI names now (an alias is read once, so the download and the version agree);
    any other URI as it is. InputError saying what to do if it names nothing in the store (a missing store, model,
    alias or run: `registry.explain_model_uri`); a registry that cannot answer leaves the URI as given (its
    download says why)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from asl_mlops.registry import explain_model_uri

    if reason := explain_model_uri(model_uri):
        raise InputError(f"cannot load model {model_uri}: {reason}")
    if match := VERSION_URI.fullmatch(model_uri):
        return Source(model_uri, match["version"])
    if match := ALIAS_URI.fullmatch(model_uri):
        try:
            version = str(MlflowClient().get_model_version_by_alias(match["name"], match["alias"]).version)
        except MlflowException:
            return Source(model_uri)
        return Source(f"models:/{match['name']}/{version}", version, (match["name"], match["alias"]))
    return Source(model_uri)


# --- workers and the supervisor -------------------------------------------------------------------

def build_app(model: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, **guard: Any) -> RequestGuard:
    """MLflow's scoring app for a loaded pyfunc `model`, behind the guard (`guard`: its version and store)."""
    from mlflow.pyfunc.scoring_server import init

    return RequestGuard(init(model), max_body_bytes, **guard)


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
        from asl_mlops.recognizers.base import load_error

        logging.getLogger("uvicorn.error").error(
            "cannot load model %s", load_error(settings["model_uri"], err)
            or f"{settings['model_uri']}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        sys.exit(STARTUP_FAILURE)
    store = None
    if settings["collect_dir"]:
        from asl_mlops.serving.collect import PhotoStore

        store = PhotoStore(Path(settings["collect_dir"]), settings["collect_max_photos"])
    app = build_app(model, settings["max_body_bytes"], version=settings["model_version"], store=store)
    if settings["follow"] and settings["poll_seconds"] > 0:
        follower = AliasFollower(app, *settings["follow"], settings["model_version"], settings["poll_seconds"],
                                 Path(settings["workdir"]))
        threading.Thread(target=follower.run, name="alias-follower", daemon=True).start()
    # Move everything loaded so far (TensorFlow, Keras, MLflow, the model: millions of objects) out of the
    # cyclic garbage collector's reach. Without this, a full collection now and then walks all of them while
    # requests wait: one such collection per worker within 15 s of 8-client load, pausing it 243 and 878 ms.
    gc.collect()
    gc.freeze()
    return app


#: The interpreter's thread switch interval (seconds) while a worker loads a new version beside the serving one.
SWITCH_INTERVAL_WHILE_LOADING = 0.0005


class AliasFollower:
    """Each worker's watch on its model alias: every `poll_seconds`, read the version `alias` points at; when it
    moves, download and load that version beside the one serving, answer its input example once (so the first
    request pays no warm-up), then switch the guard to it (`RequestGuard.switch`). A version that fails to load is
    logged, counted, and not tried again until the alias moves elsewhere; the old one keeps serving."""

    def __init__(self, guard: RequestGuard, name: str, alias: str, version: str, poll_seconds: float,
                 workdir: Path) -> None:
        self.guard, self.name, self.alias, self.poll_seconds = guard, name, alias, poll_seconds
        self.version, self.failed, self.workdir = version, None, workdir
        self.logger = logging.getLogger("uvicorn.error")  # the server's own log, one line per event

    def run(self) -> None:
        from mlflow.tracking import MlflowClient

        client, unreachable = MlflowClient(), False
        while True:
            time.sleep(self.poll_seconds)
            try:
                version = str(client.get_model_version_by_alias(self.name, self.alias).version)
            except Exception as err:  # noqa: BLE001 - a registry that is down or an alias removed: keep serving
                if not unreachable:
                    self.logger.warning("cannot read %s@%s (%s); still serving version %s", self.name, self.alias,
                                        str(err).splitlines()[0][:200] if str(err) else type(err).__name__,
                                        self.version)
                unreachable = True
                continue
            unreachable = False
            if version not in (self.version, self.failed):
                self.switch_to(version)

    def switch_to(self, version: str) -> None:
        """Load `version` and serve it, or log why not and keep the current one."""
        from mlflow.pyfunc.scoring_server import init, load_model_with_mlflow_config

        start = time.perf_counter()
        folder = self.workdir / f"worker-{os.getpid()}" / f"v{version}"
        # Loading is Python holding the GIL for long stretches; requests run meanwhile on the event loop's thread.
        # A shorter switch interval hands the GIL back to them sooner (each hand-off waits up to the interval).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_WHILE_LOADING)
        try:
            local = download_model(f"models:/{self.name}/{version}", folder)
            model = load_model_with_mlflow_config(str(local))
            example = model.input_example
            if example is not None:
                model.predict(example)  # the first call builds the traced functions: not on a request
            app = init(model)
        except Exception as err:  # noqa: BLE001 - any failure keeps the old version serving
            self.failed = version
            self.guard.metrics.switch_failures.labels(version).inc()
            self.logger.error("%s@%s moved to version %s, which failed to load (%s: %s); still serving version %s",
                              self.name, self.alias, version, type(err).__name__,
                              str(err).splitlines()[0][:300] if str(err) else "", self.version)
            shutil.rmtree(folder, ignore_errors=True)
            return
        finally:
            sys.setswitchinterval(interval)
        previous = self.version
        self.guard.switch(app, version)
        self.version, self.failed = version, None
        self.guard.metrics.switches.labels(version).inc()
        gc.freeze()  # the new model's objects, as at start-up (see worker_app)
        self.logger.info("%s@%s moved: switched from version %s to version %s in %.1f s", self.name, self.alias,
                         previous, version, time.perf_counter() - start)
        shutil.rmtree(self.workdir / f"worker-{os.getpid()}" / f"v{previous}", ignore_errors=True)


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


def worker_environment(config: ServeConfig, local_model: Path, metrics_dir: Path,
                       source: Source = Source("")) -> dict[str, str]:
    """Environment variables the workers inherit: their settings, the metrics folder, their CPU share."""
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    settings = {**asdict(config), "local_model": str(local_model), "model_version": source.version,
                "follow": source.follow, "workdir": str(metrics_dir.parent)}
    return {CONFIG_ENV: json.dumps(settings),
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

    # What `uvicorn --workers N` runs; uvicorn documents no API for its supervisor on a socket of our own.
    from uvicorn.supervisors import Multiprocess

    config.check()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar line per file otherwise
    sock = bind(config.host, config.port)
    workdir = Path(tempfile.mkdtemp(prefix="asl-mlops-serve-"))
    try:
        source = resolve_source(config.model_uri)
        local_model = download_model(source.download_uri, workdir / "model")
        if config.collect_dir:
            Path(config.collect_dir).mkdir(parents=True, exist_ok=True)
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        os.environ.update(worker_environment(config, local_model, metrics_dir, source))
        server_config = uvicorn.Config(
            "asl_mlops.serving.app:worker_app", factory=True, workers=config.workers, host=config.host,
            port=sock.getsockname()[1], access_log=False, log_config=uvicorn_logging(), lifespan="off",
            # a worker importing TensorFlow can miss the supervisor's 5-second health ping
            timeout_worker_healthcheck=60)
        following = (f", following {config.model_uri} (checked every {config.poll_seconds:g} s)"
                     if source.follow and config.poll_seconds > 0 else "")
        logger.info("serving %s%s on http://%s:%d with %d worker(s)%s; metrics at /metrics", config.model_uri,
                    f" (version {source.version})" if source.version else "", config.host, sock.getsockname()[1],
                    config.workers, following)
        if config.collect_dir:
            logger.info("teach mode on: photos shown on the page are kept in %s/<name>/<LETTER>/",
                        config.collect_dir)
        supervisor = Multiprocess(server_config, sockets=[sock])
        supervisor.run()
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            raise InputError(f"cannot load model {config.model_uri} in a worker (its reason is logged above)")
    finally:
        sock.close()
        shutil.rmtree(workdir, ignore_errors=True)
