"""Several sweep workers on one machine: one `asl-mlops tune` process each, sharing one study.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from typing import Any

import mlflow
import optuna

from asl_mlops.config import (
    SWEPT_FIELDS,
    TUNE_REGISTRY,
    RegistryConfig,
    SweepConfig,
    TrainConfig,
)
from asl_mlops.tuning.space import worker_seed
from asl_mlops.tuning.sweep import SweepResult, open_study

logger = logging.getLogger(__name__)


def worker_arguments(base: TrainConfig, sweep: SweepConfig, registry: RegistryConfig = TUNE_REGISTRY) -> list[str]:
    """`asl-mlops tune` options that reproduce `base`, `sweep` and `registry` in one worker (with --workers 1)."""
    def spelled(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    params = {**{k: v for k, v in dataclasses.asdict(base).items() if k not in SWEPT_FIELDS},
              **dataclasses.asdict(sweep), **dataclasses.asdict(registry), "workers": 1}
    return [arg for k, v in params.items() for arg in ("--" + k.replace("_", "-"), spelled(v))]


def run_workers(base: TrainConfig, sweep: SweepConfig, registry: RegistryConfig = TUNE_REGISTRY) -> SweepResult:
    """`tune --workers N`: start N worker processes on the study here, wait for them, and report the study.

    Needs a storage several processes can share (a database server): SQLite is refused. The tables, the
    study and the experiment are made once here first (and the data checked), and each worker gets 1/N of
    the CPU threads (TF_NUM_INTRAOP_THREADS), so N workers do not fight over the cores."""
    # The tables, the study and the experiment the workers share, made once here (and the data checked).
    url, storage, _, study = open_study(base, sweep, worker_seed(base.seed), shared=True)
    threads = max(1, (os.cpu_count() or 1) // sweep.workers)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}  # each worker opens its own sweep run
    env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=str(threads),
               MLFLOW_TRACKING_URI=mlflow.get_tracking_uri())
    command = [sys.executable, "-m", "asl_mlops", "tune", *worker_arguments(base, sweep, registry)]
    logger.info("starting %d workers on study '%s' (%d CPU thread(s) each)", sweep.workers, sweep.study_name, threads)
    workers = [subprocess.Popen(command, env=env) for _ in range(sweep.workers)]
    codes = [w.wait() for w in workers]
    if any(codes):
        raise WorkerFailed(f"{sum(1 for c in codes if c)} of {sweep.workers} workers failed (exit codes {codes})",
                           max(codes) if max(codes) > 0 else 1)
    return SweepResult.of_study(optuna.load_study(study_name=sweep.study_name, storage=storage), url,
                                "(one per worker)")


class WorkerFailed(Exception):
    """A worker process of `run_workers` exited with an error (its own output says which)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
