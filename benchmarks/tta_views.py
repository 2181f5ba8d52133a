"""Would other test-time augmentation views do better than the shipped nine? Judged on the stand-in test set.

    python benchmarks/tta_views.py --train-data ../shared/data/sign_mnist_train.csv.gz \
        --models-dir /tmp/levers-work
    python benchmarks/tta_views.py --tiny --out /tmp/tta-views.json    # synthetic rows, 2 untrained models (smoke test)

Scores the models benchmarks/levers.py trained and kept (`--models-dir`, one `.keras` per training seed,
on the same carve: stand-in seed 2026) under each view set in VIEW_SETS, through asl_mlops.recognizers.tta's own
path (asl_mlops.training.evaluate.predict_probabilities with another view list). Per set: stand-in errors mean
+- sd and worst over the models, photos misread (stand-in families with more than half of their variants
wrong: levers.photos_misread), and the mean errors of ensembles of three models. No training.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IDENTITY = [(0, 0, 0, 1.0)]
SHIFT1 = [(1, 0, 0, 1.0), (-1, 0, 0, 1.0), (0, 1, 0, 1.0), (0, -1, 0, 1.0)]
DIAGONAL1 = [(1, 1, 0, 1.0), (1, -1, 0, 1.0), (-1, 1, 0, 1.0), (-1, -1, 0, 1.0)]
SHIFT2 = [(2, 0, 0, 1.0), (-2, 0, 0, 1.0), (0, 2, 0, 1.0), (0, -2, 0, 1.0)]


def turns_and_zooms(degrees: float, percent: float) -> list[tuple[float, float, float, float]]:
    return [(0, 0, degrees, 1.0), (0, 0, -degrees, 1.0), (0, 0, 0, 1 + percent / 100), (0, 0, 0, 1 - percent / 100)]


#: View sets in asl_mlops.recognizers.tta.VIEWS' format (shift down px, shift right px, degrees, zoom); the first is shipped.
VIEW_SETS: dict[str, list[tuple[float, float, float, float]]] = {
    "shipped: shifts 1px, +-6 deg, +-6% (9)": IDENTITY + SHIFT1 + turns_and_zooms(6, 6),
    "+ diagonal 1px shifts (13)": IDENTITY + SHIFT1 + DIAGONAL1 + turns_and_zooms(6, 6),
    "+ 2px shifts (13)": IDENTITY + SHIFT1 + SHIFT2 + turns_and_zooms(6, 6),
    "+ +-10 deg, +-10% (13)": IDENTITY + SHIFT1 + turns_and_zooms(6, 6) + turns_and_zooms(10, 10),
    "+ +-3 deg, +-3% (13)": IDENTITY + SHIFT1 + turns_and_zooms(3, 3) + turns_and_zooms(6, 6),
    "all of the above (21)": IDENTITY + SHIFT1 + DIAGONAL1 + SHIFT2 + turns_and_zooms(6, 6) + turns_and_zooms(10, 10),
    "shifts combined with a turn or zoom (9)": IDENTITY + turns_and_zooms(6, 6) + [
        (1, 0, 6, 1.0), (1, 0, 0, 1.06), (-1, 0, 6, 1.0), (-1, 0, 0, 1.06)],
}


def tiny_models(folder: Path) -> tuple[str, Path]:
    """A synthetic training CSV and two untrained narrow networks saved as levers.py keeps its models, for --tiny."""
    import keras
    import tiny

    from asl_mlops.config import TrainConfig
    from asl_mlops.training.models import build_model

    train, _ = tiny.sign_mnist(folder)
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        build_model(TrainConfig(**tiny.TRAIN)).save(folder / f"default-seed{seed}.keras")
    return str(train), folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(ROOT / "data" / "sign_mnist_train.csv"),
                        help="Sign MNIST training CSV the models' carve came from.")
    parser.add_argument("--models-dir", type=Path,
                        help="benchmarks/levers.py's --models-dir: the trained models (*.keras) to score.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tta-views.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows and two untrained narrow networks instead of --models-dir.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        args.train_data, args.models_dir = tiny_models(tiny.folder("tta-views"))
    elif args.models_dir is None:
        parser.error("--models-dir is required (or --tiny)")

    import keras

    # a sibling script: `python benchmarks/<script>.py` puts benchmarks/ first on sys.path
    import levers
    import numpy as np
    import selection

    from asl_mlops.data.split import find_families
    from asl_mlops.labels import labels_to_indices
    from asl_mlops.training.evaluate import predict_probabilities
    from asl_mlops.recognizers.preprocess import to_model_input
    _, _, _, standin, info = selection.carve(args.train_data, 0.2, 2026)
    x, y, family = to_model_input(standin.images), labels_to_indices(standin.labels), find_families(standin)
    paths = sorted(args.models_dir.glob("*.keras"))
    if not paths:
        raise SystemExit(f"--models-dir {args.models_dir}: no .keras models (train them with benchmarks/levers.py)")

    probs: dict[str, list[np.ndarray]] = {name: [] for name in VIEW_SETS}
    for path in paths:
        keras.backend.clear_session()
        model = keras.models.load_model(path)
        for name, views in VIEW_SETS.items():
            probs[name].append(predict_probabilities(model, x, tta=True, views=views))
        print(f"{path.name}: " + ", ".join(f"{int((p[-1].argmax(1) != y).sum())}" for p in probs.values()), flush=True)

    results = {"data": info, "models": [p.name for p in paths], "standin_rows": int(len(y)),
               "standin_photos": int(family.max() + 1), "view_sets": {}}
    print(f"\n{'view set':<42}{'errors mean +- sd':>19}{'worst':>7}{'photos':>8}{'worst':>7}{'ens-3':>7}"
          f"  errors of {len(y)}")
    for name, ps in probs.items():
        triples = [int((np.mean([ps[i] for i in c], axis=0).argmax(1) != y).sum())
                   for c in itertools.combinations(range(len(ps)), 3)]
        row = {"views": VIEW_SETS[name], **levers.standin_summary(ps, y, family),
               "ensemble3_mean": statistics.fmean(triples) if triples else None}
        results["view_sets"][name] = row
        ens = f"{row['ensemble3_mean']:.1f}" if triples else "-"
        print(f"{name:<42}{row['mean']:>11.1f} +- {row['sd']:<5.1f}{row['worst']:>7}{row['photos_mean']:>8.1f}"
              f"{row['photos_worst']:>7}{ens:>7}  {row['errors']}")
    write_results(args.out, stamped(results))


if __name__ == "__main__":
    main()
