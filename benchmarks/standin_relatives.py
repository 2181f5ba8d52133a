"""How close is each stand-in photo to the nearest image a model trained on? Levers runs side by side.

    python benchmarks/standin_relatives.py --train-data ../shared/data/sign_mnist_train.csv.gz \\
        benchmarks/results/levers-c32-24epochs-avx512.json benchmarks/results/levers-c32-24epochs-val05.json
    python benchmarks/standin_relatives.py --tiny --out /tmp/relatives.json   # synthetic rows (a smoke test)

For each benchmarks/levers.py JSON given, the carve it used (its `data`: `val_fraction`, `all_photos`; 0.2 and
no for runs that predate them) is made again, and each stand-in image's cosine similarity to its nearest
training image (T) is taken (benchmarks/split.py's `nearest_similarity`: the features the families are found
with; the withheld test set against the whole training CSV: median 0.89, 1% quantile 0.62). Reported per run:
that profile, the stand-in photos whose nearest relative in T is >= 0.95 (close relatives: the family
threshold is 0.98), and, for every photo any run misread (more than half of its variants wrong, with TTA),
its nearest relative in T under each run's carve. T's photos: the pool's families (asl_mlops.data.split) with a
variant in T. No model is trained or loaded.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def photos_in(rows, pool_family: dict) -> int:
    """How many of the pool's photos (families) have at least one variant among `rows`."""
    return len({pool_family[image.tobytes()] for image in rows.images})


def tiny_runs(folder: Path) -> tuple[str, list[Path]]:
    """A synthetic training CSV and two results shaped as levers.py writes them, for --tiny."""
    import tiny

    train, _ = tiny.sign_mnist(folder)
    runs = []
    for val_fraction in (0.2, 0.05):
        run = {"data": {"val_fraction": val_fraction, "all_photos": False},
               "tta_errors_by_photo": {"0": [{"photo": 0, "variants": 4, "wrong": 3}]},
               "levers": {"tta": {"mean": 3.0, "photos_mean": 1.0}}}
        runs.append(folder / f"levers-val{val_fraction}.json")
        runs[-1].write_text(json.dumps(run))
    return str(train), runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="benchmarks/levers.py result JSONs.")
    parser.add_argument("--train-data", default=str(ROOT / "data" / "sign_mnist_train.csv"),
                        help="Sign MNIST training CSV the runs' carve came from.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "standin-relatives.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows, and two made-up levers.py results (G at 0.2 and 0.05, each "
                             "misreading the first stand-in photo) instead of RUNS.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        args.train_data, args.runs = tiny_runs(tiny.folder("relatives"))
    elif not args.runs:
        parser.error("give benchmarks/levers.py result JSONs (or --tiny)")

    import numpy as np

    # a sibling script: `python benchmarks/<script>.py` puts benchmarks/ first on sys.path
    import selection
    import split as split_benchmark

    from asl_mlops.data.sign_mnist import load_csv
    from asl_mlops.data.split import find_families, grouped_split
    pool = grouped_split(load_csv(args.train_data), 0.2, 2026, what="standin_fraction").train  # carve's pool
    pool_family = dict(zip((image.tobytes() for image in pool.images), find_families(pool)))
    nearest_by_photo, results, misread = {}, {}, {}
    for path in args.runs:
        run = json.loads(path.read_text())
        val_fraction, all_photos = run["data"].get("val_fraction", 0.2), run["data"].get("all_photos", False)
        _, split, _, standin, _ = selection.carve(args.train_data, 0.2, 2026, val_fraction, all_photos)
        nearest = split_benchmark.nearest_similarity(standin.images, split.train.images)
        family = find_families(standin)
        per_photo = np.array([nearest[family == f].max() for f in range(family.max() + 1)])
        nearest_by_photo[path.name] = per_photo
        seeds_misreading = Counter(row["photo"] for rows in run["tta_errors_by_photo"].values() for row in rows
                                   if row["wrong"] > row["variants"] / 2)
        misread[path.name] = sorted(seeds_misreading)
        results[path.name] = {
            "val_fraction": val_fraction, "all_photos": all_photos, "train_rows": len(split.train),
            "train_photos": photos_in(split.train, pool_family),
            "nearest_median": float(np.median(nearest)), "nearest_q01": float(np.quantile(nearest, 0.01)),
            "nearest_q10": float(np.quantile(nearest, 0.10)),
            "photos_with_relative_095": int(np.sum(per_photo >= 0.95)), "photos": int(len(per_photo)),
            "tta_errors_mean": run["levers"]["tta"]["mean"], "photos_misread_mean": run["levers"]["tta"]["photos_mean"],
            "misread": {str(p): seeds_misreading[p] for p in misread[path.name]}}
    photos = sorted({p for ps in misread.values() for p in ps})
    out = {"runs": results, "misread_photos_nearest": {
        str(p): {name: round(float(nearest_by_photo[name][p]), 3) for name in nearest_by_photo} for p in photos}}
    write_results(args.out, stamped(out))

    print(f"{'run':<44}{'val_fr':>7}{'all':>5}{'T rows':>8}{'photos':>8}{'median':>8}{'q10':>7}{'>=0.95':>8}{'errors':>8}{'photos':>8}")
    for name, r in results.items():
        print(f"{name:<44}{r['val_fraction']:>7}{'yes' if r['all_photos'] else 'no':>5}"
              f"{r['train_rows']:>8}{r['train_photos']:>8}{r['nearest_median']:>8.3f}{r['nearest_q10']:>7.3f}{r['photos_with_relative_095']:>8}"
              f"{r['tta_errors_mean']:>8.1f}{r['photos_misread_mean']:>8.1f}")
    print("\nmisread photos (seeds misreading it per run), nearest relative in T per run:")
    for p in photos:
        print(f"photo {p}: " + ", ".join(f"{name}: {out['misread_photos_nearest'][str(p)][name]:.3f}"
                                         f" ({results[name]['misread'].get(str(p), 0)})" for name in results))


if __name__ == "__main__":
    main()
