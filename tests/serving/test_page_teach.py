"""The web page's teach mode and model version in a real browser (Debian's Chromium through Playwright's Python
client, as tests/serving/test_page.py), against real `asl-mlops serve` processes: the fake camera's hand is kept as
5 frames of a letter only after "Keep and next"; uploads are kept as they are and refusals show the server's message
and write nothing; without --collect-dir the page offers no teach mode; the page names the model version that
answered and says when the alias moved to another.

One model for the module (test_page.py's `page_server`, which also serves it without --collect-dir) and one more
server with teach mode on. Skipped, with the reason, where Chromium or playwright is missing; the camera and the
version tests need the photo recognizer, so they skip without ../shared/data/hands.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import requests
from conftest import REAL_HANDS
from served_model import free_port, stop_server, using_store
from test_page import (  # noqa: F401 (browser, camera, page_server and playwright are fixtures used here)
    LETTER_TIMEOUT_MS,
    PageServer,
    Visit,
    _why_no_browser,
    browser,
    camera,
    page_server,
    playwright,
    wait_for_ping,
)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(_why_no_browser() is not None, reason=str(_why_no_browser()))]

MAX_PHOTOS = 6  # --collect-max-photos of the teach server: the camera test keeps 5 of one person, the upload test hits it
CAPTURE_TIMEOUT_MS = 45_000  # camera start, a 3 s countdown, 5 frames at 3 a second on a busy 2-core machine
MODEL_NAME = "asl-recognizer"


@dataclass(frozen=True)
class TeachServer:
    """`asl-mlops serve --collect-dir` of the page server's model, and the folder it keeps photos in."""

    url: str
    collect_dir: Path
    model: PageServer


@contextmanager
def serving_with(model_uri: str, env: dict[str, str], log: Path, *options: str) -> Iterator[str]:
    """test_page.serving with more options of `asl-mlops serve`: yields the server's base URL."""
    process = None
    try:
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri", model_uri,
                                        "--port", str(port := free_port()), "--workers", "1", *options],
                                       env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        yield wait_for_ping(process, port, log)
    finally:
        if process is not None:
            stop_server(process)


@pytest.fixture(scope="module")
def teach_server(page_server) -> Iterator[TeachServer]:
    """Teach mode on, at most MAX_PHOTOS a person, following the alias every second (the version test moves it).
    Its folder is made with mkdtemp, not under pytest's basetemp, which concurrent pytest sessions prune."""
    workdir = Path(tempfile.mkdtemp(prefix="asl-teach-tests-"))
    collect_dir = workdir / "collected"
    try:
        with serving_with(page_server.model_uri, page_server.env, workdir / "server.log", "--collect-dir",
                          str(collect_dir), "--collect-max-photos", str(MAX_PHOTOS), "--poll-seconds", "1") as url:
            yield TeachServer(url, collect_dir, page_server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# An init script: window.sent lists each fetch of the page as [performance.now(), method, path], timed in the browser
# (the test process's clock sees Playwright's events late, and bunched, on a busy machine).
RECORD_FETCHES = """
window.sent = [];
const fetchOfThePage = window.fetch;
window.fetch = (resource, options = {}) => {
    window.sent.push([performance.now(), options.method || "GET", new URL(resource, location.href).pathname]);
    return fetchOfThePage(resource, options);
};
"""


def files_under(folder: Path) -> list[str]:
    """Every file and folder under `folder` (hidden ones too), as sorted relative paths."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def open_teach_mode(page, url: str, name: str) -> Visit:
    """Load the page, open its Teach tab and start as `name`."""
    from playwright.sync_api import expect

    visit = Visit(page, url)
    page.goto(url + "/")
    visit.by_id("tab-teach").click()
    visit.by_id("teach-name").fill(name)
    visit.by_id("teach-start").click()
    expect(visit.by_id("teach-who")).to_have_text(name)
    return visit


def test_without_collect_dir_the_page_offers_no_teach_mode_and_teach_answers_404(browser, page_server):
    from playwright.sync_api import expect

    for answer in (requests.get(f"{page_server.url}/teach", timeout=10),
                   requests.post(f"{page_server.url}/teach?name=alice&letter=A", data=b"\xff\xd8",
                                 headers={"Content-Type": "image/jpeg"}, timeout=10)):
        assert answer.status_code == 404
        assert answer.json()["error_code"] == "NOT_FOUND" and "teach mode is off" in answer.json()["message"]

    page = browser.new_page()
    try:
        visit = Visit(page, page_server.url)
        with page.expect_response("**/teach") as asked:
            page.goto(page_server.url + "/")
        assert asked.value.status == 404
        page.wait_for_load_state("networkidle")
        expect(visit.by_id("tab-teach")).to_be_hidden()
        expect(visit.by_id("teach")).to_be_hidden()
        expect(visit.by_id("letter")).to_be_visible()  # the page itself works as before
    finally:
        page.close()


def test_the_camera_keeps_five_frames_with_a_hand_and_sends_them_only_on_keep_and_next(camera, teach_server):
    from playwright.sync_api import expect

    if not REAL_HANDS.is_dir():
        pytest.skip(f"the camera must show a hand the photo recognizer finds; {REAL_HANDS} is missing")
    page = camera.new_page()
    try:
        page.add_init_script(RECORD_FETCHES)

        def sent(method: str, path: str) -> list[float]:
            return [when for when, m, p in page.evaluate("() => window.sent") if (m, p) == (method, path)]

        visit = open_teach_mode(page, teach_server.url, "alice")
        expect(visit.by_id("teach-letter")).to_have_text("A")
        expect(visit.by_id("teach-handshape")).to_contain_text("a fist")
        expect(visit.by_id("teach-progress")).to_contain_text("Letter 1 of 24")
        expect(visit.by_id("teach-count")).to_have_text("No photos of A yet.")

        visit.by_id("teach-capture").click()
        expect(visit.by_id("teach-countdown")).to_be_visible(timeout=LETTER_TIMEOUT_MS)
        thumbnails = visit.by_id("teach-thumbs").locator("img")
        expect(thumbnails).to_have_count(5, timeout=CAPTURE_TIMEOUT_MS)
        expect(visit.by_id("teach-keep")).to_be_visible()
        # At most ~3 frames a second: 333 ms from one frame's capture to the next, less the JPEG encoding's jitter.
        asked = sent("POST", "/invocations")
        assert len(asked) >= 5 and min(b - a for a, b in zip(asked, asked[1:])) > 250, asked

        visit.by_id("teach-redo").click()  # this letter's frames are dropped and captured again
        expect(thumbnails).to_have_count(0)
        expect(thumbnails).to_have_count(5, timeout=CAPTURE_TIMEOUT_MS)
        assert sent("POST", "/teach") == []  # nothing is sent before "Keep and next"
        assert files_under(teach_server.collect_dir / "alice") == []

        visit.by_id("teach-keep").click()
        expect(visit.by_id("teach-letter")).to_have_text("B", timeout=LETTER_TIMEOUT_MS)
        expect(visit.by_id("teach-progress")).to_contain_text("Letter 2 of 24")
        expect(visit.by_id("teach-progress")).to_contain_text("5 photos kept in all")
        expect(visit.by_id("teach-count")).to_have_text("No photos of B yet.")
        expect(thumbnails).to_have_count(0)
        assert len(sent("POST", "/teach")) == 5

        kept = files_under(teach_server.collect_dir / "alice")
        assert kept[0] == "A" and len(kept) == 6 and all(p.startswith("A/") and p.endswith(".jpg") for p in kept[1:]), kept
        for path in kept[1:]:
            frame = cv2.imread(str(teach_server.collect_dir / "alice" / path))
            assert frame is not None and max(frame.shape[:2]) <= 480, path  # a JPEG as the page sent it
        assert requests.get(f"{teach_server.url}/teach", params={"name": "alice"}, timeout=10).json()["counts"] == {"A": 5}
    finally:
        page.close()


def test_uploads_are_kept_as_they_are_and_refusals_show_the_servers_message_and_write_nothing(browser, teach_server,
                                                                                          tmp_path):
    from playwright.sync_api import expect

    photo = cv2.imread(str(teach_server.model.photo))
    as_jpeg, as_png = tmp_path / "hand.jpg", tmp_path / "hand.png"
    cv2.imwrite(str(as_jpeg), photo)
    cv2.imwrite(str(as_png), photo)
    bob = teach_server.collect_dir / "bob"
    page = browser.new_page()
    try:
        visit = Visit(page, teach_server.url)
        page.goto(teach_server.url + "/")
        visit.by_id("tab-teach").click()
        visit.by_id("teach-name").fill("../bob")  # the server's rule, checked on the page first
        visit.by_id("teach-start").click()
        expect(visit.by_id("teach-message")).to_contain_text('"../bob" cannot be used as a name: use letters, digits')
        expect(visit.by_id("teach-letter")).to_be_hidden()

        visit = open_teach_mode(page, teach_server.url, "bob")
        expect(visit.by_id("teach-letter")).to_have_text("A")
        upload = visit.by_id("teach-upload")
        upload.set_input_files([str(as_jpeg), str(as_png)])
        expect(visit.by_id("teach-message")).to_have_text("2 photos of A kept.")
        expect(visit.by_id("teach-count")).to_have_text("2 photos of A kept already.")
        kept = files_under(bob)
        assert len(kept) == 3 and all(p.startswith("A/") and p.endswith(".jpg") for p in kept[1:]), kept
        assert as_jpeg.read_bytes() in [(bob / p).read_bytes() for p in kept[1:]]  # a JPEG is kept byte for byte

        notes = tmp_path / "notes.txt"
        notes.write_text("these are not the pixels you are looking for\n")
        fake = tmp_path / "fake.jpg"
        fake.write_bytes(b"\xff\xd8 not a JPEG after all")
        huge = tmp_path / "huge.jpg"
        huge.write_bytes(b"\xff\xd8" + bytes(9 * 1024 * 1024))
        for refused, said in ((notes, "notes.txt was refused: Content-Type 'text/plain': send the photo's bytes as "
                                      "image/jpeg or image/png."),
                              (fake, "fake.jpg was refused: photo: "),
                              (huge, "huge.jpg was refused: the photo is larger than this server keeps (8.4 MB)")):
            upload.set_input_files(str(refused))
            expect(visit.by_id("teach-message")).to_contain_text(said, timeout=30_000)
            expect(visit.by_id("teach-message")).to_contain_text("0 of 1 photo of A kept.")
            assert files_under(bob) == kept

        # The person's limit (MAX_PHOTOS): the upload stops at the first refusal and says why.
        copies = []
        for i in range(5):
            copies.append(tmp_path / f"hand-{i}.jpg")
            shutil.copy(as_jpeg, copies[-1])
        upload.set_input_files([str(copy) for copy in copies])
        expect(visit.by_id("teach-message")).to_have_text(
            f"4 of 5 photos of A kept. hand-4.jpg was refused: bob already has {MAX_PHOTOS} photos, the limit of "
            f"this server (--collect-max-photos {MAX_PHOTOS}).")
        assert len(files_under(bob)) == 1 + MAX_PHOTOS
        assert all(not name.startswith(".") for p in files_under(bob) for name in Path(p).parts)
        assert visit.foreign_requests() == []
    finally:
        page.close()


def test_the_page_names_the_version_that_answered_and_says_when_it_switched(browser, teach_server):
    # The alias moves to a second version of the same model while the page is open; the server follows it (its
    # --poll-seconds is 1) and the page says so at the next answer.
    import mlflow
    from playwright.sync_api import expect

    if not teach_server.model.model_uri.startswith("models:/"):
        pytest.skip(f"the model served without {REAL_HANDS} is not a registered version, so answers name none")
    page = browser.new_page()
    try:
        visit = Visit(page, teach_server.url)
        page.goto(teach_server.url + "/")
        page.set_input_files("input[type=file]", str(teach_server.model.photo))
        expect(visit.by_id("letter")).to_have_text(teach_server.model.letter, timeout=LETTER_TIMEOUT_MS)
        with using_store(teach_server.model.env["MLFLOW_TRACKING_URI"]):
            client = mlflow.MlflowClient()
            serving_now = client.get_model_version_by_alias(MODEL_NAME, "champion")
            expect(visit.by_id("version")).to_have_text(f"Answered by model version {serving_now.version}")
            expect(visit.by_id("version-switched")).to_be_hidden()

            second = mlflow.register_model(serving_now.source, MODEL_NAME)
            client.set_registered_model_alias(MODEL_NAME, "champion", second.version)
        deadline = time.monotonic() + 120
        while visit.by_id("version").text_content() != f"Answered by model version {second.version}":
            assert time.monotonic() < deadline, "the server did not switch to the new version in 120 s"
            page.wait_for_timeout(1000)
            page.set_input_files("input[type=file]", str(teach_server.model.photo))
        expect(visit.by_id("version-switched")).to_have_text(
            f"Switched to version {second.version} (was version {serving_now.version}).")
        expect(visit.by_id("letter")).to_have_text(teach_server.model.letter, timeout=LETTER_TIMEOUT_MS)
    finally:
        page.close()
