"""`asl-mlops serve --model-uri models:/NAME@champion` follows the alias: when `champion` moves, the running server
switches to the new version with no failed request while a client is sending, names the answering version in the
`x-model-version` header and counts switches in /metrics; a version that fails to load leaves the old one serving;
a URI naming a version never switches. Real server processes, a real SQLite registry, real HTTP."""

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient
from served_model import free_port, pixels_body, stop_server, train_small_recognizer, using_store

pytestmark = pytest.mark.e2e

NAME = "asl-recognizer"
POLL = "0.5"
WAIT = 90.0  # seconds for a switch (download, load and warm-up of a small model) on a busy 2-core machine


class BrokenRecognizer(mlflow.pyfunc.PythonModel):
    """A model whose loading fails, as a version with a missing dependency or a corrupt artifact would."""

    def load_context(self, context):
        raise RuntimeError("this version cannot load (a test's broken model)")

    def predict(self, context, model_input, params=None):
        raise AssertionError("never loaded")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[dict]:
    """A SQLite registry with versions 1 and 2 of one small recognizer, and version 3 that fails to load;
    `champion` on version 1."""
    workdir = tmp_path_factory.mktemp("follow")
    tracking_uri, result = train_small_recognizer(workdir, "follow-tests", augment=False)
    from asl_mlops.data.sign_mnist import load_csv

    rows = load_csv(workdir / "data" / "sign_mnist_test.csv").images[:4]
    with using_store(tracking_uri):
        client = MlflowClient()
        for _ in range(2):
            mlflow.register_model(result.model_uri, NAME)
        mlflow.set_experiment("follow-tests")
        with mlflow.start_run():
            broken = mlflow.pyfunc.log_model(name="recognizer", python_model=BrokenRecognizer())
        mlflow.register_model(broken.model_uri, NAME)
        client.set_registered_model_alias(NAME, "champion", "1")
    yield {"workdir": workdir, "uri": tracking_uri, "body": pixels_body(rows)}


def move_champion(registry: dict, version: str) -> None:
    with using_store(registry["uri"]):
        MlflowClient().set_registered_model_alias(NAME, "champion", version)


@contextmanager
def serving(registry: dict, model_uri: str, log: Path) -> Iterator[str]:
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": registry["uri"], "MLFLOW_REGISTRY_URI": registry["uri"]}
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri", model_uri, "--port",
                                    str(port), "--workers", "1", "--poll-seconds", POLL],
                                   env=env, cwd=registry["workdir"], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /ping"
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        stop_server(process)


class Client(threading.Thread):
    """Sends the same request again and again, recording (status, x-model-version, milliseconds) of each answer."""

    def __init__(self, url: str, body: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.answers, self.stop = url, body, [], threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    answer = session.post(f"{self.url}/invocations", json=self.body, timeout=30)
                    self.answers.append((answer.status_code, answer.headers.get("x-model-version"),
                                         1e3 * (time.perf_counter() - start)))
                except requests.RequestException as err:
                    self.answers.append((type(err).__name__, None, 1e3 * (time.perf_counter() - start)))

    def wait_for_version(self, version: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not any(v == version for _, v, _ in self.answers[-5:]):
            assert time.monotonic() < deadline, f"no answer from version {version} in {timeout} s"
            time.sleep(0.1)


def metric(url: str, name: str, version: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith(f'{name}_total{{version="{version}"}}')]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_the_server_switches_when_champion_moves_with_no_failed_request_and_keeps_a_version_that_fails_to_load(
        registry, tmp_path):
    log = tmp_path / "server.log"
    with serving(registry, f"models:/{NAME}@champion", log) as url:
        client = Client(url, registry["body"])
        client.start()
        try:
            client.wait_for_version("1", timeout=30)
            move_champion(registry, "2")
            client.wait_for_version("2")
            time.sleep(1)
            # A version that fails to load: the server logs it and keeps answering with version 2.
            move_champion(registry, "3")
            deadline = time.monotonic() + WAIT
            while "failed to load" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(2 * float(POLL) + 0.5)
            seen_after_failure = len(client.answers)
            time.sleep(1)
        finally:
            client.stop.set()
            client.join(timeout=30)
        answers = client.answers
        assert len(answers) > 20
        assert {status for status, _, _ in answers} == {200}, [a for a in answers if a[0] != 200][:5]
        versions = [v for _, v, _ in answers]
        first_2 = versions.index("2")
        assert set(versions[:first_2]) == {"1"} and set(versions[first_2:]) == {"2"}  # one switch, never back
        assert set(versions[seen_after_failure:]) == {"2"}
        assert metric(url, "asl_model_switches", "2") == 1.0
        assert metric(url, "asl_model_switch_failures", "3") == 1.0  # tried once, not at every poll
        text = log.read_text()
        assert "switched from version 1 to version 2" in text
        assert "moved to version 3, which failed to load" in text and "still serving version 2" in text
        # The alias moving on to a good version is followed again.
        move_champion(registry, "1")
        deadline = time.monotonic() + WAIT
        while requests.post(f"{url}/invocations", json=registry["body"], timeout=30).headers.get(
                "x-model-version") != "1":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)


def test_a_server_of_a_pinned_version_never_switches(registry, tmp_path):
    move_champion(registry, "1")
    log = tmp_path / "server.log"
    with serving(registry, f"models:/{NAME}/1", log) as url:
        move_champion(registry, "2")
        time.sleep(4 * float(POLL) + 1)
        answer = requests.post(f"{url}/invocations", json=registry["body"], timeout=30)
        assert answer.status_code == 200 and answer.headers["x-model-version"] == "1"
        assert "switched" not in log.read_text()
    move_champion(registry, "1")
