"""A sweep's MLflow runs: tags, heartbeats, and closing runs whose process died.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

logger = logging.getLogger(__name__)


STUDY_TAG = "optuna.study_name"
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
ROLE_TAG = "asl_mlops.role"  # "sweep" (parent) or "trial" (child)
HEARTBEAT_TAG = "asl_mlops.heartbeat"  # a sweep run's last sign of life (Unix seconds)
HEARTBEAT_INTERVAL_TAG = "asl_mlops.heartbeat_interval"


def run_is_alive(run: Any, now: float) -> bool:
    """Whether a sweep run's process still beats: its heartbeat tag (or start) is within two intervals
    (plus a margin for clocks and slow stores)."""
    tags = run.data.tags
    interval = float(tags.get(HEARTBEAT_INTERVAL_TAG, 60))
    last = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000.0))
    return now - last <= 2 * interval + 5


def close_orphaned_runs(study: optuna.Study, experiment_id: str, keep_run_id: str) -> list[str]:
    """Set KILLED the study's MLflow runs a dead process left RUNNING; returns their ids.

    A trial run is left alone while Optuna counts its trial as RUNNING (fail_stale_trials fails it once
    its heartbeat stops); a sweep run while its `asl_mlops.heartbeat` tag is fresh. So live workers' runs
    are never closed.
    """
    client = MlflowClient()
    running = client.search_runs([experiment_id], filter_string=(
        f"tags.`{STUDY_TAG}` = '{study.study_name}' and attributes.status = 'RUNNING'"))
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed, now = [], time.time()
    for run in running:
        number = run.data.tags.get(TRIAL_TAG)
        if run.info.run_id == keep_run_id:
            continue
        if number is not None:
            state = states.get(int(number))
            if state == TrialState.RUNNING:
                continue
            if state is not None:
                client.set_tag(run.info.run_id, STATE_TAG, state.name)
        elif run_is_alive(run, now):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
        logger.warning("closed MLflow run %s (%s) as KILLED: its process died", run.info.run_id,
                       f"trial {number}" if number is not None else "the sweep run of a dead worker")
    return closed


def settle_other_sweep_runs(study_name: str, experiment_id: str, own_run_id: str) -> None:
    """After this worker's sweep run ended: wait until every other RUNNING sweep run of the study either
    ends or stops beating (then close it as KILLED), so no dead worker's run is left RUNNING, even one
    killed moments before its restart. Live workers end theirs within seconds of this one."""
    client = MlflowClient()
    logged = False
    while True:
        running = client.search_runs([experiment_id], filter_string=(
            f"tags.`{STUDY_TAG}` = '{study_name}' and attributes.status = 'RUNNING'"))
        now, alive = time.time(), []
        for run in running:
            if run.info.run_id == own_run_id or TRIAL_TAG in run.data.tags:
                continue
            if run_is_alive(run, now):
                alive.append(run.info.run_id)
            else:
                client.set_terminated(run.info.run_id, "KILLED")
                logger.warning("closed MLflow run %s (the sweep run of a dead worker) as KILLED", run.info.run_id)
        if not alive:
            return
        if not logged:
            logger.info("waiting for the sweep runs of %d other worker(s) to end: %s", len(alive), ", ".join(alive))
            logged = True
        time.sleep(1.0)


class RunHeartbeat:
    """Refreshes the tag `asl_mlops.heartbeat` of a run every `interval` seconds from a daemon thread."""

    def __init__(self, run_id: str, interval: int) -> None:
        self.run_id, self.interval = run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def _beat(self) -> None:
        client = MlflowClient()
        while not self._stop.wait(self.interval):
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, repr(time.time()))
            except Exception as err:  # a missed beat is not fatal; the next one may get through
                logger.warning("heartbeat of run %s failed: %s", self.run_id, err)

    def __enter__(self) -> "RunHeartbeat":
        client = MlflowClient()
        client.set_tag(self.run_id, HEARTBEAT_INTERVAL_TAG, str(self.interval))
        client.set_tag(self.run_id, HEARTBEAT_TAG, repr(time.time()))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
