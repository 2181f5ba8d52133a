"""Shared pytest fixtures: small synthetic Sign MNIST files, so no test needs the real data."""

import os

# Before anything imports TensorFlow: keep its C++ start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from asl_mlops.data.sign_mnist import write_csv
from asl_mlops.data.synth import make_synthetic, write_synthetic

#: Real photos of hands (../shared/data/hands beside the repository); tests that need a real hand skip without them.
REAL_HANDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hands"


def real_hand_photos(letter: str, signer: str = "massey-hand1", count: int = 1, skip: int = 0) -> list[Path]:
    """`count` real photos of `letter` by `signer` (from the manifest), after the first `skip`."""
    import csv

    rows = [row for row in csv.DictReader(open(REAL_HANDS / "manifest.csv"))
            if row["letter"] == letter and row["signer"] == signer]
    return [REAL_HANDS / row["path"] for row in rows[skip:skip + count]]


def real_hand_photo(letter: str, signer: str = "massey-hand1") -> tuple[Path, str]:
    """One real photo of `letter` and its letter."""
    return real_hand_photos(letter, signer)[0], letter


@pytest.fixture(scope="session")
def hand_model() -> Path:
    """The HandLandmarker bundle, found as the product finds it (ASL_MLOPS_HAND_MODEL, the user cache, or
    repacked from the mediapipe wheel on the package index once per machine)."""
    from asl_mlops.errors import InputError
    from asl_mlops.hands.landmarker import hand_model_path

    try:
        return hand_model_path()
    except InputError as err:
        pytest.skip(f"no hand model: {err}")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with synthetic sign_mnist_train.csv (2,400 rows) and sign_mnist_test.csv (720 rows)."""
    out_dir = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out_dir, train_rows=2400, test_rows=720)  # small, so tests that train many models stay fast
    return out_dir


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `asl-mlops data synth` writes with its defaults (9,600 training rows, 720 test rows)."""
    out_dir = tmp_path_factory.mktemp("demo")
    write_synthetic(out_dir)
    return out_dir


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    """A valid 30-row synthetic CSV in this test's tmp_path."""
    return write_csv(make_synthetic(30, seed=0), tmp_path / "tiny.csv")


def forget_active_experiment() -> None:
    """Clear the active experiment (tests choose it through the environment, never mlflow.set_experiment, whose
    choice MLflow offers no public way to undo), so the next store is not asked for an experiment it lacks."""
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)  # the CLI sets it (asl_mlops.cli.use_default_experiment)


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_experiment():
    """Module-scoped fixtures set up before this runs, so clean up after every test as well."""
    forget_active_experiment()
    yield
    forget_active_experiment()


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh real MLflow tracking store (SQLite + local artifacts) in tmp_path, active for this test.

    Also chdirs to tmp_path, so anything written relative to the working directory stays there.
    """
    monkeypatch.chdir(tmp_path)
    yield from tracking_at(f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch)


def tracking_at(uri: str, monkeypatch: pytest.MonkeyPatch):
    """Make `uri` the tracking and registry URI of this test (and of its subprocesses); yields it, then
    ends any run left active."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


#: The cnn width of tests that exercise plumbing (sweeps, registry, serving), not the default network: about a
#: quarter of the default's CPU per training step, and it still learns the synthetic set (>= 0.9 in 5 epochs).
PLUMBING_CNN = "16,32,16"


@pytest.fixture
def fast_config(synthetic_dir: Path, tmp_path: Path):
    """A TrainConfig that trains one cnn on the synthetic set in seconds and still learns (>= 0.9)."""
    from asl_mlops.config import TrainConfig

    return TrainConfig(train_data=str(synthetic_dir / "sign_mnist_train.csv"),
                       test_data=str(synthetic_dir / "sign_mnist_test.csv"),
                       cache_dir=str(tmp_path / "cache"), epochs=5, batch_size=32, ema=False, seed=0,
                       # 5 epochs of the default augmentation reach only ~0.86 here; tests/training/test_augment.py
                       # covers augmentation itself.
                       augment=False, cnn_filters=PLUMBING_CNN, ensemble=1)


# --- PostgreSQL and a real MLflow tracking server --------------------------------------------------

@pytest.fixture(scope="session")
def served():
    """One recognizer trained, registered and served by `mlflow models serve` for the whole session, shared by
    tests/serving/test_recognizer.py, test_client.py and test_app.py (tests/served_model.py)."""
    from served_model import acquire, release

    model = acquire()
    yield model
    release(model)


@pytest.fixture
def served_store(served):
    """This process uses the served model's tracking store (to load models:/ URIs directly)."""
    from served_model import using_store

    with using_store(served.tracking_uri):
        yield served


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_unavailable() -> str | None:
    """None if the local PostgreSQL (127.0.0.1:5432, trust auth) answers, else why not."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as err:
        return f"no PostgreSQL server on 127.0.0.1:5432 ({err})"
    return None


needs_postgres = pytest.mark.skipif(postgres_unavailable() is not None, reason=str(postgres_unavailable()))


@pytest.fixture
def postgres_database():
    """A factory of fresh PostgreSQL databases (postgresql:// URLs, as users type them); all dropped after."""
    import uuid

    import psycopg

    created: list[str] = []

    def create() -> str:
        name = f"asl_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    yield create
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mlflow_server(postgres_database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real `mlflow server` on a fresh PostgreSQL database, serving artifacts from tmp_path; made the
    tracking and registry URI of this test (and of subprocesses, through MLFLOW_TRACKING_URI)."""
    import subprocess
    import sys
    import time

    import mlflow
    import requests
    from served_model import free_port, stop_server

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_database(),
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        yield from tracking_at(uri, monkeypatch)
    finally:
        mlflow.set_tracking_uri(previous[0])  # later tests must not talk to this stopped server
        mlflow.set_registry_uri(previous[1])
        stop_server(server)
        log.close()
