"""Benchmark: what pruning saves in a cnn sweep, and what the sweep finds over the default settings.

Runs the default `train_and_evaluate` once, then the same `n_trials` sweep (same seed, so the same
TPE proposals until pruning changes the history) with the median pruner and with none. Prints a table
and writes benchmarks/results/sweep.json: wall time of each sweep and their ratio, epochs trained (a
machine-independent measure of the work), trial states, and the best val_accuracy vs the default run's.

Everything is written under --workdir (its own MLflow store, Optuna storage and preprocessing cache),
so the benchmark never touches your ./mlflow.db. Full run (hours on 2 CPU cores):

    python benchmarks/sweep.py --train-data /work/shared/data/sign_mnist_train.csv.gz --test-data HELD_OUT.csv

Smoke test: `--tiny --out /tmp/sweep.json` (synthetic rows, a narrow network, each sweep one trial of one epoch, a
temporary --workdir).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from provenance import stamped, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    from asl_mlops.config import SweepConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-data", default="/work/shared/data/sign_mnist_train.csv.gz",
                        help="Sign MNIST training CSV (the sweep validates on a split of it).")
    parser.add_argument("--test-data",
                        help="Labelled CSV for each run's final test evaluation (the real test CSV is withheld: "
                             "use a held-out part of the training data).")
    parser.add_argument("--n-trials", type=int, default=10, help="Trials per sweep.")
    parser.add_argument("--epochs", type=int, default=12, help="Epochs per trial (and for the default run).")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "sweep-work",
                        help="Where the benchmark's MLflow store, Optuna storage and cache go.")
    parser.add_argument("--pruner-warmup-epochs", type=int, default=SweepConfig().pruner_warmup_epochs,
                        help="Epochs each trial runs before the median pruner may stop it (must be < --epochs "
                             "for pruning to save any work).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows, a narrow network, each sweep one trial of one epoch, a "
                             "temporary --workdir.")
    args = parser.parse_args()
    args.base = {}
    if args.tiny:
        import tiny

        args.workdir = tiny.folder("sweep")
        train, test = tiny.sign_mnist(args.workdir / "data")
        args.train_data, args.test_data, args.n_trials, args.epochs = str(train), str(test), 1, 1
        args.pruner_warmup_epochs = 0
        args.base = {k: v for k, v in tiny.TRAIN.items() if k not in ("epochs", "ensemble")}
    elif args.test_data is None:
        parser.error("--test-data is required (or --tiny)")
    return args


def epochs_trained(study) -> int:
    """Epochs actually run in the study: one reported val_accuracy per epoch, pruned trials included."""
    return sum(len(t.intermediate_values) for t in study.trials)


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(args.workdir / 'mlflow.db').resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri

    import mlflow
    import optuna

    from asl_mlops.config import RegistryConfig, SweepConfig, TrainConfig
    from asl_mlops.train import train_and_evaluate
    from asl_mlops.training.inputs import prepare_data
    from asl_mlops.tuning.sweep import run_sweep

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name("benchmark-sweep")  # artifacts in the workdir, not ./mlruns
    mlflow.set_experiment(experiment_id=experiment.experiment_id if experiment else mlflow.create_experiment(
        "benchmark-sweep", artifact_location=str((args.workdir / "artifacts").resolve())))
    base = TrainConfig(train_data=args.train_data, test_data=args.test_data, epochs=args.epochs,
                       cache_dir=str(args.workdir / "cache"), ensemble=1,  # one network per trial, as published
                       **args.base)
    data = prepare_data(base)  # warms the preprocessing cache, so no timing below includes it

    start = time.perf_counter()
    default = train_and_evaluate(base, data, run_name="default-settings")
    default_seconds = time.perf_counter() - start

    stamp = time.strftime("%Y%m%d-%H%M%S")
    storage = f"sqlite:///{(args.workdir / 'optuna.db').resolve()}"
    sweeps = {}
    for pruner in ("median", "none"):
        sweep = SweepConfig(n_trials=args.n_trials, study_name=f"bench-{pruner}-{stamp}", storage=storage,
                            pruner=pruner, pruner_warmup_epochs=args.pruner_warmup_epochs)
        start = time.perf_counter()
        result = run_sweep(base, sweep, RegistryConfig(register=False))
        seconds = time.perf_counter() - start
        study = optuna.load_study(study_name=sweep.study_name, storage=storage)
        sweeps[pruner] = {"seconds": round(seconds, 1), "epochs_trained": epochs_trained(study),
                          "states": result.states, "best_val_accuracy": result.best_value,
                          "best_params": result.best_params, "parent_run_id": result.parent_run_id}

    report = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "settings": {"train_data": args.train_data, "test_data": args.test_data, "n_trials": args.n_trials,
                     "epochs": args.epochs, "architecture": base.resolved_architecture, "mlflow": uri},
        "default_run": {"seconds": round(default_seconds, 1), "val_accuracy": default.val_accuracy,
                        "test_accuracy": default.test.accuracy, "run_id": default.run_id},
        "sweeps": sweeps,
        "wall_time_ratio_median_over_none": round(sweeps["median"]["seconds"] / sweeps["none"]["seconds"], 3),
        "epochs_ratio_median_over_none": round(sweeps["median"]["epochs_trained"] /
                                               max(sweeps["none"]["epochs_trained"], 1), 3),
    }
    write_results(args.out, stamped(report))

    print(f"\n{args.n_trials}-trial cnn sweep, {args.epochs} epochs per trial ({os.cpu_count()} CPUs)")
    print(f"{'':<18}{'wall s':>9}{'epochs':>8}{'best val_acc':>14}  trials")
    print(f"{'default run':<18}{default_seconds:>9.0f}{args.epochs:>8}{default.val_accuracy:>14.4f}  -")
    for pruner, s in sweeps.items():
        best = f"{s['best_val_accuracy']:.4f}" if s["best_val_accuracy"] is not None else "-"
        states = ", ".join(f"{n} {k.lower()}" for k, n in sorted(s["states"].items()))
        print(f"{'sweep, ' + pruner:<18}{s['seconds']:>9.0f}{s['epochs_trained']:>8}{best:>14}  {states}")
    print(f"wall time median/none: {report['wall_time_ratio_median_over_none']:.2f}  "
          f"(epochs {report['epochs_ratio_median_over_none']:.2f}); written to {args.out}")


if __name__ == "__main__":
    main()
