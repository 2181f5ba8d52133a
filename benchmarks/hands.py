"""How well does the photo recognizer read the hands of people it never trained on?

Leave-one-signer-out on a photo folder with a manifest.csv naming each photo's signer (../shared/data/hands:
3 signers): for each signer, train the photo recognizer's recipe on the others' photos and score it on that
signer's, counting a photo with no hand found as an error (as the served model answers it: no letter).
Repeated over --seeds; prints and writes per-signer accuracy, the no-hand rate, mean +- sd and the worst.

Variants (--variant, repeatable), each the shipped recipe with one thing changed:
- keypoints: the shipped recipe (hand search with retries, 5 turned and jittered copies of each training hand,
  the network);
- no-jitter: the copies turned but their keypoints not moved;
- no-augment: no copies;
- no-retries: the hand searched for in the photo as it is only (asl_mlops.hands.RETRIES off);
- logreg: logistic regression on the same features (the issue's floor), no augmentation.

    python benchmarks/hands.py --data ../shared/data/hands --out benchmarks/results/hands-loso.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from provenance import provenance

VARIANTS = ("keypoints", "no-jitter", "no-augment", "no-retries", "logreg")


def signers_of(photos, manifest: Path) -> np.ndarray:
    """Each photo's signer, from the manifest's path and signer columns."""
    by_path = {row["path"]: row["signer"] for row in csv.DictReader(open(manifest))}
    root = Path(photos.root)
    try:
        return np.array([by_path[p.relative_to(root).as_posix()] for p in photos.paths])
    except KeyError as err:
        sys.exit(f"{manifest}: no row for photo {err.args[0]}")


def run_fold(variant: str, hands, labels, train_mask, test_mask, seed: int, epochs: int) -> float:
    """Accuracy on the test photos (no hand found = wrong) of the variant trained on the training photos."""
    import keras
    import mlflow

    from asl_mlops.config import TrainConfig
    from asl_mlops.hands import features as photo_data
    from asl_mlops.labels import labels_to_indices
    from asl_mlops.training.evaluate import (
        evaluate_probabilities,
        predict_probabilities,
    )
    from asl_mlops.training.fit import fit
    from asl_mlops.training.inputs import PreparedData
    from asl_mlops.training.models import build_model

    train_hands = tuple(h for h, m in zip(hands, train_mask) if m)
    test_hands = tuple(h for h, m in zip(hands, test_mask) if m)
    y_test = labels_to_indices(labels[test_mask])
    x_test, found = photo_data.features_or_zeros(test_hands)
    if variant == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x_train, found_train = photo_data.features_or_zeros(train_hands)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        model.fit(x_train[found_train], labels_to_indices(labels[train_mask][found_train]))
        probabilities = np.zeros((int(found.sum()), 24))
        probabilities[:, model.classes_] = model.predict_proba(x_test[found])
        return evaluate_probabilities(y_test, probabilities, found=found).accuracy
    recipe = {"no-augment": {"copies": 0}, "no-jitter": {"jitter": 0.0}}.get(variant, {})
    x_train, y_train = photo_data.augmented_training_features(train_hands, labels[train_mask], seed, **recipe)
    config = TrainConfig(architecture="keypoints", epochs=epochs, seed=seed)
    keras.utils.set_random_seed(seed)
    model = build_model(config)
    # Validation (per-epoch curves only) on a slice of the training hands: the held-out signer stays unseen.
    data = PreparedData(x_train, y_train, x_train[:256], y_train[:256], x_test, y_test, np.zeros((0, 1, 1)))
    with mlflow.start_run():
        fit(model, data, config)
    return evaluate_probabilities(y_test, predict_probabilities(model, x_test[found]), found=found).accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hands"),
                        help="Photo folder with a manifest.csv (path, signer columns).")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="Variants to run (default: all).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds.")
    parser.add_argument("--epochs", type=int, default=12, help="Training epochs (the default recipe's).")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="Hand detection cache.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hands-loso.json"), help="JSON to write.")
    args = parser.parse_args()
    args.out = args.out.resolve()
    variants = args.variant or list(VARIANTS)

    from asl_mlops.quiet_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    import mlflow
    from tqdm import tqdm

    from asl_mlops.data.photos import load_photo_folder
    from asl_mlops.hands.detector import detect_photos
    from asl_mlops.hands.landmarker import hand_model_path

    mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp(prefix='hands-bench-')}/mlflow.db")
    photos = load_photo_folder(args.data)
    signers = signers_of(photos, args.data / "manifest.csv")
    model = hand_model_path()
    settings: dict[str, dict] = {"default": {}}
    if "no-retries" in variants:
        settings["none"] = {"retries": ()}
    searches = {search: detect_photos(photos, model, args.cache_dir, **kwargs,
                                      progress=lambda items: tqdm(items, desc=f"finding hands ({search})",
                                                                  unit="photo"))
                for search, kwargs in settings.items()}

    results: dict[str, object] = {**provenance(), "data": str(args.data), "photos": len(photos),
                                  "seeds": args.seeds, "epochs": args.epochs, "variants": {}}
    names = sorted(set(signers.tolist()))
    detection = {}
    for search, found in searches.items():
        mask = found.found
        detection[search] = {"found": float(mask.mean()), "seconds": found.seconds, "cache_hits": found.hits,
                             "by_signer": {s: float(mask[signers == s].mean()) for s in names}}
    results["detection"] = detection
    for variant in variants:
        hands = searches["none" if variant == "no-retries" else "default"].hands
        accuracy: dict[str, list[float]] = {s: [] for s in names}
        start = time.perf_counter()
        for seed in (args.seeds if variant != "logreg" else args.seeds[:1]):
            for signer in names:
                acc = run_fold(variant, hands, photos.labels, signers != signer, signers == signer, seed, args.epochs)
                accuracy[signer].append(acc)
                print(f"{variant:10s} seed {seed} held-out {signer:13s} {acc:.3f}", flush=True)
        per_seed_mean = np.mean([accuracy[s] for s in names], axis=0)
        summary = {"by_signer": {s: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "runs": v}
                                 for s, v in accuracy.items()},
                   "mean": float(np.mean(per_seed_mean)), "sd_over_seeds": float(np.std(per_seed_mean)),
                   "worst_signer": min(names, key=lambda s: np.mean(accuracy[s])),
                   "worst": float(min(np.mean(v) for v in accuracy.values())),
                   "worst_run": float(min(min(v) for v in accuracy.values())), "seconds": time.perf_counter() - start}
        results["variants"][variant] = summary
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{'variant':12s} " + " ".join(f"{s:>14s}" for s in names) + "   mean +- sd    worst")
    for variant, summary in results["variants"].items():
        cells = " ".join(f"{summary['by_signer'][s]['mean']:14.3f}" for s in names)
        print(f"{variant:12s} {cells}   {summary['mean']:.3f} +- {summary['sd_over_seeds']:.3f}  {summary['worst']:.3f}")
    for search, info in detection.items():
        print(f"hands found ({search} search): {info['found']:.3f} " +
              ", ".join(f"{s} {v:.3f}" for s, v in info["by_signer"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
