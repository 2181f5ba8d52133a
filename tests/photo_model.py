"""A small photo recognizer trained on real hand photos (../shared/data/hands), shared by the tests that serve one.

`mlflow run .` (the main entry point, every parameter at its default but the data) on 6 photos a letter of one Massey signer, tested on 2 a letter of the other and one photo
with no hand; in a temporary SQLite store under `root`, registered as asl-recognizer, validated by the gate and made
champion (by hand if it failed the gate)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from conftest import real_hand_photos

from asl_mlops.labels import LETTERS

ROOT = Path(__file__).resolve().parents[1]


def real_hand_folders(root: Path, train_per_letter: int = 6, test_per_letter: int = 2) -> tuple[Path, Path]:
    """(train, test) photo folders of real hands: one signer for training, the other for testing, plus a photo
    of a plain wall (no hand) in the test folder."""
    for letter in LETTERS:
        for split, signer, count in (("train", "massey-hand1", train_per_letter),
                                     ("test", "massey-hand2", test_per_letter)):
            (root / split / letter).mkdir(parents=True, exist_ok=True)
            for photo in real_hand_photos(letter, signer, count):
                shutil.copy(photo, root / split / letter)
    cv2.imwrite(str(root / "test" / "A" / "wall.png"), np.full((120, 160, 3), 200, dtype=np.uint8))
    return root / "train", root / "test"


#: Where the one photo recognizer of a test run is trained, shared by every module and xdist worker of that run.
SHARED_PREFIX = "asl-tests-photo-recognizer-"


def train_photo_recognizer(root: Path, hand_model: Path) -> dict[str, str]:
    """The photo recognizer of `train_once`, in a store of `root`'s own: a copy of its mlflow.db (so a module may
    register and move aliases without touching another's), with `root`/train, test and cache linking to its folders
    (its runs' artifacts stay where it was trained). Returns the environment the store is read with."""
    shared = train_once(hand_model)
    shutil.copy2(shared / "mlflow.db", root / "mlflow.db")
    for name in ("train", "test", "cache"):
        (root / name).symlink_to(shared / name, target_is_directory=True)
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
            "MLFLOW_REGISTRY_URI": f"sqlite:///{root}/mlflow.db", "ASL_MLOPS_HAND_MODEL": str(hand_model)}


def train_once(hand_model: Path) -> Path:
    """Train the photo recognizer once per test run (`mlflow run`, ~1-2 min), whichever module or xdist worker asks
    first; the others wait on a file lock and reuse it. Folders of earlier test runs older than a day are removed."""
    import fcntl
    import tempfile
    import time

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"solo-{os.getpid()}"
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{SHARED_PREFIX}*"):
        if old.is_dir() and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    shared = base / f"{SHARED_PREFIX}{run_id}"
    with open(base / f"{SHARED_PREFIX}{run_id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "trained").is_file():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            train_in(shared, hand_model)
            (shared / "trained").touch()
    return shared


def train_in(root: Path, hand_model: Path) -> dict[str, str]:
    """Train and register the photo recognizer with `mlflow run . -P train_data=... -P test_data=...` in `root`;
    returns the environment (tracking store, hand model) its store is read with."""
    train, test = real_hand_folders(root)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "MLFLOW_REGISTRY_URI": f"sqlite:///{root}/mlflow.db", "ASL_MLOPS_HAND_MODEL": str(hand_model)}
    done = subprocess.run([sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local",
                           "--experiment-name", "asl-mlops", "-P", f"train_data={train}", "-P", f"test_data={test}",
                           "-P", f"cache_dir={root / 'cache'}", "-P", "register=true"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Failed to log model config as params" not in done.stderr, done.stderr[-3000:]  # config agrees with params
    # The validation gate ran on the test folder (the other signer) and recorded its verdict. These tests serve the
    # model: if this small one failed the gate (2 photos a letter make the worst letter's recall coarse), it is
    # promoted by hand, as a person would.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_REGISTRY_URI"])
    if "champion" not in client.get_registered_model("asl-recognizer").aliases:
        promoted = subprocess.run([sys.executable, "-m", "asl_mlops", "registry", "promote", "1"], env=env,
                                  capture_output=True, text=True, timeout=120, cwd=root)
        assert promoted.returncode == 0, promoted.stderr[-3000:]
    return env
