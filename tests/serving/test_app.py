"""asl_mlops.serving.app: the request guard's checks (unit), and the real `asl-mlops serve` on loopback (e2e)
beside the real `mlflow models serve` of tests/served_model.py (the same registered model)."""

import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from served_model import (
    free_port,
    images_body,
    pixels_body,
    stop_server,
)

from asl_mlops.config import DEFAULT_MAX_BODY_BYTES, ServeConfig
from asl_mlops.data.images import MAX_IMAGE_BYTES
from asl_mlops.data.sign_mnist import PIXEL_COLUMNS
from asl_mlops.errors import InputError
from asl_mlops.recognizers.requests import MAX_ROWS
from asl_mlops.serving.app import bind
from asl_mlops.serving.guard import (
    MAX_JSON_CONTAINERS,
    MAX_JSON_DEPTH,
    Refusal,
    RequestGuard,
    check_content_type,
    check_declared_length,
    json_shape_problem,
)

ROW = (np.arange(784) % 256).tolist()
PIXELS = json.dumps({"dataframe_split": {"columns": list(PIXEL_COLUMNS), "data": [ROW]}})


# --- unit: the guard's checks ---------------------------------------------------------------------

def test_default_limits_follow_the_models_own():
    # one image at the model's byte limit, base64-encoded, fits with room for the JSON around it ...
    assert DEFAULT_MAX_BODY_BYTES == 4 * math.ceil(MAX_IMAGE_BYTES / 3) + 2**20
    # ... and so does a full batch of pixel rows (every value 3 digits: the longest)
    full_batch = json.dumps({"dataframe_split": {"columns": list(PIXEL_COLUMNS), "data": [[255] * 784] * MAX_ROWS}})
    assert len(full_batch) < DEFAULT_MAX_BODY_BYTES
    assert json_shape_problem(full_batch.encode()) is None
    assert MAX_JSON_CONTAINERS >= MAX_ROWS + 4


@pytest.mark.parametrize("body, message", [
    (b"", "the body is empty"),
    (b"  \n ", "the body is empty"),
    (b"[1, 2]", "the body is a JSON list"),
    (b' 42', "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (b'{"dataframe_split": {"columns": ["image], "data": []}}', "string is not closed"),
    (b'{"dataframe_split": {"data": [[1, 2]}', "brackets do not balance"),
    (b'{"a": 1}}', "brackets do not balance"),
    (b'{"a": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}", f"nested {MAX_JSON_DEPTH + 1} levels deep"),
    (b'{"a": ' + b'{"b": ' * 100 + b"1" + b"}" * 101, "nested 101 levels deep"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "100001 arrays and objects, more than the limit"),
    (b'{"a": [' + b"[]," * MAX_JSON_CONTAINERS + b"[]]}", "arrays and objects, more than the limit"),
])
def test_json_shape_problems_are_named(body, message):
    problem = json_shape_problem(body)
    assert problem is not None and message in problem, problem


@pytest.mark.parametrize("body", [
    PIXELS.encode(),
    b'{"dataframe_split": {"columns": ["image"], "data": [["[[[[{{{{ not brackets ]]"]]}}',
    b'{"a": "escaped \\" quote and \\\\", "b": [1, {"c": "\\"]"}]}',
    b'\n {"dataframe_records": [{"image": "x"}]} ',
    b'{"a": tru}',  # not JSON, but balanced: MLflow's json.loads refuses it (400) with its own message
])
def test_bodies_that_may_be_requests_pass(body):
    assert json_shape_problem(body) is None


def test_content_type_must_be_one_mlflow_parses_from_text():
    for value, status in ((None, 415), ("", 415), ("text/plain", 415), ("application/vnd.apache.parquet", 415)):
        with pytest.raises(Refusal) as refused:
            check_content_type(value)
        assert refused.value.status == status and "application/json" in refused.value.message
    check_content_type("application/json; charset=utf-8")  # charset: MLflow's own check
    check_content_type("text/csv")


def test_declared_length_is_checked_before_reading():
    check_declared_length(None, 100)
    check_declared_length("100", 100)
    with pytest.raises(Refusal, match="101 bytes is larger than the limit of 100") as refused:
        check_declared_length("101", 100)
    assert refused.value.status == 413
    with pytest.raises(Refusal, match="not a number") as refused:
        check_declared_length("12abc", 100)
    assert refused.value.status == 400


@pytest.mark.parametrize("change, message", [
    ({"workers": 0}, "--workers 0"), ({"port": 70000}, "--port 70000"), ({"max_body_bytes": 10}, "--max-body-bytes 10"),
    ({"model_uri": " "}, "--model-uri is empty"), ({"timeout": 0}, "--timeout 0"),
])
def test_settings_that_cannot_work_are_named(change, message):
    with pytest.raises(InputError, match=message):
        ServeConfig(**change).check()


def test_listening_socket_says_tcp_so_answers_are_not_held_by_nagle():
    # asyncio sets TCP_NODELAY on accepted sockets only if proto == IPPROTO_TCP (socket.socket() leaves 0)
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def asgi_get(app, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET request through an ASGI app, in this process; returns (status, headers, body)."""
    import asyncio

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    start, bodies = sent[0], [m.get("body", b"") for m in sent[1:]]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(bodies)


def test_the_page_is_served_at_root_and_other_gets_pass_through(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    async def not_found(scope, receive, send) -> None:  # stands in for MLflow's app
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = RequestGuard(not_found)
    for path in ("/", "/index.html"):
        status, headers, body = asgi_get(guard, path)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert headers["cache-control"] == "no-cache" and int(headers["content-length"]) == len(body)
        assert "default-src 'self'" in headers["content-security-policy"]
        assert body.startswith(b"<!doctype html>") and b'data-testid="letter"' in body
        # self-contained: nothing from another host (the browser test checks the requests themselves)
        assert b"http://" not in body and b"https://" not in body and b"//cdn" not in body
    assert asgi_get(guard, "/favicon.ico")[0] == 404
    samples = guard.metrics.exposition()[0].decode()
    assert 'asl_http_requests_total{method="GET",path="/",status="200"} 1.0' in samples


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asl_mlops", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_cli_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--model-uri", "models:/asl-recognizer@champion", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: the port is in use"


@pytest.mark.slow
def test_cli_bad_model_uri_is_one_line_and_exit_2(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli("serve", "--model-uri", "models:/no-such-model@champion", "--port", str(free_port()),
                     env={"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"error: cannot load model models:/no-such-model@champion: no MLflow tracking store at "
                         f"{tmp_path / 'mlflow.db'} (from MLFLOW_TRACKING_URI): set MLFLOW_TRACKING_URI to the store "
                         "your runs went to, e.g. sqlite:////path/to/mlflow.db or http://HOST:5000, or unset it to "
                         "use ./mlflow.db of the folder you run in"), result.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()
    not_a_model = run_cli("serve", "--model-uri", str(tmp_path), "--port", str(free_port()))
    assert not_a_model.returncode == 2 and "has no MLmodel file" in not_a_model.stderr.strip().splitlines()[-1]


# --- e2e: the real server -------------------------------------------------------------------------

class AslServer:
    def __init__(self, url: str, log: Path, process: subprocess.Popen, collect_dir: Path) -> None:
        self.url, self.log, self.process, self.collect_dir = url, log, process, collect_dir

    def post(self, body: str | bytes, content_type: str | None = "application/json") -> requests.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=60)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


COLLECT_MAX = 6


@pytest.fixture(scope="module")
def asl_server(served, tmp_path_factory):
    """`asl-mlops serve` with 2 workers on the shared registered model, teach mode on (at most COLLECT_MAX photos
    a person)."""
    port, log = free_port(), tmp_path_factory.mktemp("asl-serve") / "server.log"
    collect_dir = log.parent / "people"
    env = {**os.environ, "MLFLOW_TRACKING_URI": served.tracking_uri, "MLFLOW_REGISTRY_URI": served.tracking_uri}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri",
                                    "models:/asl-recognizer@champion", "--port", str(port), "--workers", "2",
                                    "--collect-dir", str(collect_dir), "--collect-max-photos", str(COLLECT_MAX)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "asl-mlops serve did not answer /ping in 120 s"
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        yield AslServer(url, log, process, collect_dir)
        # SIGTERM to the CLI process alone (as a service manager sends it): a clean stop that ends the workers too
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 10  # multiprocessing's resource tracker leaves just after its parent
        while (left := [stat.parent for stat in Path("/proc").glob("[0-9]*/stat") if _pgid(stat) == process.pid]) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, [(d / "cmdline").read_bytes().replace(b"\0", b" ")[:200] for d in left if d.exists()]
    finally:
        stop_server(process)


def raw_post(url: str, head: dict[str, str], chunks) -> tuple[int, str]:
    """POST /invocations by hand, piece by piece, stopping as soon as the server answers; returns (status, body).
    (requests sends a whole Content-Length body before it reads, and has no way to stop a chunked one.)"""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("POST /invocations HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
                      + "\r\n").encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered early
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head_text, body = answer.split(b"\r\n\r\n", 1)
        fields = dict(line.split(": ", 1) for line in head_text.decode().lower().split("\r\n")[1:])
        while len(body) < int(fields["content-length"]):
            data = sock.recv(65536)
            assert data, f"connection closed after {answer!r}"
            body += data
    return int(head_text.split()[1]), body.decode()


def chunked(total: int, piece: int = 1 << 20):
    """A chunked transfer-encoding body of `total` bytes of 'A', then the last chunk."""
    for _ in range(total // piece):
        yield b"%x\r\n" % piece + b"A" * piece + b"\r\n"
    yield b"0\r\n\r\n"


_HOSTILE = {
    "no Content-Type": (PIXELS, None, 415, "missing Content-Type header"),
    "text/plain": (PIXELS, "text/plain", 415, "Content-Type 'text/plain' is not accepted"),
    "parquet": (b"PAR1", "application/vnd.apache.parquet", 415, "is not accepted"),
    "JSON list": ("[" + PIXELS + "]", "application/json", 400, "the body is a JSON list"),
    "JSON number": ("3", "application/json", 400, "not a JSON object"),
    "malformed JSON": ('{"dataframe_split": {"columns": tru}}', "application/json", 400,
                       "Ensure that input is a valid JSON formatted string"),
    "cut-off JSON": (PIXELS.rsplit(",", 1)[0], "application/json", 400, "brackets do not balance"),
    "nested lists": ('{"dataframe_split": ' + "[" * 40 + "]" * 40 + "}", "application/json", 400,
                     "nested 41 levels deep"),
    "deeply nested lists": ('{"dataframe_split": ' + "[" * 50_000 + "]" * 50_000 + "}", "application/json", 400,
                            "50001 arrays and objects"),
    "deeply nested objects": ('{"a": ' + '{"b": ' * 3000 + "1" + "}" * 3001, "application/json", 400,
                              "nested 3001 levels deep"),
    "bad CSV row": ("image\nbm90IGFuIGltYWdl\n", "text/csv", 400, "row 0, column image: not a PNG or JPEG image"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(_HOSTILE))
def test_hostile_input_gets_a_4xx_naming_the_problem(asl_server, case):
    body, content_type, status, message = _HOSTILE[case]
    response = asl_server.post(body, content_type)
    assert response.status_code == status, response.text[:500]
    assert message in response.json()["message"]


@pytest.mark.e2e
def test_every_refusal_of_the_model_keeps_its_400_and_message(asl_server):
    from test_recognizer import (
        _BAD_REQUESTS,  # the model's own refusals, as test_recognizer sends them to MLflow
    )

    for case, (body, message) in _BAD_REQUESTS.items():
        response = asl_server.post(body if isinstance(body, str) else json.dumps(body))
        assert response.status_code == 400, (case, response.text[:500])
        assert message in response.json()["message"], case


@pytest.mark.e2e
def test_oversized_bodies_get_413_before_they_are_read(asl_server):
    limit = DEFAULT_MAX_BODY_BYTES
    # Content-Length over the limit, and not one byte of the body sent: the answer cannot wait for it
    status, body = raw_post(asl_server.url, {"Host": "x", "Content-Type": "application/json",
                                             "Content-Length": str(limit + 1)}, [])
    assert status == 413 and f"{limit + 1} bytes is larger than the limit of {limit} bytes" in body
    # chunked, no length: refused while streaming, once the limit is passed (not at the end of 64 MiB)
    start = time.perf_counter()
    status, body = raw_post(asl_server.url, {"Host": "x", "Content-Type": "application/json",
                                             "Transfer-Encoding": "chunked"}, chunked(64 << 20))
    assert status == 413 and f"larger than the limit of {limit} bytes" in body, body
    assert time.perf_counter() - start < 10
    # requests sends the whole body, then reads the answer: it gets the 413 too
    response = asl_server.post(b'{"a": "' + b"A" * limit + b'"}')
    assert response.status_code == 413
    assert asl_server.post(PIXELS).status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["pixels", "images"])
def test_predictions_equal_mlflow_models_serve(asl_server, served, form):
    images = served.test_images[:64]
    body = json.dumps(pixels_body(images) if form == "pixels" else images_body(images))
    ours, theirs = asl_server.post(body), served.post(json.loads(body))
    assert ours.status_code == theirs.status_code == 200, ours.text[:300]
    ours, theirs = ours.json()["predictions"], theirs.json()["predictions"]
    assert [(p["letter"], p["label"]) for p in ours] == [(p["letter"], p["label"]) for p in theirs]
    # the same model; TensorFlow's thread count (1 per worker here) may change the last bits of a float
    np.testing.assert_allclose([p["confidence"] for p in ours], [p["confidence"] for p in theirs], rtol=1e-5)
    assert [[t["letter"] for t in p["top3"]] for p in ours] == [[t["letter"] for t in p["top3"]] for p in theirs]


def _count(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.e2e
def test_metrics_count_what_was_sent_across_workers(asl_server, served):
    before = asl_server.metrics()
    answers = [asl_server.post(json.dumps(pixels_body(served.test_images[i:i + 3]))) for i in range(0, 30, 3)]
    refused = [asl_server.post(PIXELS, None) for _ in range(4)] + [asl_server.post("[]")]
    after = asl_server.metrics()
    assert all(a.status_code == 200 for a in answers) and [r.status_code for r in refused] == [415] * 4 + [400]

    def delta(name: str, **labels: str) -> float:
        return _count(after, name, **labels) - _count(before, name, **labels)

    assert delta("asl_http_requests_total", method="POST", path="/invocations", status="200") == 10
    assert delta("asl_http_requests_total", method="POST", path="/invocations", status="415") == 4
    assert delta("asl_http_requests_total", method="POST", path="/invocations", status="400") == 1
    assert delta("asl_http_request_duration_seconds_count", path="/invocations") == 15
    assert delta("asl_guard_refusals_total", reason="unsupported_media_type") == 4
    letters = Counter(p["letter"] for a in answers for p in a.json()["predictions"])
    assert sum(letters.values()) == 30
    for letter, count in letters.items():
        assert delta("asl_predictions_total", letter=letter) == count
    # 15 connections of their own, accepted by either of the 2 workers: the exposition sums both workers' files
    assert asl_server.log.read_text().count("Started server process") == 2


@pytest.mark.e2e
def test_one_access_log_line_per_request_with_status_rows_and_ms(asl_server, served):
    marker = f"/invocations?probe={time.time_ns()}"
    requests.post(asl_server.url + marker, data=json.dumps(pixels_body(served.test_images[:5])),
                  headers={"Content-Type": "application/json"}, timeout=60).raise_for_status()
    time.sleep(0.2)
    lines = [line for line in asl_server.log.read_text().splitlines() if "access:" in line and "POST /invocations" in line]
    assert lines, asl_server.log.read_text()[-2000:]
    import re
    assert re.search(r"access: 127\.0\.0\.1:\d+ POST /invocations 200 rows=5 \d+\.\dms$", lines[-1]), lines[-1]
    for path in ("/ping", "/health"):
        assert requests.get(asl_server.url + path, timeout=10).status_code == 200


@pytest.mark.e2e
def test_kept_alive_connection_answers_without_a_delayed_ack_stall(asl_server):
    # /ping costs the server ~1 ms; with Nagle's algorithm on, each answer after the first would wait ~40 ms
    session = requests.Session()
    session.get(f"{asl_server.url}/ping", timeout=10)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        assert session.get(f"{asl_server.url}/ping", timeout=10).status_code == 200
        times.append(time.perf_counter() - start)
    assert sorted(times)[5] < 0.02, times


@pytest.mark.e2e
def test_concurrent_mixed_load_gets_no_5xx(asl_server, served):
    valid = [json.dumps(pixels_body(served.test_images[i:i + 1])) for i in range(8)] + \
            [json.dumps(images_body(served.test_images[i:i + 1])) for i in range(8)]
    hostile = [(PIXELS, None), ("[1]", "application/json"), ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "application/json"),
               (PIXELS[:-3], "application/json"), ('{"dataframe_split": {"columns": ["image"], "data": [["eA=="]]}}',
                                                   "application/json")]
    statuses: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        session = requests.Session()
        for i in range(25):  # 8 clients x 25 requests, one in five hostile
            if i % 5 == index % 5:
                body, content_type = hostile[(index + i) % len(hostile)]
                kind = "hostile"
            else:
                body, content_type, kind = valid[(index * 7 + i) % len(valid)], "application/json", "valid"
            response = session.post(f"{asl_server.url}/invocations", data=body,
                                    headers={"Content-Type": content_type} if content_type else {}, timeout=60)
            with lock:
                statuses.append((kind, response.status_code))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 200
    assert {s for k, s in statuses if k == "valid"} == {200}
    assert all(400 <= s < 500 for k, s in statuses if k == "hostile"), Counter(statuses)
    assert requests.get(f"{asl_server.url}/health", timeout=10).status_code == 200


def _pgid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


# --- teach mode's photo store (asl_mlops.serving.collect) -------------------------------------------

def photo_bytes(kind: str = ".jpg", seed: int = 0) -> bytes:
    import cv2

    image = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return cv2.imencode(kind, image)[1].tobytes()


def teach_post(url: str, name: str, letter: str, body: bytes, content_type: str = "image/jpeg") -> requests.Response:
    return requests.post(f"{url}/teach", params={"name": name, "letter": letter}, data=body,
                         headers={"Content-Type": content_type}, timeout=60)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_without_collect_dir_teach_mode_is_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    async def not_found(scope, receive, send) -> None:
        raise AssertionError("the model's app must not see /teach")

    status, _, body = asgi_get(RequestGuard(not_found), "/teach")
    assert status == 404 and b"start the server with --collect-dir" in body


@pytest.mark.e2e
def test_teach_mode_keeps_photos_in_signer_folders_and_refuses_bad_input_writing_nothing(asl_server):
    import cv2

    url, root = asl_server.url, asl_server.collect_dir
    info = requests.get(f"{url}/teach", timeout=10).json()
    assert len(info["letters"]) == 24 and "J" not in info["letters"] and info["max_photos_per_person"] == COLLECT_MAX
    assert set(info["handshapes"]) == set(info["letters"])
    kept = teach_post(url, "ana-1", "b", photo_bytes())
    assert kept.status_code == 201, kept.text
    assert kept.json()["path"].startswith("ana-1/B/") and kept.json()["photos"] == 1
    png = teach_post(url, "ana-1", "C", photo_bytes(".png"), "image/png")
    assert png.status_code == 201 and png.json()["path"].endswith(".jpg")  # stored as JPEG
    stored = files_under(root)
    assert [p.relative_to(root).parts[:2] for p in stored] == [("ana-1", "B"), ("ana-1", "C")]
    assert all(cv2.imread(str(p)) is not None for p in stored)
    assert requests.get(f"{url}/teach", params={"name": "ana-1"}, timeout=10).json()["counts"] == {"B": 1, "C": 1}
    refused = {
        ("../evil", "A", photo_bytes(), "image/jpeg"): (400, "name '../evil' is not allowed"),
        ("a/b", "A", photo_bytes(), "image/jpeg"): (400, "name 'a/b' is not allowed"),
        ("A", "A", photo_bytes(), "image/jpeg"): (400, "not a single letter"),
        ("ana-1", "J", photo_bytes(), "image/jpeg"): (400, "letter 'J' is not one of the 24 letters"),
        ("ana-1", "", photo_bytes(), "image/jpeg"): (400, "letter: missing"),
        ("ana-1", "A", b"just some notes", "image/jpeg"): (400, "photo: not a PNG or JPEG image"),
        ("ana-1", "A", photo_bytes()[:200], "image/jpeg"): (400, "photo:"),
        ("ana-1", "A", photo_bytes(), "text/plain"): (415, "send the photo's bytes as image/jpeg or image/png"),
        ("ana-1", "A", b"\xff\xd8" + b"0" * (8 * 1024 * 1024), "image/jpeg"): (413, "larger than the limit"),
    }
    for (name, letter, body, content_type), (status, message) in refused.items():
        answer = teach_post(url, name, letter, body, content_type)
        assert answer.status_code == status and message in answer.json()["message"], (name, letter, answer.text)
    assert files_under(root) == stored  # nothing written, not even a partial file
    assert not (root.parent / "evil").exists()


@pytest.mark.e2e
def test_teach_mode_holds_the_per_person_limit_under_concurrent_uploads_to_two_workers(asl_server):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda k: teach_post(asl_server.url, "busy", "LVYAB"[k % 5], photo_bytes(seed=k)),
                                range(3 * COLLECT_MAX)))
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: COLLECT_MAX, 409: 2 * COLLECT_MAX}, statuses
    assert all("already has 6 photos" in a.json()["message"] for a in answers if a.status_code == 409)
    assert len(files_under(asl_server.collect_dir / "busy")) == COLLECT_MAX
    assert sorted(a.json()["photos"] for a in answers if a.status_code == 201) == list(range(1, COLLECT_MAX + 1))
