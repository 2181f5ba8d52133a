"""The photo recognizer end to end: trained by `mlflow run .` on a small folder of real hand photos, logged,
registered, served by `mlflow models serve`, loaded with no network; and its answers' contract."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from conftest import REAL_HANDS, real_hand_photos
from mlflow.tracking import MlflowClient
from photo_model import train_photo_recognizer

from asl_mlops.errors import InputError
from asl_mlops.hands.detector import Hand
from asl_mlops.labels import LETTERS
from asl_mlops.recognizers.photos import NO_HAND, NOT_SURE, answer_rows, photos_from_frame

needs_real_hands = pytest.mark.skipif(not REAL_HANDS.is_dir(), reason=f"no real hand photos at {REAL_HANDS}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_an_answer_without_a_hand_is_explicit_never_a_guess():
    hand = Hand(np.full((21, 3), 0.5, dtype=np.float32) + np.linspace(0, 0.2, 21)[:, None].astype(np.float32),
                np.zeros((21, 3), dtype=np.float32), "Right", 0.9, (640, 480))
    probabilities = np.eye(24)[[3]] * 0.9 + 0.1 / 24
    rows = answer_rows(probabilities, [None, hand]).to_dict("records")
    assert rows[0] == {"letter": "", "label": -1, "confidence": 0.0, "top3": [], "box": None, "reason": NO_HAND}
    assert rows[1]["letter"] == LETTERS[3] and rows[1]["reason"] == "" and len(rows[1]["top3"]) == 3
    assert set(rows[1]["box"]) == {"x", "y", "w", "h"} and 0 <= rows[1]["box"]["x"] <= 1


def test_requests_are_checked_before_any_work():
    png = cv2.imencode(".png", np.zeros((8, 8, 3), dtype=np.uint8))[1].tobytes()
    assert photos_from_frame(pd.DataFrame({"image": [b64(png)]}))[0].shape == (8, 8, 3)
    with pytest.raises(InputError, match="Sign MNIST pixel rows are for the Sign MNIST recognizer"):
        photos_from_frame(pd.DataFrame({f"pixel{i}": [0] for i in range(1, 785)}))
    with pytest.raises(InputError, match="row 1, column image: not valid base64"):
        photos_from_frame(pd.DataFrame({"image": [b64(png), "%%%"]}))
    with pytest.raises(InputError, match="row 0, column image: not a PNG or JPEG"):
        photos_from_frame(pd.DataFrame({"image": [b64(b"GIF89a......")]}))
    with pytest.raises(InputError, match="empty batch"):
        photos_from_frame(pd.DataFrame({"image": []}))


def test_a_hand_below_the_threshold_is_not_sure_with_its_guesses_kept():
    hand = Hand(np.full((21, 3), 0.5, dtype=np.float32) + np.linspace(0, 0.2, 21)[:, None].astype(np.float32),
                np.zeros((21, 3), dtype=np.float32), "Right", 0.9, (640, 480))
    probabilities = np.full((1, 24), 0.3 / 23)
    probabilities[0, 5] = 0.7
    (sure,) = answer_rows(probabilities, [hand], not_sure_below=0.7).to_dict("records")
    (unsure,) = answer_rows(probabilities, [hand], not_sure_below=0.71).to_dict("records")
    assert sure["letter"] == LETTERS[5] and sure["reason"] == ""
    assert unsure["letter"] == "" and unsure["label"] == -1 and unsure["reason"] == NOT_SURE
    assert unsure["confidence"] == pytest.approx(0.7) and unsure["top3"][0]["letter"] == LETTERS[5]
    assert unsure["box"] is not None


# --- trained, registered, served --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory: pytest.TempPathFactory, hand_model: Path):
    """The photo recognizer trained, logged and registered by `asl-mlops train` (tests/photo_model.py)."""
    if not REAL_HANDS.is_dir():
        pytest.skip(f"no real hand photos at {REAL_HANDS}")
    root = tmp_path_factory.mktemp("photo-run")
    env = train_photo_recognizer(root, hand_model)
    # Both URIs: a module run before this one in the same worker may have left a registry URI set.
    registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(env["MLFLOW_REGISTRY_URI"])
    yield root, env, ""
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(registry)


@pytest.mark.e2e
@needs_real_hands
def test_a_photo_folder_trains_logs_and_registers_the_photo_recognizer(photo_run):
    root, env, stdout = photo_run
    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_REGISTRY_URI"])
    runs = client.search_runs([client.get_experiment_by_name("asl-mlops").experiment_id])
    run = next(r for r in runs if not r.info.run_name.startswith("validate-"))  # not the gate's evaluation run
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["resolved_architecture"] == "keypoints" and params["ensemble_members"] == "1"
    assert int(params["train_hands_found"]) >= 140 and params["test_rows"] == "49"
    # Learns the other signer's hands well above chance (1 in 24), the photo with no hand counting as an error.
    assert metrics["test_accuracy"] >= 0.6, metrics["test_accuracy"]
    assert metrics["test_errors"] >= 1
    history = client.get_metric_history(run.info.run_id, "epoch_val_accuracy")
    assert [m.step for m in history] == list(range(12))
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train-train", "train-val", "test-test"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/test_misclassified.png" in artifacts and "plots/test_confusion_matrix.png" in artifacts
    version = client.get_model_version_by_alias("asl-recognizer", "champion")
    assert version.run_id == run.info.run_id
    # the validation gate checked it on the test folder, photos of a signer it never trained on
    assert version.tags["validation_status"] in ("passed", "failed")
    assert "validation.unseen_signer_accuracy" in version.tags and "validation.accuracy" not in version.tags
    logged = client.get_logged_model(version.source.removeprefix("models:/"))  # the version points at it
    assert logged.tags["mlflow.note.content"].startswith("Photo recognizer")  # the model page's description
    assert {m.key for m in logged.metrics} == {"val_accuracy", "val_loss", "test_accuracy", "test_loss",
                                              "test_errors"}  # final values only


@pytest.mark.e2e
@needs_real_hands
def test_the_logged_model_loads_and_answers_with_no_network(photo_run, tmp_path: Path):
    """In a network namespace of its own (no interface up) and with an empty user cache: the hand model comes
    from the logged model's artifacts, nothing is downloaded."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("cannot make a network namespace here (unshare -n)")
    root, env, _ = photo_run
    local = mlflow.artifacts.download_artifacts("models:/asl-recognizer@champion", dst_path=str(tmp_path / "model"))
    assert len(list((Path(local) / "artifacts").glob("*.task"))) == 1  # the hand model travels with it
    photo = real_hand_photos("L", "massey-hand2", 1, skip=3)[0]
    code = ("import sys, base64, mlflow.pyfunc, pandas as pd\n"
            "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
            "row = m.predict(pd.DataFrame({'image': [base64.b64encode(open(sys.argv[2], 'rb').read()).decode()]}))"
            ".iloc[0]\n"
            "print(row['letter'], row['reason'] == '', row['box'] is not None)\n")
    offline = {k: v for k, v in os.environ.items() if k != "ASL_MLOPS_HAND_MODEL"}
    offline.update(XDG_CACHE_HOME=str(tmp_path / "empty-cache"), HOME=str(tmp_path / "home"))
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", code, local, str(photo)], env=offline,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    letter, found, boxed = done.stdout.split()[-3:]
    assert found == "True" and boxed == "True" and letter in LETTERS
    assert not (tmp_path / "empty-cache" / "asl-mlops").exists()  # no hand model was fetched


@needs_real_hands
@pytest.mark.e2e
def test_the_logged_threshold_says_not_sure_below_it_and_names_the_letter_at_it(photo_run, tmp_path: Path):
    """The run logged its calibration in the model's config; the loaded model applies whatever threshold the
    config holds (here moved just above and to a photo's confidence, as MLflow's load-time override does)."""
    local = mlflow.artifacts.download_artifacts("models:/asl-recognizer@champion", dst_path=str(tmp_path / "model"))
    logged = mlflow.models.Model.load(local).flavors["python_function"]["config"]
    assert logged["temperature"] > 0 and 0 <= logged["not_sure_below"] <= 1
    request = pd.DataFrame({"image": [b64(real_hand_photos("B", "massey-hand2", 1, skip=4)[0].read_bytes())]})
    confidence = mlflow.pyfunc.load_model(local).predict(request).iloc[0]["confidence"]
    assert 0 < confidence <= 1
    above = mlflow.pyfunc.load_model(local, model_config={"not_sure_below": confidence + 1e-6}).predict(request)
    at = mlflow.pyfunc.load_model(local, model_config={"not_sure_below": confidence}).predict(request)
    assert above.iloc[0]["reason"] == NOT_SURE and above.iloc[0]["letter"] == "" and len(above.iloc[0]["top3"]) == 3
    assert at.iloc[0]["reason"] == "" and at.iloc[0]["letter"] == at.iloc[0]["top3"][0]["letter"]


@needs_real_hands
@pytest.mark.e2e
def test_mlflow_models_serve_answers_photos_with_a_box_and_no_hand_explicitly(photo_run):
    root, env, _ = photo_run
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                               "models:/asl-recognizer@champion", "--env-manager", "local", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        photos = [real_hand_photos(letter, "massey-hand2", 1, skip=4)[0] for letter in ("B", "L", "Y")]
        wall = cv2.imencode(".jpg", np.full((480, 640, 3), 180, dtype=np.uint8))[1].tobytes()
        images = [b64(p.read_bytes()) for p in photos] + [b64(wall)]
        answer = requests.post(f"{url}/invocations", timeout=60,
                               json={"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}})
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert [r["reason"] for r in rows][3] == NO_HAND and all(r["reason"] in ("", NOT_SURE) for r in rows[:3])
        assert sum(r["top3"][0]["letter"] == letter for r, letter in zip(rows, "BLY")) >= 2, rows
        for row in rows[:3]:
            assert set(row["box"]) == {"x", "y", "w", "h"} and 0 < row["box"]["w"] <= 1
        assert rows[3]["letter"] == "" and rows[3]["label"] == -1 and rows[3]["box"] is None
        pixels = requests.post(f"{url}/invocations", timeout=60,
                               json={"dataframe_split": {"columns": [f"pixel{i}" for i in range(1, 785)],
                                                         "data": [[0] * 784]}})
        assert pixels.status_code == 400 and "Sign MNIST recognizer" in pixels.json()["message"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.e2e
@needs_real_hands
@pytest.mark.parametrize(("train", "test", "architecture", "message"), [
    ("train", "test", "cnn", "is a photo folder: architecture cnn trains on Sign MNIST CSVs"),
    ("train", "missing.csv", "auto", "the test data must be one too"),
])
def test_a_photo_folder_with_the_wrong_partner_is_refused_before_any_run(photo_run, train, test, architecture,
                                                                         message):
    root, env, _ = photo_run
    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_REGISTRY_URI"])
    experiment = client.get_experiment_by_name("asl-mlops").experiment_id
    before = len(client.search_runs([experiment]))
    done = subprocess.run([sys.executable, "-m", "asl_mlops", "train", "--train-data", str(root / train),
                           "--test-data", str(root / test), "--architecture", architecture],
                          env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert len(client.search_runs([experiment])) == before  # no run left behind


@pytest.mark.e2e
@needs_real_hands
def test_a_sweep_tunes_the_photo_recognizer(photo_run):
    root, env, _ = photo_run
    done = subprocess.run([sys.executable, "-m", "asl_mlops", "tune", "--train-data", str(root / "train"),
                           "--test-data", str(root / "test"), "--cache-dir", str(root / "cache"), "--n-trials", "2",
                           "--epochs", "3", "--study-name", "photos", "--register", "false"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "study 'photos' (2 complete)" in done.stdout
    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_REGISTRY_URI"])
    trials = client.search_runs([client.get_experiment_by_name("asl-mlops").experiment_id],
                                "tags.mlflow.runName LIKE 'trial-%'")
    assert len(trials) == 2 and all(t.data.params["resolved_architecture"] == "keypoints" for t in trials)
    assert all(t.data.params["train_data_hash"] == trials[0].data.params["train_data_hash"] for t in trials)
