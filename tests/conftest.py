"""Shared pytest fixtures: small synthetic Sign MNIST files, so no test needs the real data."""

import os

# Before anything imports TensorFlow: keep its C++ start-up chatter out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from asl_mlops.data import write_csv  # noqa: E402
from asl_mlops.synth import make_synthetic, write_synthetic  # noqa: E402


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
    """Clear MLflow's active experiment (a module global and MLFLOW_EXPERIMENT_ID, both set by
    mlflow.set_experiment), so the next store is not asked for an experiment it lacks."""
    import mlflow.tracking.fluent as fluent

    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


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
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def fast_config(synthetic_dir: Path, tmp_path: Path):
    """A TrainConfig that trains the cnn on the synthetic set in seconds and still learns (>= 0.9)."""
    from asl_mlops.config import TrainConfig

    return TrainConfig(train_data=str(synthetic_dir / "sign_mnist_train.csv"),
                       test_data=str(synthetic_dir / "sign_mnist_test.csv"),
                       cache_dir=str(tmp_path / "cache"), epochs=5, batch_size=32, ema=False, seed=0,
                       # 5 epochs of the default augmentation reach only ~0.86 here; tests/test_augment.py
                       # covers augmentation itself.
                       augment=False)
