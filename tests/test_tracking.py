from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import mlflow.data
import numpy as np
import pytest
from conftest import needs_postgres

from asl_mlops.tracking import log_input

#: Runs that log one new dataset at the same moment, per round.
RACERS = 6


@pytest.mark.slow
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


def test_params_mlflow_run_logged_as_typed_are_kept_when_they_mean_the_same(mlflow_store):
    """`mlflow run -P ensemble=2.0` logs '2.0' before our code runs, which spells it '2': the same value, no clash;
    a different value still is one."""
    import pytest

    from asl_mlops.config import TrainConfig
    from asl_mlops.tracking import log_config

    for typed, config in (("2.0", TrainConfig(ensemble="2.0")), (" AUTO", TrainConfig(ensemble=" AUTO"))):
        with mlflow.start_run() as run:
            mlflow.log_params({"ensemble": typed, "epochs": "12.0", "ema": "True"})
            log_config(config)
        assert mlflow.get_run(run.info.run_id).data.params["ensemble"] == typed
    with mlflow.start_run():
        mlflow.log_param("ensemble", "3")
        with pytest.raises(ValueError, match="params already logged with other values.*ensemble"):
            log_config(TrainConfig(ensemble="2"))
