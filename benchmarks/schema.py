"""What an input schema in the recognizer's signature would cost per request: MLflow's schema enforcement.

    python benchmarks/schema.py
    python benchmarks/schema.py --tiny --out /tmp/schema.json    # 3 timed requests a case (a smoke test)

Logs the same trivial pyfunc twice, once with an input schema for both request forms (784 optional
`long` pixel columns, optional `label`, optional `image` string) and once without (today's recognizer
declares only outputs), loads both, and times `predict` on single-row and 32-row pixel frames and a
single-image frame. The difference is the enforcement's cost; the threshold for declaring the schema is
< 2 ms per request (issue 10). Prints a table; writes --out (benchmarks/results/schema.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD_MS = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="Timed requests per case and model.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "schema.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true", help="Smoke test: 3 timed requests per case and model.")
    args = parser.parse_args()
    if args.tiny:
        args.requests = 3

    import mlflow
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from asl_mlops.data.sign_mnist import LABEL_COLUMN, PIXEL_COLUMNS
    from asl_mlops.recognizers.requests import IMAGE_COLUMN, pixel_frame
    from asl_mlops.recognizers.sign_mnist import SignMnistRecognizer

    class Rows(mlflow.pyfunc.PythonModel):
        """Answers the row count: a model that costs nothing, so the timings are MLflow's alone."""

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"rows": [len(model_input)]})

    inputs = Schema([ColSpec("long", c, required=False) for c in PIXEL_COLUMNS]
                    + [ColSpec("long", LABEL_COLUMN, required=False), ColSpec("string", IMAGE_COLUMN, required=False)])
    with_schema = ModelSignature(inputs=inputs, outputs=SignMnistRecognizer.signature().outputs)
    rng = np.random.default_rng(0)
    frames = {"pixels, 1 row": pixel_frame(rng.integers(0, 256, (1, 28, 28))),
              "pixels, 32 rows": pixel_frame(rng.integers(0, 256, (32, 28, 28))),
              "image, 1 row": pd.DataFrame({IMAGE_COLUMN: ["iVBORw0KGgo" * 40]})}
    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                  "mlflow": mlflow.__version__, "threshold_ms": THRESHOLD_MS, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        # Rows needs only mlflow: named, not inferred (seconds per model that predict never sees).
        with mlflow.start_run(experiment_id=mlflow.create_experiment("schema", artifact_location=f"{tmp}/artifacts")):
            plain = mlflow.pyfunc.log_model(name="plain", python_model=Rows(), signature=SignMnistRecognizer.signature(),
                                            pip_requirements=["mlflow"])
            schema = mlflow.pyfunc.log_model(name="schema", python_model=Rows(), signature=with_schema,
                                             pip_requirements=["mlflow"])
        models = {"no input schema": mlflow.pyfunc.load_model(plain.model_uri),
                  "input schema": mlflow.pyfunc.load_model(schema.model_uri)}
        rows = []
        for case, frame in frames.items():
            medians = {}
            for name, model in models.items():
                for _ in range(min(5, args.requests)):
                    model.predict(frame)  # warm up
                times = []
                for _ in range(args.requests):
                    start = time.perf_counter()
                    model.predict(frame)
                    times.append((time.perf_counter() - start) * 1000)
                medians[name] = statistics.median(times)
            cost = medians["input schema"] - medians["no input schema"]
            results["cases"][case] = {**{f"{k}_ms": v for k, v in medians.items()}, "enforcement_ms": cost,
                                      "ratio": medians["input schema"] / medians["no input schema"]}
            rows.append((case, medians["no input schema"], medians["input schema"], cost))
    print(f"{'request':<16} {'no schema':>10} {'schema':>10} {'enforcement':>12}   (median ms of {args.requests})")
    for case, a, b, cost in rows:
        print(f"{case:<16} {a:>10.2f} {b:>10.2f} {cost:>12.2f}")
    worst = max(r[3] for r in rows)
    verdict = "declare it" if worst < THRESHOLD_MS else "keep the documented input_forms"
    results["verdict"] = verdict
    print(f"worst enforcement cost {worst:.2f} ms vs the {THRESHOLD_MS} ms threshold: {verdict}")
    results["requests"] = args.requests
    write_results(args.out, stamped(results))


if __name__ == "__main__":
    main()
