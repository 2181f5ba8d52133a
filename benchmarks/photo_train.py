"""How long does `mlflow run .` take to train the photo recognizer on a photo folder, hand detection included?

Runs `mlflow run . --env-manager local -P train_data=DATA -P test_data=TEST` with an empty cache folder (so every
photo's hand is searched for) in a temporary MLflow store, and records the wall time and the run's figures.

    python benchmarks/photo_train.py --data ../shared/data/hands --out benchmarks/results/photo-train.json
    python benchmarks/photo_train.py --tiny --out /tmp/photo-train.json    # a few real photos, 1 epoch (a smoke test)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import provenance, write_results

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hands"), help="Training photo folder.")
    parser.add_argument("--test-data", type=Path, default=None,
                        help="Test photo folder (default: the training folder; its hands then come from the cache).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/photo-train.json"), help="JSON to write.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: a few real photos of benchmarks/tiny.py's signers, one epoch.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="photo-train-"))
    if args.tiny:
        import tiny

        args.data, args.test_data = tiny.hands(work / "hands"), None
    data = args.data.resolve()
    test = (args.test_data or args.data).resolve()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "MLFLOW_EXPERIMENT_NAME": "bench"}
    command = ["mlflow", "run", str(ROOT), "--env-manager", "local", "-P", f"train_data={data}",
               "-P", f"test_data={test}", "-P", f"cache_dir={work / 'cache'}",
               *(["-P", "epochs=1"] if args.tiny else [])]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"mlflow run failed:\n{done.stderr[-3000:]}")
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    run = mlflow.search_runs(experiment_names=["bench"], output_format="list")[0]
    keep = ("train_seconds", "val_accuracy", "test_accuracy", "test_errors", "temperature", "not_sure_below",
            "val_coverage", "val_answered_accuracy", "val_confidently_wrong")
    results = {**provenance(), "mlflow_run": " ".join(command), "wall_seconds": wall,
               "tracking_uri": env["MLFLOW_TRACKING_URI"], "run_id": run.info.run_id,
               "metrics": {k: run.data.metrics[k] for k in keep if k in run.data.metrics},
               "params": {k: run.data.params.get(k) for k in ("architecture", "train_photos", "train_hands_found",
                                                                "test_rows", "test_hands_found", "epochs",
                                                                "val_signers", "signer_balance")}}
    print(f"mlflow run: {wall:.0f} s wall ({wall / 60:.1f} min), train_seconds "
          f"{results['metrics'].get('train_seconds', float('nan')):.0f}; hands found in "
          f"{results['params']['train_hands_found']} of {results['params']['train_photos']} photos; run "
          f"{run.info.run_id} in {env['MLFLOW_TRACKING_URI']}")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
