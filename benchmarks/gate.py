"""How long does the validation gate take per registered version, and what verdicts does it give?

On the synthetic demo (`asl-mlops data synth` defaults), in a fresh SQLite store in a temporary folder: trains the
quick start's model (`train --epochs 3 --register true`: registered as challenger, gated, promoted if it passes),
then a 1-epoch model (`--epochs 1`, gated against the first as champion). For each version: the gate's wall time
(`validate_version` with promotion, GateConfig defaults) and of a dry run before it, its load and latency
figures, the verdict table, and its two slow parts timed alone (predicting on the test CSV in process; the serving
check's fresh process). Prints the tables and writes the JSON. Timings want the machine to themselves.

    python benchmarks/gate.py --out benchmarks/results/gate.json
    python benchmarks/gate.py --tiny --out /tmp/gate.json    # one narrow 1-epoch model on a few rows (a smoke test)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from provenance import provenance, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 1],
                        help="Epochs of each model trained and gated, in order.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gate.json"))
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: one version, a narrow network for one epoch on a few synthetic rows.")
    args = parser.parse_args()
    narrow: dict[str, object] = {}
    if args.tiny:
        import tiny

        args.epochs = [1]
        narrow = {k: v for k, v in tiny.TRAIN.items() if k != "epochs"}
    out = args.out.resolve()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from asl_mlops.quiet_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    import mlflow

    from asl_mlops.config import GateConfig, RegistryConfig, TrainConfig
    from asl_mlops.data.synth import write_synthetic
    from asl_mlops.registry import register
    from asl_mlops.train import train_and_evaluate
    from asl_mlops.gate import predict_letters, serving_check, validate_version

    results: dict[str, object] = {**provenance(), "gate": GateConfig().to_params(), "versions": []}
    with tempfile.TemporaryDirectory(prefix="asl-gate-bench-") as tmp:
        os.chdir(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_registry_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment("gate-benchmark")
        train, test = tiny.sign_mnist(Path(tmp) / "data") if args.tiny else write_synthetic(Path(tmp) / "data")
        for epochs in args.epochs:
            config = TrainConfig(train_data=str(train), test_data=str(test), cache_dir=f"{tmp}/cache", epochs=epochs,
                                 **narrow)
            start = time.perf_counter()
            result = train_and_evaluate(config, params=RegistryConfig(register=True).to_params())
            train_seconds = time.perf_counter() - start
            registration = register(result.run_id, result.model_uri, "asl-recognizer")
            start = time.perf_counter()
            dry = validate_version("asl-recognizer", registration.version, dry_run=True)
            dry_seconds = time.perf_counter() - start
            start = time.perf_counter()
            verdict = validate_version("asl-recognizer", registration.version, promote=True)
            gate_seconds = time.perf_counter() - start
            # Its two slow parts again, alone: predicting on the test CSV in this process (the model loaded, TF
            # already imported), and the serving check's fresh process (start, imports, load, 3 answers).
            uri = f"models:/asl-recognizer/{registration.version}"
            start = time.perf_counter()
            predict_letters(uri, str(test))
            predict_seconds = time.perf_counter() - start
            start = time.perf_counter()
            serving_check(uri)
            serving_seconds = time.perf_counter() - start
            print(f"\nepochs {epochs}: trained in {train_seconds:.0f} s; gate {gate_seconds:.1f} s (dry run "
                  f"{dry_seconds:.1f} s; alone: predicting {predict_seconds:.1f} s, serving check "
                  f"{serving_seconds:.1f} s)\n{verdict.report()}")
            results["versions"].append({
                "epochs": epochs, "version": verdict.version, "train_seconds": train_seconds,
                "gate_seconds": gate_seconds, "dry_run_seconds": dry_seconds,
                "predict_seconds": predict_seconds, "serving_check_seconds": serving_seconds,
                "load_seconds": verdict.load_seconds,
                "latency_ms": verdict.latency_ms, "status": verdict.status, "failed": verdict.failed,
                "promoted": verdict.promoted, "decision": verdict.decision, "dry_run_status": dry.status,
                "table": verdict.table()})
    write_results(out, results)


if __name__ == "__main__":
    main()
