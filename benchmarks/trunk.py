"""Benchmark: the original ResNet50 configuration trained uncached vs on cached trunk features, side by side.

    python benchmarks/trunk.py --train-data ../shared/data/sign_mnist_train.csv.gz
    python benchmarks/trunk.py --tiny --out /tmp/trunk.json    # one epoch each on synthetic rows (a smoke test)

Data as in benchmarks/selection.py (its `carve`): training rows T, grouped validation G, and the
grouped stand-in test set. Configuration of the original design, with weights=none (ImageNet weights
cannot be downloaded here): lr 1e-5, batch 256, L2 0.001, random flips both ways and +-10%
brightness/contrast, no EMA. Both runs are real `train_and_evaluate` runs (MLflow, temporary store):

1. uncached (`trunk_cache=false`) for `--uncached-epochs` epochs: seconds per epoch (`epoch_seconds`);
2. cached (`trunk_cache=true`, `--views` views) for `--epochs` epochs, end to end: trunk extraction
   (`trunk_features_seconds`) + training, and its steady seconds per epoch.

Reports the per-epoch ratio and the whole cached run against the uncached estimate (`--epochs` x the
uncached epoch), and writes benchmarks/results/trunk.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ORIGINAL = {"architecture": "resnet50", "weights": "none", "learning_rate": 1e-5, "batch_size": 256, "l2": 1e-3,
            "flip_horizontal": True, "flip_vertical": True, "brightness": 0.1, "contrast": 0.1, "rotation": 0.0,
            "zoom": 0.0, "translation": 0.0, "ema": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(ROOT / "data" / "sign_mnist_train.csv"),
                        help="Sign MNIST training CSV to carve T, G and the stand-in from.")
    parser.add_argument("--uncached-epochs", type=int, default=2, help="Epochs of the uncached run.")
    parser.add_argument("--epochs", type=int, default=50, help="Epochs of the cached run (the original's 50).")
    parser.add_argument("--views", type=int, default=4, help="trunk_views of the cached run.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trunk.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows, one epoch each, one cached view.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        args.train_data = str(tiny.sign_mnist(tiny.folder("trunk"))[0])
        args.uncached_epochs, args.epochs, args.views = 1, 1, 1

    import keras
    import mlflow

    # a sibling script: `python benchmarks/<script>.py` puts benchmarks/ first on sys.path
    import selection
    from mlflow.tracking import MlflowClient

    from asl_mlops.config import TrainConfig
    from asl_mlops.train import train_and_evaluate
    from asl_mlops.training.inputs import split_data
    csv, split, _, standin, info = selection.carve(args.train_data, 0.2, 2026)

    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "data": info,
               "config": ORIGINAL, "views": args.views}
    with tempfile.TemporaryDirectory() as store:
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("trunk", artifact_location=f"{store}/artifacts"))
        client = MlflowClient()

        def run(name: str, **changes) -> dict:
            config = TrainConfig(train_data="(benchmark T)", test_data="(benchmark stand-in)",
                                 cache_dir=f"{store}/cache", seed=0, **ORIGINAL, **changes)
            keras.backend.clear_session()
            data = split_data(csv, split, standin)
            start = time.perf_counter()
            result = train_and_evaluate(config, data, run_name=name)
            wall = time.perf_counter() - start
            metrics = client.get_run(result.run_id).data.metrics
            epochs = [m.value for m in sorted(client.get_metric_history(result.run_id, "epoch_seconds"),
                                              key=lambda m: m.step)]
            out = {"epochs": len(epochs), "epoch_seconds": epochs,
                   # the first epoch includes tracing; the steady epoch is the median of the rest
                   "steady_epoch_seconds": statistics.median(epochs[1:] if len(epochs) > 1 else epochs),
                   "train_seconds": metrics["train_seconds"], "run_wall_seconds": wall,
                   "trunk_features_seconds": metrics.get("trunk_features_seconds", 0.0),
                   "val_accuracy": result.val_accuracy, "standin_errors": result.test.errors}
            print(f"{name}: {json.dumps(out)}", flush=True)
            return out

        results["uncached"] = run("uncached", epochs=args.uncached_epochs, trunk_cache=False)
        results["cached"] = run("cached", epochs=args.epochs, trunk_cache=True, trunk_views=args.views)

    uncached, cached = results["uncached"], results["cached"]
    results["per_epoch_ratio"] = uncached["steady_epoch_seconds"] / cached["steady_epoch_seconds"]
    estimate = args.epochs * uncached["steady_epoch_seconds"]
    results["uncached_estimate_seconds"] = estimate
    results["whole_run_ratio"] = estimate / cached["train_seconds"]  # train_seconds includes the extraction
    write_results(args.out, stamped(results))
    print(f"\nseconds per epoch: uncached {uncached['steady_epoch_seconds']:.1f}, cached "
          f"{cached['steady_epoch_seconds']:.2f}: {results['per_epoch_ratio']:.1f}x")
    print(f"{args.epochs}-epoch run: cached {cached['train_seconds']:.0f} s (trunk features "
          f"{cached['trunk_features_seconds']:.0f} s) vs uncached estimate {estimate:.0f} s: "
          f"{results['whole_run_ratio']:.1f}x")


if __name__ == "__main__":
    main()
