"""The web page of `asl-mlops serve` (asl_mlops/serving/page/index.html) in a real browser: Debian's Chromium, headless,
driven by Playwright's Python client (never `playwright install`). A photo upload and a fake camera show the
letter; a hand the model is not sure of shows "Not sure" and its best guesses; on the camera the shown letter holds
steady; bad files show the server's reason and leave it up; the page loads nothing from another host.

Skipped, with the reason, where /usr/bin/chromium or the playwright package is missing (.ci/run installs both).
"""

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from conftest import REAL_HANDS, real_hand_photos
from served_model import free_port, png_base64, stop_server, train_small_recognizer, using_store

from asl_mlops.config import DEFAULT_MAX_BODY_BYTES

CHROMIUM = Path("/usr/bin/chromium")
# Known to work with Debian's Chromium as root, in a container without a GPU or network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 120.0  # seconds for `asl-mlops serve` to answer /ping
LETTER_TIMEOUT_MS = 20_000  # for the first answer to show: the first request of a worker traces its graph
ROOT = Path(__file__).resolve().parents[2]


def _why_no_browser() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install playwright)"
    return None


pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_why_no_browser() is not None, reason=str(_why_no_browser()))]


# --- a served model and a photo it reads correctly ------------------------------------------------

def camera_frame(photo: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """The photo as a camera of width x height would show it: scaled to fit, centred, the rest filled by
    repeating its edge pixels (no bars of a colour the photo does not have)."""
    scale = min(width / photo.shape[1], height / photo.shape[0])
    inner = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    top, left = (height - inner.shape[0]) // 2, (width - inner.shape[1]) // 2
    return cv2.copyMakeBorder(inner, top, height - inner.shape[0] - top, left, width - inner.shape[1] - left,
                              cv2.BORDER_REPLICATE)


def as_browser_sends(frame: np.ndarray) -> str:
    """A frame as the page would send it from the fake camera: through I420 (the .y4m), then JPEG at quality 85."""
    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def write_y4m(frame: np.ndarray, path: Path, frames: int = 30, fps: int = 30) -> Path:
    """A .y4m video of `frames` copies of a BGR frame at a webcam's `fps`, for Chromium's
    --use-file-for-fake-video-capture (which plays it in a loop)."""
    height, width = frame.shape[:2]
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)
    return path


def predicted(url: str, image_base64: str) -> dict:
    body = {"dataframe_split": {"columns": ["image"], "data": [[image_base64]]}}
    response = requests.post(f"{url}/invocations", json=body, timeout=60)
    response.raise_for_status()
    return response.json()["predictions"][0]


@dataclass(frozen=True)
class PageServer:
    """A running `asl-mlops serve`, a photo its model reads correctly, and where its model comes from."""

    url: str  # http://127.0.0.1:PORT
    photo: Path
    letter: str  # the letter the page must show for `photo`
    model_uri: str
    env: dict[str, str]  # the environment the server runs in (its tracking store)


@contextmanager
def serving(model_uri: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`asl-mlops serve --model-uri model_uri` (one worker) in `env`, until the block ends: yields its base URL."""
    process = None
    try:
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri", model_uri,
                                        "--port", str(port := free_port()), "--workers", "1"],
                                       env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        yield wait_for_ping(process, port, log)
    finally:
        if process is not None:
            stop_server(process)


@contextmanager
def sign_mnist_page_server() -> Iterator[PageServer]:
    """`asl-mlops serve` of a small Sign MNIST recognizer trained here, and a photo it reads correctly. Everything
    lives in one mkdtemp folder, deleted after."""
    from asl_mlops.data.sign_mnist import load_csv

    workdir = Path(tempfile.mkdtemp(prefix="asl-page-tests-"))
    try:
        tracking_uri, result = train_small_recognizer(workdir, "page-tests", augment=False)
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
        model_uri = f"runs:/{result.run_id}/recognizer"
        with serving(model_uri, env, workdir / "server.log") as url:
            # A 28x28 test image scaled up 10x (the server's area resize gives back the same 28x28 pixels), one the
            # model reads correctly both as the photo and as the fake camera's frame of it, confidently.
            test = load_csv(workdir / "data" / "sign_mnist_test.csv")
            for image, label in zip(test.images[:100], test.labels[:100]):
                photo = cv2.resize(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), (280, 280), interpolation=cv2.INTER_NEAREST)
                as_photo = predicted(url, png_base64(photo))
                as_frame = predicted(url, as_browser_sends(camera_frame(photo)))
                if as_photo["label"] == as_frame["label"] == int(label) and min(as_photo["confidence"],
                                                                                 as_frame["confidence"]) > 0.8:
                    break
            else:
                raise AssertionError("the model read none of the first 100 test images right as photo and camera frame")
            photo_path = workdir / f"sign-{as_photo['letter']}.png"
            cv2.imwrite(str(photo_path), photo)
            yield PageServer(url, photo_path, as_photo["letter"], model_uri, env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def photo_page_server(hand_model: Path) -> Iterator[PageServer]:
    """`asl-mlops serve` of a small photo recognizer trained here on real hands (tests/photo_model.py), and a
    real hand photo of the other signer that it reads correctly, as the photo and as a camera frame of it."""
    from photo_model import train_photo_recognizer

    workdir = Path(tempfile.mkdtemp(prefix="asl-page-tests-"))
    model_uri = "models:/asl-recognizer@champion"
    try:
        env = train_photo_recognizer(workdir, hand_model)
        with serving(model_uri, env, workdir / "server.log") as url:
            for letter in ("B", "L", "Y", "A", "W", "C"):
                for photo_path in real_hand_photos(letter, "massey-hand2", 3, skip=2):
                    photo = cv2.imread(str(photo_path))
                    as_photo = predicted(url, png_base64(photo))
                    as_frame = predicted(url, as_browser_sends(camera_frame(photo)))
                    if as_photo["letter"] == as_frame["letter"] == letter and as_photo["box"]:
                        yield PageServer(url, photo_path, letter, model_uri, env)
                        return
            raise AssertionError("the photo recognizer read none of the candidate photos right as photo and camera frame")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_ping(process: subprocess.Popen, port: int, log: Path) -> str:
    """The server's base URL once it answers /ping."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"asl-mlops serve did not answer /ping in {START_TIMEOUT} s"
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def page_server(request: pytest.FixtureRequest) -> Iterator[PageServer]:
    """A running `asl-mlops serve` and a photo it reads correctly.

    The photo recognizer and a real hand photo (its answers carry a box) where ../shared/data/hands exists; the
    Sign MNIST recognizer on a synthetic glyph elsewhere, so the page is still tested in any clone."""
    if REAL_HANDS.is_dir():
        with photo_page_server(request.getfixturevalue("hand_model")) as served:
            yield served
    else:
        with sign_mnist_page_server() as served:
            yield served


# --- the browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Visit:
    """One page of the browser, recording the URL of every request it makes."""

    def __init__(self, page, base_url: str) -> None:
        self.page, self.base_url, self.urls = page, base_url, []
        page.on("request", lambda request: self.urls.append(request.url))

    def by_id(self, test_id: str):
        return self.page.get_by_test_id(test_id)

    def foreign_requests(self) -> list[str]:
        """Requests to anything but the server's origin (data: and blob: URLs are the page's own)."""
        return [url for url in self.urls if not (url.startswith(self.base_url + "/") or url.startswith(("data:", "blob:")))]


@pytest.fixture
def visit(browser, page_server) -> Iterator[Visit]:
    page = browser.new_page()
    visit = Visit(page, page_server.url)
    page.goto(page_server.url + "/")
    yield visit
    page.close()


def test_an_uploaded_photo_shows_its_letter_confidence_and_top3(visit, page_server):
    from playwright.sync_api import expect

    photo, letter = page_server.photo, page_server.letter
    visit.page.set_input_files("input[type=file]", str(photo))
    expect(visit.by_id("letter")).to_have_text(letter, timeout=LETTER_TIMEOUT_MS)
    expect(visit.by_id("confidence")).to_have_text(re.compile(r"^\d{1,3}%$"))
    confidence = visit.by_id("confidence").text_content()
    assert 0 < int(confidence.rstrip("%")) <= 100, confidence
    top3 = visit.by_id("top3").locator("li")
    expect(top3).to_have_count(3)
    assert top3.first.text_content().startswith(letter)
    expect(visit.by_id("message")).to_have_text("")
    assert visit.page.locator("img").first.is_visible()
    if REAL_HANDS.is_dir():  # the photo recognizer's answer: the hand's box is drawn over the photo
        assert box_is_drawn(visit.page)
    assert visit.foreign_requests() == []
    assert any(url == visit.base_url + "/invocations" for url in visit.urls)


def test_bad_files_get_a_readable_message_no_stale_letter_and_the_server_stays_up(visit, page_server, tmp_path):
    from playwright.sync_api import expect

    base_url, photo, letter = page_server.url, page_server.photo, page_server.letter
    visit.page.set_input_files("input[type=file]", str(photo))
    expect(visit.by_id("letter")).to_have_text(letter, timeout=LETTER_TIMEOUT_MS)

    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("these are not the pixels you are looking for\n")
    visit.page.set_input_files("input[type=file]", str(not_an_image))
    expect(visit.by_id("message")).to_contain_text("could not read this file as a picture: not a PNG or JPEG image")
    expect(visit.by_id("letter")).to_have_text("")
    expect(visit.by_id("top3").locator("li")).to_have_count(0)

    # base64 makes 4 characters of every 3 bytes: this file's request is over the guard's limit (413)
    oversized = tmp_path / "huge.jpg"
    oversized.write_bytes(b"\xff\xd8" + bytes(DEFAULT_MAX_BODY_BYTES * 3 // 4))
    visit.page.set_input_files("input[type=file]", str(oversized))
    expect(visit.by_id("message")).to_contain_text(
        f"too large: the server accepts requests of up to {DEFAULT_MAX_BODY_BYTES / 1e6:.1f} MB", timeout=30_000)
    expect(visit.by_id("letter")).to_have_text("")

    assert requests.get(f"{base_url}/ping", timeout=10).status_code == 200
    visit.page.set_input_files("input[type=file]", str(photo))  # and the page still works
    expect(visit.by_id("letter")).to_have_text(letter, timeout=LETTER_TIMEOUT_MS)
    assert visit.foreign_requests() == []


def _answer(row: dict) -> dict:
    return {"status": 200, "content_type": "application/json", "body": json.dumps({"predictions": [row]})}


def box_is_drawn(page) -> bool:
    return page.evaluate("""() => {
        const canvas = document.querySelector("canvas");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        return data.some((value, i) => i % 4 === 3 && value > 0);
    }""")


def sure(letter: str, *guesses: str) -> dict:
    """An answer row naming `letter` (the top guess) with a box."""
    top3 = [{"letter": g, "probability": p} for g, p in zip((letter, *guesses), (0.91, 0.05, 0.02))]
    return {"letter": letter, "label": 1, "confidence": 0.91, "top3": top3,
            "box": {"x": 0.25, "y": 0.25, "w": 0.5, "h": 0.5}, "reason": ""}


NOT_SURE_ROW = {"letter": "", "label": -1, "confidence": 0.41,
                "top3": [{"letter": "B", "probability": 0.41}, {"letter": "D", "probability": 0.22},
                         {"letter": "F", "probability": 0.10}],
                "box": {"x": 0.25, "y": 0.25, "w": 0.5, "h": 0.5}, "reason": "not sure"}
NO_HAND_ROW = {"letter": "", "label": -1, "confidence": 0.0, "top3": [], "box": None, "reason": "no hand found"}


def test_a_hand_box_is_drawn_over_the_picture_and_no_hand_clears_the_letter(visit, page_server):
    # The photo recognizer's answers (a box; "no hand found"), given to the page by the browser itself.
    from playwright.sync_api import expect

    photo = page_server.photo
    answers = iter([sure("B", "F", "E"), NO_HAND_ROW])
    visit.page.route("**/invocations", lambda route: route.fulfill(**_answer(next(answers))))

    visit.page.set_input_files("input[type=file]", str(photo))
    expect(visit.by_id("letter")).to_have_text("B")
    expect(visit.by_id("confidence")).to_have_text("91%")
    drawn = visit.page.evaluate("""() => {
        const canvas = document.querySelector("canvas"), image = document.querySelector("img");
        const alpha = (fx, fy) => canvas.getContext("2d").getImageData(
            Math.round(fx * (canvas.width - 1)), Math.round(fy * (canvas.height - 1)), 1, 1).data[3];
        return {size: [canvas.clientWidth, canvas.clientHeight, image.clientWidth, image.clientHeight],
                edges: [alpha(0.25, 0.5), alpha(0.75, 0.5), alpha(0.5, 0.25), alpha(0.5, 0.75)],
                inside: alpha(0.5, 0.5), outside: alpha(0.1, 0.1)};
    }""")
    assert drawn["size"][:2] == drawn["size"][2:], drawn  # the canvas lies exactly over the picture
    assert all(alpha > 0 for alpha in drawn["edges"]) and drawn["inside"] == drawn["outside"] == 0, drawn

    visit.page.set_input_files("input[type=file]", str(photo))
    expect(visit.by_id("message")).to_have_text("No hand found.")
    expect(visit.by_id("letter")).to_have_text("")
    expect(visit.by_id("confidence")).to_have_text("")
    expect(visit.by_id("top3").locator("li")).to_have_count(0)
    assert not box_is_drawn(visit.page)  # the old box is gone


def test_not_sure_shows_the_three_best_guesses_and_the_box_and_no_letter(visit, page_server):
    # The photo recognizer's "not sure" answer (a hand, no letter sure enough), given to the page by the browser.
    from playwright.sync_api import expect

    answers = iter([NOT_SURE_ROW, sure("B", "F", "E")])
    visit.page.route("**/invocations", lambda route: route.fulfill(**_answer(next(answers))))
    visit.page.set_input_files("input[type=file]", str(page_server.photo))
    expect(visit.by_id("letter")).to_have_text("Not sure")
    expect(visit.by_id("confidence")).to_have_text("")
    guesses = visit.by_id("top3").locator("li")
    expect(guesses).to_have_count(3)
    assert [guess.text_content() for guess in guesses.all()] == ["B41%", "D22%", "F10%"]
    expect(visit.by_id("message")).to_contain_text("no letter is sure enough")
    assert box_is_drawn(visit.page)

    visit.page.set_input_files("input[type=file]", str(page_server.photo))  # a sure answer looks as before
    expect(visit.by_id("letter")).to_have_text("B")
    expect(visit.by_id("confidence")).to_have_text("91%")
    expect(visit.by_id("message")).to_have_text("")


@pytest.fixture(scope="module")
def not_sure_server(page_server, tmp_path_factory) -> Iterator[PageServer]:
    """The page server's photo recognizer, downloaded and served again with its `not_sure_below` set to 1.0: every
    hand it finds is "not sure". (The MLmodel file keeps a pyfunc's model_config as its flavor's `config`.)"""
    import mlflow
    import yaml

    if not REAL_HANDS.is_dir():
        pytest.skip(f"'not sure' is the photo recognizer's answer; {REAL_HANDS} is missing")
    folder = tmp_path_factory.mktemp("not-sure")
    with using_store(page_server.env["MLFLOW_TRACKING_URI"]):
        model = Path(mlflow.artifacts.download_artifacts(artifact_uri=page_server.model_uri,
                                                         dst_path=str(folder / "model")))
    spec = yaml.safe_load((model / "MLmodel").read_text())
    config = spec["flavors"]["python_function"]["config"]
    assert "not_sure_below" in config, config  # the model says how sure a letter must be
    config["not_sure_below"] = 1.0
    (model / "MLmodel").write_text(yaml.safe_dump(spec, sort_keys=False))
    with serving(str(model), page_server.env, folder / "server.log") as url:
        yield PageServer(url, page_server.photo, page_server.letter, str(model), page_server.env)


def test_a_real_model_not_sure_of_a_hand_shows_not_sure_and_its_best_guesses(browser, not_sure_server):
    from playwright.sync_api import expect

    row = predicted(not_sure_server.url, png_base64(cv2.imread(str(not_sure_server.photo))))
    assert (row["reason"], row["letter"], row["label"]) == ("not sure", "", -1), row
    assert row["top3"][0]["letter"] == not_sure_server.letter and row["box"], row  # what it saw is kept

    page = browser.new_page()
    try:
        visit = Visit(page, not_sure_server.url)
        page.goto(not_sure_server.url + "/")
        page.set_input_files("input[type=file]", str(not_sure_server.photo))
        expect(visit.by_id("letter")).to_have_text("Not sure", timeout=LETTER_TIMEOUT_MS)
        guesses = visit.by_id("top3").locator("li")
        expect(guesses).to_have_count(3)
        assert guesses.first.text_content().startswith(not_sure_server.letter)
        assert box_is_drawn(page)
        assert visit.foreign_requests() == []
    finally:
        page.close()


def test_predict_prints_not_sure_with_the_guesses_and_no_hand_as_before(not_sure_server, tmp_path):
    from click.testing import CliRunner

    from asl_mlops.cli import main

    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((120, 160, 3), 200, dtype=np.uint8))
    result = CliRunner().invoke(main, ["predict", "--endpoint", not_sure_server.url, str(not_sure_server.photo),
                                       str(wall)])
    assert result.exit_code == 0, result.output
    hand, no_hand = result.stdout.splitlines()
    assert re.fullmatch(rf"{re.escape(str(not_sure_server.photo))}: not sure \(maybe {not_sure_server.letter} "
                        r"\d\.\d{3}, [A-Y] \d\.\d{3}, [A-Y] \d\.\d{3}\), hand at x \d\.\d\d, y .*", hand), hand
    assert no_hand == f"{wall}: no hand found"


# --- the camera ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def camera(playwright, page_server, tmp_path_factory):
    """A browser whose fake camera shows the page server's photo, 30 frames a second."""
    video = write_y4m(camera_frame(cv2.imread(str(page_server.photo))), tmp_path_factory.mktemp("camera") / "camera.y4m")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    yield browser
    browser.close()


# An init script: window.letterChanges lists each new text of the shown letter, from the page's start.
COUNT_LETTER_CHANGES = """
window.letterChanges = [];
document.addEventListener("DOMContentLoaded", () => {
    const letter = document.querySelector("[data-testid=letter]");
    let shown = letter.textContent;
    new MutationObserver(() => {
        if (letter.textContent !== shown) window.letterChanges.push(shown = letter.textContent);
    }).observe(letter, {childList: true, characterData: true, subtree: true});
});
"""


def test_the_camera_shows_the_letter_steadily_with_its_rate_two_frames_at_most_in_flight(camera, page_server):
    from playwright.sync_api import expect

    base_url, letter = page_server.url, page_server.letter
    page = camera.new_page()
    try:
        visit = Visit(page, base_url)
        in_flight, most_in_flight, sent = [0], [0], []

        def started(request) -> None:
            if request.url.endswith("/invocations"):
                in_flight[0] += 1
                most_in_flight[0] = max(most_in_flight[0], in_flight[0])
                sent.append(time.monotonic())

        def ended(request) -> None:
            if request.url.endswith("/invocations"):
                in_flight[0] -= 1

        page.on("request", started)
        page.on("requestfinished", ended)
        page.on("requestfailed", ended)
        page.add_init_script(COUNT_LETTER_CHANGES)
        page.goto(base_url + "/?camera=on")
        expect(visit.by_id("letter")).to_have_text(letter, timeout=LETTER_TIMEOUT_MS)
        expect(page.get_by_role("button", name="Turn camera off")).to_have_attribute("aria-pressed", "true")
        assert page.locator("video").is_visible()

        page.evaluate("() => { window.letterChanges = []; }")
        first = len(sent)
        page.wait_for_timeout(3000)
        assert len(sent) - first >= 2  # it keeps sending frames
        assert page.evaluate("() => window.letterChanges") == []  # the same hand: the same letter, throughout
        expect(visit.by_id("letter")).to_have_text(letter)
        expect(visit.by_id("rate")).to_have_text(re.compile(r"^\d+\.\d answers a second$"))
        assert 1 <= most_in_flight[0] <= 2

        page.get_by_role("button", name="Turn camera off").click()
        expect(page.get_by_role("button", name="Turn camera on")).to_have_attribute("aria-pressed", "false")
        expect(visit.by_id("rate")).to_be_hidden()
        page.wait_for_timeout(600)  # frames in flight may still be answered; then nothing more is sent
        stopped = len(sent)
        page.wait_for_timeout(1000)
        assert len(sent) == stopped
        expect(visit.by_id("letter")).to_have_text("")
        assert visit.foreign_requests() == []
    finally:
        page.close()


def test_the_camera_shows_an_answer_once_it_leads_the_last_few_so_alternating_answers_do_not_flicker(camera,
                                                                                                      page_server):
    # Answers given to the page by the browser, in the order of its frames: B three times (B shows), then B and D
    # taking turns (B stays), then D for good (D shows), then "not sure" for good.
    from playwright.sync_api import expect

    script = chain([sure("B")] * 3, [sure("D"), sure("B")] * 4, [sure("D")] * 6, repeat(NOT_SURE_ROW))
    page = camera.new_page()
    try:
        page.route("**/invocations", lambda route: route.fulfill(**_answer(next(script))))
        page.add_init_script(COUNT_LETTER_CHANGES)
        page.goto(page_server.url + "/?camera=on")
        expect(page.get_by_test_id("letter")).to_have_text("Not sure", timeout=LETTER_TIMEOUT_MS)
        assert page.evaluate("() => window.letterChanges") == ["B", "D", "Not sure"]
        expect(page.get_by_test_id("top3").locator("li")).to_have_count(3)
    finally:
        page.close()


def test_the_page_camera_benchmark_runs_in_its_tiny_mode(page_server, tmp_path):
    out = tmp_path / "page-camera.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "page_camera.py"), "--url", page_server.url,
                           "--photo", str(page_server.photo), "--letter", page_server.letter, "--tiny",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    (watched,) = results["camera"]
    assert results["commit"] and watched["answers"] > 0
    assert watched["shown_at_start"] == page_server.letter
