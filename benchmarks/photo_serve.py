"""How long does `asl-mlops serve` take to answer one 640x480 JPEG photo with the photo recognizer?

Starts `asl-mlops serve` (one worker) on a photo recognizer, then one client sends --requests requests one after
another, each one JPEG of a real hand scaled to 640x480 (and, apart, one of a photo with no hand, which the
recognizer searches in every retry view before it answers "no hand found"). Prints and writes p50/p90/p99.

    python benchmarks/photo_serve.py --model-uri models:/asl-recognizer@champion --photo ../shared/data/hands/B/massey_0046.jpeg
    python benchmarks/photo_serve.py --tiny --out /tmp/photo-serve.json   # a 1-epoch model, a few photos (smoke test)
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from provenance import provenance, write_results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jpeg_640x480(photo: Path | None) -> bytes:
    """The photo scaled to 640x480 (a flat grey picture when None), as JPEG bytes."""
    import cv2

    image = cv2.imread(str(photo)) if photo else np.full((480, 640, 3), 180, dtype=np.uint8)
    return cv2.imencode(".jpg", cv2.resize(image, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def timings(url: str, jpeg: bytes, requests_count: int) -> dict[str, object]:
    import requests

    body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(jpeg).decode()]]}}
    session = requests.Session()
    answer = session.post(f"{url}/invocations", json=body, timeout=60)  # warm-up, and the answer to report
    answer.raise_for_status()
    seconds = []
    for _ in range(requests_count):
        start = time.perf_counter()
        session.post(f"{url}/invocations", json=body, timeout=60).raise_for_status()
        seconds.append(time.perf_counter() - start)
    ms = 1e3 * np.array(seconds)
    return {"answer": answer.json()["predictions"][0], "requests": requests_count, "jpeg_bytes": len(jpeg),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def tiny_model(work: Path) -> tuple[str, Path]:
    """A photo recognizer trained for one epoch on a few real photos in a store in `work` (made MLFLOW_TRACKING_URI,
    so the server finds it too), and one of those photos."""
    import mlflow
    import tiny

    from asl_mlops.config import TrainConfig
    from asl_mlops.train import train_and_evaluate

    hands = tiny.hands(work / "hands")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("photo-serve", artifact_location=f"{work}/artifacts"))
    result = train_and_evaluate(TrainConfig(train_data=str(hands), test_data=str(hands), cache_dir=str(work / "cache"),
                                            architecture="keypoints", epochs=1))
    return result.model_uri, next(hands.rglob("*.jp*g"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", help="The photo recognizer to serve.")
    parser.add_argument("--photo", type=Path, help="A real hand photo (scaled to 640x480).")
    parser.add_argument("--requests", type=int, default=200, help="Timed requests per photo.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/photo-serve.json"), help="JSON to write.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: a recognizer trained here for one epoch on a few real photos, 8 requests.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        args.out = args.out.resolve()
        args.model_uri, args.photo = tiny_model(tiny.folder("photo-serve"))
        args.requests = 8
    elif args.model_uri is None or args.photo is None:
        parser.error("--model-uri and --photo are required (or --tiny)")
    if not args.photo.is_file():
        sys.exit(f"{args.photo}: no such photo")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "asl_mlops", "serve", "--model-uri", args.model_uri,
                               "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("the server did not start")
            time.sleep(0.5)
        results = {**provenance(), "model_uri": args.model_uri, "photo": str(args.photo), "workers": 1,
                   "hand": timings(url, jpeg_640x480(args.photo), args.requests),
                   "no_hand": timings(url, jpeg_640x480(None), args.requests // 4)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    for case in ("hand", "no_hand"):
        r = results[case]
        print(f"{case:8s} answer {r['answer']['letter'] or r['answer']['reason']!r}: p50 {r['p50_ms']:.1f} ms, "
              f"p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms over {r['requests']} requests")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
