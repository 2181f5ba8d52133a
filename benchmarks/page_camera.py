"""How many answers a second does the web page get from a camera, and how steady is the letter it shows?

Starts `asl-mlops serve` on a photo recognizer (or uses the one at --url) and opens its page in Debian's Chromium,
headless, driven by Playwright, with a fake camera per --photo: a one-second .y4m loop of the real hand photo, 30
frames a second, as a 640x480 webcam would show it, each frame moved by up to --jitter pixels and given sensor noise
(a hand held still before a real camera). After the first letter shows (the first requests trace the model's
graph), it records for --seconds every answer to /invocations (when it came, how long it took, what it said) and
every change of the shown letter. The hand does not change, so the shown letter should not either; the raw answers'
changes say how often the model alone would have made it flicker.

Then (unless --frame-photos 0) it sends camera frames of other hand photos straight to the server at each of
--frame-sides (the page's MAX_FRAME_SIDE): how often the answer agrees with the 640-pixel frame's, and the server's
time for each size.

    python benchmarks/page_camera.py --model-uri models:/asl-photo-recognizer@champion --photo ../shared/data/hands/L/massey_0032.jpeg
    python benchmarks/page_camera.py --url http://127.0.0.1:5001 --photo PHOTO --tiny --out /tmp/page.json  # smoke test
"""

from __future__ import annotations

import argparse
import base64
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from photo_serve import free_port
from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
HANDS = ROOT.parent / "shared" / "data" / "hands"
CHROMIUM = Path("/usr/bin/chromium")
# As tests/serving/test_page.py runs it: Debian's Chromium as root, in a container without a GPU or network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
CAMERA_SIZE = (640, 480)  # what the page asks the camera for
FIRST_LETTER_TIMEOUT_MS = 60_000

# Recorded in the page before its own script runs: every /invocations answer (when, how long, the row) and every
# change of the shown letter. The page itself is not changed for the benchmark.
RECORDER = """
(() => {
  const record = window.__pageCamera = {answers: [], changes: [], inFlight: 0, mostInFlight: 0, bodyBytes: []};
  const fetchOriginal = window.fetch.bind(window);
  window.fetch = async (url, options) => {
    if (!String(url).endsWith("/invocations")) return fetchOriginal(url, options);
    const sent = performance.now();
    record.inFlight++;
    record.mostInFlight = Math.max(record.mostInFlight, record.inFlight);
    record.bodyBytes.push(options && typeof options.body === "string" ? options.body.length : 0);
    try {
      const response = await fetchOriginal(url, options);
      response.clone().json().then((answer) => record.answers.push({
        sent, at: performance.now(), row: answer && answer.predictions ? answer.predictions[0] : null,
      })).catch(() => record.answers.push({sent, at: performance.now(), row: null}));
      return response;
    } finally {
      record.inFlight--;
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const letter = document.querySelector("[data-testid=letter]");
    let shown = letter.textContent;
    new MutationObserver(() => {
      if (letter.textContent !== shown) {
        shown = letter.textContent;
        record.changes.push({at: performance.now(), text: shown});
      }
    }).observe(letter, {childList: true, characterData: true, subtree: true});
  });
})();
"""


# The page's own work per frame at a given longer side: draw the camera's video into a canvas, encode it as JPEG at
# the page's quality (captureFrame in asl_mlops/serving/page/index.html). Milliseconds a frame, and its base64 size.
ENCODE = """async (side) => {
  const video = document.getElementById("video");
  const canvas = document.createElement("canvas");
  const scale = Math.min(1, side / Math.max(video.videoWidth, video.videoHeight));
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  let size = 0;
  const start = performance.now();
  for (let i = 0; i < 30; i++) {
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    size += canvas.toDataURL("image/jpeg", 0.85).length;
  }
  return {ms: (performance.now() - start) / 30, base64_bytes: size / 30};
}"""


def camera_frame(photo: np.ndarray, width: int = CAMERA_SIZE[0], height: int = CAMERA_SIZE[1]) -> np.ndarray:
    """The photo as a camera of width x height shows it: scaled to fit, centred, edges repeated (as
    tests/serving/test_page.py makes it)."""
    import cv2

    scale = min(width / photo.shape[1], height / photo.shape[0])
    inner = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    top, left = (height - inner.shape[0]) // 2, (width - inner.shape[1]) // 2
    return cv2.copyMakeBorder(inner, top, height - inner.shape[0] - top, left, width - inner.shape[1] - left,
                              cv2.BORDER_REPLICATE)


def held_still(frame: np.ndarray, jitter: float, frames: int, seed: int = 0) -> list[np.ndarray]:
    """`frames` copies of a BGR frame, each moved by up to `jitter` pixels each way, with Gaussian noise of sd 2."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = frame.shape[:2]
    copies = []
    for dx, dy in rng.uniform(-jitter, jitter, size=(frames, 2)):
        moved = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (width, height),
                               borderMode=cv2.BORDER_REPLICATE)
        copies.append(np.clip(moved + rng.normal(0, 2, moved.shape), 0, 255).astype(np.uint8))
    return copies


def write_y4m(frames: list[np.ndarray], path: Path, fps: int = 30) -> Path:
    """A .y4m video of BGR frames at `fps`, for Chromium's --use-file-for-fake-video-capture (which loops it)."""
    import cv2

    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def answer_key(row: dict | None) -> str:
    """The answer as the page votes on it: the letter, or the reason there is none ("not sure", "no hand found")."""
    if row is None:
        return "error"
    return str(row.get("reason") or "") or str(row.get("letter", ""))


def start_server(model_uri: str, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`asl-mlops serve` on loopback, once it answers /ping: (process, base URL)."""
    import requests

    port = free_port()
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri", model_uri,
                                   "--port", str(port), "--workers", str(workers)], stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return server, url
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            sys.exit(f"the server did not start: see {log}")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def watch_page(url: str, video: Path, seconds: float, sides: list[int]) -> dict[str, object]:
    """Open the page with the fake camera on; after the first letter shows, record `seconds` of answers. Then, with
    the camera still on, time the page's drawing and encoding of a frame at each of `sides`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM),
                                         args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"])
        try:
            page = browser.new_page()
            page.add_init_script(RECORDER)
            page.goto(url + "/?camera=on")
            page.wait_for_function("() => window.__pageCamera.changes.length > 0", timeout=FIRST_LETTER_TIMEOUT_MS)
            start = page.evaluate("() => performance.now()")
            page.wait_for_timeout(seconds * 1000)
            end = page.evaluate("() => performance.now()")
            record = page.evaluate("() => window.__pageCamera")
            rate_text = page.get_by_test_id("rate").text_content()
            page.get_by_role("button", name="Turn camera off").click()  # the server is then left alone
            page.evaluate("""async () => {
                const video = document.getElementById("video");
                video.srcObject = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}});
                await video.play();
            }""")
            encode = {str(side): page.evaluate(ENCODE, side) for side in sides}
            version = browser.version
        finally:
            browser.close()
    answers = [a for a in record["answers"] if start <= a["at"] < end]
    keys = [answer_key(a["row"]) for a in answers]
    changes = [c for c in record["changes"] if start <= c["at"] < end]
    round_trip_ms = np.array([a["at"] - a["sent"] for a in answers]) if answers else np.zeros(1)
    return {"chromium": version, "seconds": (end - start) / 1000, "answers": len(answers),
            "answers_per_second": len(answers) / ((end - start) / 1000),
            "page_rate_text": rate_text, "most_in_flight": record["mostInFlight"],
            "request_bytes_mean": float(np.mean(record["bodyBytes"])) if record["bodyBytes"] else 0.0,
            "round_trip_ms_p50": float(np.percentile(round_trip_ms, 50)),
            "round_trip_ms_p90": float(np.percentile(round_trip_ms, 90)),
            "answer_counts": {key: keys.count(key) for key in sorted(set(keys))},
            "raw_answer_changes": sum(a != b for a, b in zip(keys, keys[1:])),
            "shown_at_start": [c["text"] for c in record["changes"] if c["at"] < start][-1],
            "shown_changes": len(changes), "shown_sequence": [c["text"] for c in changes], "encode_by_side": encode}


def frame_photos(data: Path, per_letter: int) -> list[tuple[Path, str]]:
    """`per_letter` photos of each letter, spread evenly over the manifest's rows of it (and so over its signers)."""
    rows = sorted(csv.DictReader(open(data / "manifest.csv")), key=lambda row: (row["signer"], row["path"]))
    chosen = []
    for letter in sorted({row["letter"] for row in rows}):
        mine = [row for row in rows if row["letter"] == letter]
        picks = np.linspace(0, len(mine) - 1, min(per_letter, len(mine))).round().astype(int)
        chosen += [(data / mine[i]["path"], letter) for i in picks]
    return chosen


def frame_sides(url: str, photos: list[tuple[Path, str]], sides: list[int]) -> dict[str, object]:
    """Each photo as a camera frame shrunk to each longer side, JPEG at the page's quality, straight to the server:
    agreement with the largest side's answer, correct letters, and the server's time per request."""
    import cv2
    import requests

    session = requests.Session()
    answers: dict[int, list[str]] = {side: [] for side in sides}
    ms: dict[int, list[float]] = {side: [] for side in sides}
    for path, _ in photos:
        frame = camera_frame(cv2.imread(str(path)))
        frame = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420)  # as the camera
        for side in sides:
            scale = min(1.0, side / max(frame.shape[:2]))
            small = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
            jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
            body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(jpeg).decode()]]}}
            start = time.perf_counter()
            response = session.post(f"{url}/invocations", json=body, timeout=60)
            ms[side].append(1e3 * (time.perf_counter() - start))
            response.raise_for_status()
            answers[side].append(answer_key(response.json()["predictions"][0]))
    truth = [letter for _, letter in photos]
    largest = max(sides)
    return {"photos": len(photos), "by_side": {str(side): {
        "agrees_with_largest": float(np.mean([a == b for a, b in zip(answers[side], answers[largest])])),
        "correct": float(np.mean([a == t for a, t in zip(answers[side], truth)])),
        "hands_found": float(np.mean([a != "no hand found" for a in answers[side]])),
        "not_sure": float(np.mean([a == "not sure" for a in answers[side]])),
        "server_ms_p50": float(np.percentile(ms[side], 50)), "server_ms_mean": float(np.mean(ms[side]))}
        for side in sides}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", help="The photo recognizer to serve (with MLFLOW_TRACKING_URI's store).")
    parser.add_argument("--url", help="A running `asl-mlops serve` to use instead of starting one.")
    parser.add_argument("--workers", type=int, default=2,
                        help="Workers of the server started here (`asl-mlops serve`'s default on 2 cores).")
    parser.add_argument("--photo", type=Path, nargs="+", required=True,
                        help="Real hand photos, one after the other, each shown by the fake camera.")
    parser.add_argument("--letter", nargs="+", help="Their letters (default: the name of each photo's folder).")
    parser.add_argument("--seconds", type=float, default=20.0, help="How long to record the page's answers a photo.")
    parser.add_argument("--jitter", type=float, default=3.0, help="Pixels each camera frame moves, at most, each way.")
    parser.add_argument("--frame-sides", type=int, nargs="+", default=[640, 480, 320],
                        help="Longer sides of the frames the page encodes (timed) and sends straight to the server.")
    parser.add_argument("--frame-photos", type=int, default=4,
                        help="Photos of each letter (spread over the signers of --data) for --frame-sides; 0 skips "
                             "that part.")
    parser.add_argument("--data", type=Path, default=HANDS, help="The hand photo folder (with manifest.csv).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "page-camera.json",
                        help="JSON to write.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: 2 seconds a photo, no --frame-photos (as tests/serving/test_page.py runs "
                             "it).")
    args = parser.parse_args()
    if args.tiny:
        args.seconds, args.frame_photos = 2.0, 0
    if (args.url is None) == (args.model_uri is None):
        sys.exit("give --model-uri (a model to serve here) or --url (a running server)")
    for photo in args.photo:
        if not photo.is_file():
            sys.exit(f"{photo}: no such photo")
    letters = args.letter or [photo.parent.name.upper() for photo in args.photo]
    if len(letters) != len(args.photo):
        sys.exit("give one --letter per --photo")
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium)")
    import tempfile

    import cv2

    with tempfile.TemporaryDirectory(prefix="page-camera-") as tmp:
        server, url = start_server(args.model_uri, args.workers, Path(tmp) / "server.log") if args.url is None \
            else (None, args.url.rstrip("/"))
        try:
            watched = []
            for photo, letter in zip(args.photo, letters):
                video = write_y4m(held_still(camera_frame(cv2.imread(str(photo))), args.jitter, 30),
                                  Path(tmp) / f"{photo.stem}.y4m")
                load_before = os.getloadavg()[0]
                page = watch_page(url, video, args.seconds, args.frame_sides)
                watched.append({"photo": str(photo), "letter": letter, **page, "load_average_1min_before": load_before,
                                "load_average_1min_after": os.getloadavg()[0]})
            frames = frame_sides(url, frame_photos(args.data, args.frame_photos), args.frame_sides) \
                if args.frame_photos > 0 else None
        finally:
            if server is not None:
                stop_server(server)
    results = stamped({
        "machine": {"load_average_1min_after": os.getloadavg()[0]},
        "model_uri": args.model_uri, "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI"), "url": args.url, "workers": args.workers if args.url is None else None,
        "jitter_px": args.jitter, "seconds": args.seconds, "camera": watched, "frame_sides": frames})
    for page in watched:
        print(f"{Path(page['photo']).name} ({page['letter']}), {page['seconds']:.1f} s: "
              f"{page['answers_per_second']:.1f} answers a second (page says {page['page_rate_text']!r}), "
              f"round trip p50 {page['round_trip_ms_p50']:.0f} ms, at most {page['most_in_flight']} in flight, "
              f"1-min load {page['load_average_1min_before']:.1f}")
        print(f"    answers {page['answer_counts']}; raw answer changes {page['raw_answer_changes']}, "
              f"shown {page['shown_at_start']!r} changed {page['shown_changes']} times {page['shown_sequence']}")
        print("    the page draws and encodes a frame in " + ", ".join(
            f"{row['ms']:.1f} ms at {side} px" for side, row in page["encode_by_side"].items()))
    if frames:
        for side, row in frames["by_side"].items():
            print(f"frames of {side:>4} px: agree with {max(args.frame_sides)} px {row['agrees_with_largest']:.1%}, "
                  f"correct {row['correct']:.1%}, hands found {row['hands_found']:.1%}, "
                  f"server p50 {row['server_ms_p50']:.1f} ms ({frames['photos']} photos)")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
