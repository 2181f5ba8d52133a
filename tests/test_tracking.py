from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import mlflow.data
import numpy as np

from asl_mlops.tracking import log_input
from conftest import needs_postgres

#: Runs that log one new dataset at the same moment, per round.
RACERS = 6


@needs_postgres
def test_runs_logging_the_same_new_dataset_at_once_all_link_it(mlflow_server):
    """Sweep workers start trials together and each logs the same training data: on a real tracking server
    (PostgreSQL) every run gets the dataset linked and none fails, though the store looks the dataset up
    before inserting it, so racing inserts hit its unique key."""
    experiment_id = mlflow.create_experiment("dataset-race")
    pixels = np.zeros((4, 28, 28, 1), np.float32)
    for attempt in range(3):
        dataset = mlflow.data.from_numpy(pixels, targets=np.arange(4), name=f"race-{attempt}",
                                         digest=f"digest{attempt}")
        barrier = threading.Barrier(RACERS, timeout=60)

        def link(_: int) -> str:
            with mlflow.start_run(experiment_id=experiment_id) as run:
                barrier.wait()
                log_input(dataset, context="training")
                return run.info.run_id

        with ThreadPoolExecutor(RACERS) as pool:
            run_ids = list(pool.map(link, range(RACERS)))
        for run_id in run_ids:
            inputs = mlflow.get_run(run_id).inputs.dataset_inputs
            assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [(f"race-{attempt}", f"digest{attempt}")]
