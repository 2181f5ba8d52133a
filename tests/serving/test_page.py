"""The web page of `asl-mlops serve` (asl_mlops/serving/page/index.html) in a real browser: Debian's Chromium, headless,
driven by Playwright's Python client (never `playwright install`). A photo upload and a fake camera show the
letter; bad files show the server's reason and leave it up; the page loads nothing from another host.

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
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from conftest import REAL_HANDS, real_hand_photos
from served_model import free_port, png_base64, stop_server, train_small_recognizer

from asl_mlops.serving.guard import DEFAULT_MAX_BODY_BYTES

CHROMIUM = Path("/usr/bin/chromium")
# Known to work with Debian's Chromium as root, in a container without a GPU or network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 120.0  # seconds for `asl-mlops serve` to answer /ping
LETTER_TIMEOUT_MS = 20_000  # for the first answer to show: the first request of a worker traces its graph


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


def write_y4m(frame: np.ndarray, path: Path, frames: int = 10) -> Path:
    """A .y4m video of `frames` copies of a BGR frame, for Chromium's --use-file-for-fake-video-capture."""
    height, width = frame.shape[:2]
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)
    return path


def predicted(url: str, image_base64: str) -> dict:
    body = {"dataframe_split": {"columns": ["image"], "data": [[image_base64]]}}
    response = requests.post(f"{url}/invocations", json=body, timeout=60)
    response.raise_for_status()
    return response.json()["predictions"][0]


@contextmanager
def sign_mnist_page_server() -> Iterator[tuple[str, Path, str]]:
    """`asl-mlops serve` of a small Sign MNIST recognizer trained here, and a photo it reads correctly:
    yields (base URL, photo path, its letter). Everything lives in one mkdtemp folder, deleted after."""
    from asl_mlops.data.sign_mnist import load_csv

    workdir = Path(tempfile.mkdtemp(prefix="asl-page-tests-"))
    process = None
    try:
        tracking_uri, result = train_small_recognizer(workdir, "page-tests", augment=False)

        port, log = free_port(), workdir / "server.log"
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri",
                                        f"runs:/{result.run_id}/recognizer", "--port", str(port), "--workers", "1"],
                                       env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = wait_for_ping(process, port, log)

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
        yield url, photo_path, as_photo["letter"]
    finally:
        if process is not None:
            stop_server(process)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def photo_page_server(hand_model: Path) -> Iterator[tuple[str, Path, str]]:
    """`asl-mlops serve` of a small photo recognizer trained here on real hands (tests/photo_model.py), and a
    real hand photo of the other signer that it reads correctly, as the photo and as a camera frame of it."""
    from photo_model import train_photo_recognizer

    workdir = Path(tempfile.mkdtemp(prefix="asl-page-tests-"))
    process = None
    try:
        env = train_photo_recognizer(workdir, hand_model)
        port, log = free_port(), workdir / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri",
                                        "models:/asl-recognizer@champion", "--port", str(port), "--workers", "1"],
                                       env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = wait_for_ping(process, port, log)
        for letter in ("B", "L", "Y", "A", "W", "C"):
            for photo_path in real_hand_photos(letter, "massey-hand2", 3, skip=2):
                photo = cv2.imread(str(photo_path))
                as_photo = predicted(url, png_base64(photo))
                as_frame = predicted(url, as_browser_sends(camera_frame(photo)))
                if as_photo["letter"] == as_frame["letter"] == letter and as_photo["box"]:
                    yield url, photo_path, letter
                    return
        raise AssertionError("the photo recognizer read none of the candidate photos right as photo and camera frame")
    finally:
        if process is not None:
            stop_server(process)
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
def page_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, str]]:
    """(base URL of a running `asl-mlops serve`, a photo path, the letter the page must show for it).

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
    visit = Visit(page, page_server[0])
    page.goto(page_server[0] + "/")
    yield visit
    page.close()


def test_an_uploaded_photo_shows_its_letter_confidence_and_top3(visit, page_server):
    from playwright.sync_api import expect

    _, photo, letter = page_server
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
        assert visit.page.evaluate("""() => {
            const canvas = document.querySelector("canvas");
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            return data.some((value, i) => i % 4 === 3 && value > 0);
        }""")
    assert visit.foreign_requests() == []
    assert any(url == visit.base_url + "/invocations" for url in visit.urls)


def test_bad_files_get_a_readable_message_no_stale_letter_and_the_server_stays_up(visit, page_server, tmp_path):
    from playwright.sync_api import expect

    base_url, photo, letter = page_server
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


def test_a_hand_box_is_drawn_over_the_picture_and_no_hand_clears_the_letter(visit, page_server):
    # The photo recognizer's answers (a box; "no hand found"), given to the page by the browser itself.
    from playwright.sync_api import expect

    _, photo, _ = page_server
    answers = iter([
        {"letter": "B", "label": 1, "confidence": 0.91, "top3": [{"letter": "B", "probability": 0.91},
                                                                 {"letter": "F", "probability": 0.05},
                                                                 {"letter": "E", "probability": 0.02}],
         "box": {"x": 0.25, "y": 0.25, "w": 0.5, "h": 0.5}, "reason": ""},
        {"letter": "", "label": -1, "confidence": 0.0, "top3": [], "box": None, "reason": "no hand found"},
    ])
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
    assert visit.page.evaluate("""() => {
        const canvas = document.querySelector("canvas");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        return data.some((value, i) => i % 4 === 3 && value > 0);
    }""") is False  # the old box is gone


def test_the_camera_sends_one_frame_at_a_time_a_few_a_second_and_shows_the_letter(playwright, page_server, tmp_path):
    from playwright.sync_api import expect

    base_url, photo, letter = page_server
    video = write_y4m(camera_frame(cv2.imread(str(photo))), tmp_path / "camera.y4m")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    try:
        page = browser.new_page()
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
        page.goto(base_url + "/?camera=on")
        expect(visit.by_id("letter")).to_have_text(letter, timeout=LETTER_TIMEOUT_MS)
        expect(page.get_by_role("button", name="Turn camera off")).to_have_attribute("aria-pressed", "true")
        assert page.locator("video").is_visible()

        first = len(sent)
        page.wait_for_timeout(3000)
        rate = (len(sent) - first) / 3.0
        assert 2.0 <= rate <= 5.5, f"{rate:.1f} frames a second"
        assert most_in_flight[0] == 1
        expect(visit.by_id("letter")).to_have_text(letter)

        page.get_by_role("button", name="Turn camera off").click()
        expect(page.get_by_role("button", name="Turn camera on")).to_have_attribute("aria-pressed", "false")
        page.wait_for_timeout(600)  # a frame in flight may still be answered; then nothing more is sent
        stopped = len(sent)
        page.wait_for_timeout(1000)
        assert len(sent) == stopped
        expect(visit.by_id("letter")).to_have_text("")
        assert visit.foreign_requests() == []
    finally:
        browser.close()
