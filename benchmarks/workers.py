"""Benchmark: the wall time of one sweep run by 1 worker vs 2 workers on this machine, side by side.

    python benchmarks/workers.py                      # synthetic demo data, made in --workdir
    python benchmarks/workers.py --train-data ../shared/data/sign_mnist_train.csv.gz --test-data HELD_OUT.csv
    python benchmarks/workers.py --tiny --out /tmp/workers.json    # 2 one-epoch trials on 2 workers (a smoke test)

Starts what a multi-machine sweep uses: a fresh PostgreSQL database for the Optuna storage and a real
`mlflow server` on another fresh database. Then it runs `asl-mlops tune --workers W` for W in --workers
(default 1 and 2), each on its own study with the same settings and `--n-trials`, timing each from start
to exit. Prints a table and writes benchmarks/results/workers.json (wall seconds, trials, their ratio).

Needs PostgreSQL on --postgres (trust auth); both databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=None, help="Training CSV (default: synthetic demo set).")
    parser.add_argument("--test-data", default=None, help="Test CSV (default: synthetic demo set).")
    parser.add_argument("--n-trials", type=int, default=4, help="Trials per sweep (the study's budget).")
    parser.add_argument("--epochs", type=int, default=2, help="Epochs per trial.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Worker counts to compare.")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="An existing database to connect to for creating the benchmark's databases.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "workers.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: a few synthetic rows, 2 trials of one epoch of a narrow network, on 2 "
                             "workers only.")
    args = parser.parse_args()
    narrow: list[str] = []
    if args.tiny:
        import tiny

        args.train_data, args.test_data = (str(path) for path in tiny.sign_mnist(
            tiny.folder("workers")))
        args.n_trials, args.epochs, args.workers = 2, 1, [2]
        narrow = ["--cnn-filters", tiny.TRAIN["cnn_filters"], "--batch-size", str(tiny.TRAIN["batch_size"])]

    import psycopg
    import requests
    from sqlalchemy.engine import make_url

    work = Path(tempfile.mkdtemp(prefix="asl-workers-"))
    if args.train_data is None:
        subprocess.run([sys.executable, "-m", "asl_mlops", "data", "synth", "--out", str(work / "data")], check=True)
        args.train_data, args.test_data = str(work / "data" / "sign_mnist_train.csv"), str(work / "data" /
                                                                                             "sign_mnist_test.csv")
    admin = make_url(args.postgres)
    names = [f"asl_bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    storage, backend = (admin.set(database=name).render_as_string(hide_password=False) for name in names)
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                               "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "settings": {"n_trials": args.n_trials, "epochs": args.epochs, "train_data": args.train_data},
               "runs": []}
    try:
        for _ in range(240):
            try:
                if requests.get(f"{tracking}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
        for workers in args.workers:
            command = [sys.executable, "-m", "asl_mlops", "tune", "--train-data", args.train_data,
                       "--test-data", args.test_data, "--cache-dir", str(work / "cache"),
                       "--epochs", str(args.epochs), "--n-trials", str(args.n_trials), "--pruner", "none",
                       "--study-name", f"workers-{workers}", "--storage", storage, "--workers", str(workers),
                       "--register", "false", "--ensemble", "1", *narrow]  # one network per trial, as published
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            results["runs"].append({"workers": workers, "wall_s": seconds})
            print(f"{workers} worker(s): {seconds:.0f} s for {args.n_trials} trials", flush=True)
        base = results["runs"][0]["wall_s"]
        for run in results["runs"]:
            run["speedup_vs_first"] = base / run["wall_s"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    write_results(args.out, stamped(results))
    print(f"\n{'workers':>8}{'wall s':>9}{'speed-up':>10}")
    for run in results["runs"]:
        print(f"{run['workers']:>8}{run['wall_s']:>9.0f}{run['speedup_vs_first']:>10.2f}")


if __name__ == "__main__":
    main()
