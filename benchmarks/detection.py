"""Where does the hand search miss hands, and do the retries find hands close to the camera?

For each search (the photo as it is, then a list of retry views, asl_mlops.hands.detector), on a photo folder
with signers (../shared/data/hands): the share of photos with no hand found, per signer, and the time. Then
close-ups: --closeups photos where a hand was found are cropped to the hand's box (the hand fills the crop, as a
hand held close to a webcam fills the frame) and searched again with each search; the share found is reported.

    python benchmarks/detection.py --data ../shared/data/hands --out benchmarks/results/detection.json
    python benchmarks/detection.py --tiny --out /tmp/detection.json    # a few real photos (a smoke test)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

#: The searches compared: name -> retry views after the photo as it is ((padding fraction, brightened?), ...).
SEARCHES: dict[str, tuple[tuple[float, bool], ...]] = {
    "none": (),
    "before": ((0.25, False), (0.25, True), (0.5, False)),  # the retries before the close-up views
}


def closeup(rgb: np.ndarray, box: tuple[float, float, float, float], fill: float) -> np.ndarray:
    """The photo cropped around the hand's box so that the box fills `fill` of the crop's longer side."""
    height, width = rgb.shape[:2]
    x, y, w, h = box
    side = max(w * width, h * height) / fill
    cx, cy = (x + w / 2) * width, (y + h / 2) * height
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hands"), help="Photo folder with signers.")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="Hand detection cache.")
    parser.add_argument("--closeups", type=int, default=300, help="Found hands cropped to close-ups (0: none).")
    parser.add_argument("--fill", type=float, default=1.0, help="Share of the close-up's side the hand's box fills.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/detection.json"), help="JSON to write.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: one real photo per letter of each of benchmarks/tiny.py's signers, 5 "
                             "close-ups, a temporary cache.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        work = tiny.folder("detection")
        args.data, args.cache_dir, args.closeups = tiny.hands(work / "hands", per_letter=1), work / "cache", 5

    from provenance import stamped, write_results
    from tqdm import tqdm

    from asl_mlops.data.photos import load_photo_folder, read_rgb
    from asl_mlops.hands.detector import RETRIES, HandDetector, detect_photos
    from asl_mlops.hands.landmarker import hand_model_path

    searches = {**SEARCHES, "shipped": tuple(RETRIES)}
    photos = load_photo_folder(args.data)
    signers = np.array(photos.signers)
    names = sorted(set(signers.tolist()))
    model = hand_model_path()
    results: dict[str, object] = {"data": str(args.data), "photos": len(photos), "searches": {}}
    found_by_search = {}
    for name, retries in searches.items():
        start = time.perf_counter()
        found = detect_photos(photos, model, args.cache_dir, retries=retries,
                              progress=lambda items: tqdm(items, desc=f"finding hands ({name})", unit="photo"))
        mask = found.found
        found_by_search[name] = found
        results["searches"][name] = {
            "retries": [list(view) for view in retries], "no_hand": float(1 - mask.mean()),
            "no_hand_photos": int((~mask).sum()), "seconds": time.perf_counter() - start, "cache_hits": found.hits,
            "no_hand_by_signer": {s: float(1 - mask[signers == s].mean()) for s in names}}
        print(f"{name:8s} no hand in {int((~mask).sum())} of {len(mask)} photos ({1 - mask.mean():.3%})", flush=True)

    if args.closeups:
        rng = np.random.default_rng(0)
        base = found_by_search["none"]
        candidates = np.flatnonzero(base.found)
        picked = rng.choice(candidates, size=min(args.closeups, len(candidates)), replace=False)
        crops = [closeup(read_rgb(photos.paths[i]), base.hands[i].box, args.fill) for i in picked]
        close: dict[str, object] = {"photos": len(crops), "fill": args.fill}
        for name, retries in searches.items():
            with HandDetector(model, retries=retries) as detector:
                hits = np.array([detector.detect(crop) is not None for crop in tqdm(crops, desc=f"close-ups ({name})")])
            close[name] = {"found": float(hits.mean()),
                           "found_by_signer": {s: float(hits[signers[picked] == s].mean())
                                               for s in names if np.any(signers[picked] == s)}}
            print(f"{name:8s} close-ups found {hits.mean():.3%} of {len(crops)}", flush=True)
        results["closeups"] = close

    write_results(args.out, stamped(results))
    print(f"\n{'signer':18s} " + " ".join(f"{n:>9s}" for n in searches))
    for s in names:
        print(f"{s:18s} " + " ".join(f"{results['searches'][n]['no_hand_by_signer'][s]:9.3f}" for n in searches))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
