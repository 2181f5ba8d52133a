"""Sweep stage: an Optuna study over `train_and_evaluate`, one nested MLflow run per trial.

Maximises the final validation accuracy over learning_rate (log), decay_rate and l2 (log); every other
setting is a fixed `TrainConfig`. A sweep is configuration over the one training function: data is
prepared once, `trial_config` is the only place the search space is read, and each trial is a plain
`train_and_evaluate` call under the sweep's parent run.

The trial's value (what Optuna's sampler and pruner see) is its final val_accuracy; its final val_loss
is kept as the user attr `val_loss`. The sweep's best trial (logged as best_* on the parent run and
registered) is picked by the registry's ordering, `registry.is_better`: highest val_accuracy, then
lowest val_loss among exact ties, then the earliest trial; not by `study.best_trial`, which ignores
the loss. Both numbers of every trial are in the parent's `optuna/trials.csv` (`value`,
`user_attrs_val_loss`).

Persistence and resume: the study lives in an RDB storage (`SweepConfig.storage`, default
`optuna.db` beside the MLflow store) with Optuna's heartbeat on. `n_trials` is the study's total of
complete + pruned trials, so a re-run under the same study name runs only the missing ones. A trial
of a killed process stops beating; it is failed and `RetryHeartbeatStaleTrialCallback` queues a retry
with the same params, which counts toward the budget. Each invocation of `run_sweep` opens a NEW parent
MLflow run (tagged `optuna.study_name`), which also works under `mlflow run` (that owns the run); its
summary (best params, CSV, figures) covers the whole study.

Workers: any number of processes may run `run_sweep` on one study at once (one storage server, one
tracking server). `run_trials` keeps the budget exact: a worker starts a trial only while complete +
pruned + running trials are fewer than `n_trials`, and a trial that two workers started together beyond
the budget is not run (it ends FAIL, user attr `over_budget`). A worker whose remaining budget is held by
other workers' running trials waits for them, so it can take over if one dies (its retry) or fails; so
every worker ends only when the study has `n_trials`, with nothing RUNNING left by a dead process. Each
worker's TPE sampler has its own seed and `constant_liar`, so parallel workers do not propose the same
parameters. Liveness is a heartbeat: Optuna's for trials, the tag `asl_mlops.heartbeat` (refreshed every
heartbeat_interval) for sweep runs; `close_orphaned_runs` closes as KILLED only runs whose heartbeat
stopped. The best trial is registered after the budget is done, under the registry's lock, so the
workers register it once (asl_mlops.registry).

MLflow status of a trial's run, plus the tag `optuna.trial_state`: COMPLETE -> FINISHED,
PRUNED -> KILLED, FAIL (an exception, e.g. NaN loss) -> FAILED, killed process -> KILLED.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import optuna
import sqlalchemy
import tensorflow as tf
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import KerasPruningCallback

from asl_mlops.config import SWEPT_FIELDS, VALUES_BEFORE_THE_SETTING, SweepConfig, TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.registry import Registration, is_better, register_if_better
from asl_mlops.tracking import check_tracking_server, ensure_experiment, log_figures, log_new_params
from asl_mlops.train import PreparedData, prepare_data, train_and_evaluate

logger = logging.getLogger(__name__)

STUDY_TAG = "optuna.study_name"
TRIAL_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
ROLE_TAG = "asl_mlops.role"  # "sweep" (parent) or "trial" (child)
OBJECTIVE = "val_accuracy"  # reported each epoch for pruning; the trial's value is the final one
# Trial errors that fail one trial but not the sweep: numeric blow-ups (NaN loss raises
# FloatingPointError) and TensorFlow runtime errors. Anything else is a bug and stops the sweep.
TRIAL_ERRORS: tuple[type[Exception], ...] = (ArithmeticError, tf.errors.OpError)
STALE_TRIAL_RETRIES = 2  # a trial killed with its process is retried at most this often
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the space (Optuna's 10 is a whole 10-trial sweep)
HEARTBEAT_TAG = "asl_mlops.heartbeat"  # a sweep run's last sign of life (Unix seconds)
HEARTBEAT_INTERVAL_TAG = "asl_mlops.heartbeat_interval"
STORAGE_CONNECT_TIMEOUT = 10  # seconds to wait for a storage server to answer
SCHEMA_RETRIES = 5  # workers starting together race to create the storage's tables


class BudgetSpent(Exception):
    """A trial started beyond the study's n_trials because another worker started one at the same moment."""


@dataclass(frozen=True)
class SweepResult:
    """What a sweep produced (the whole study, not only this invocation's trials)."""

    study_name: str
    storage: str  # password hidden
    parent_run_id: str
    states: dict[str, int]  # trial counts by Optuna state
    best_trial: int | None = None
    best_value: float | None = None  # val_accuracy
    best_val_loss: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: str | None = None
    registration: Registration | None = None

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items()))
        if self.best_trial is None:
            return f"study '{self.study_name}' ({counts}): no complete trial; sweep run {self.parent_run_id}"
        params = " ".join(f"{k}={v:.3g}" for k, v in self.best_params.items())
        loss = f" val_loss={self.best_val_loss:.4f}" if self.best_val_loss is not None else ""
        line = (f"study '{self.study_name}' ({counts}): best trial {self.best_trial} val_accuracy="
                f"{self.best_value:.4f}{loss} {params}; sweep run {self.parent_run_id}, best run {self.best_run_id}")
        if self.registration:
            line += f"\n{self.registration.model_name} v{self.registration.version} {self.registration.decision}"
        return line


def trial_config(trial: optuna.Trial, base: TrainConfig, sweep: SweepConfig) -> TrainConfig:
    """The search space: the training config of one trial (the only place the sweep's ranges are read)."""
    return base.replace(
        learning_rate=trial.suggest_float("learning_rate", sweep.learning_rate_min, sweep.learning_rate_max, log=True),
        decay_rate=trial.suggest_float("decay_rate", sweep.decay_rate_min, sweep.decay_rate_max),
        l2=trial.suggest_float("l2", sweep.l2_min, sweep.l2_max, log=True),
    )


class TrialRunLink(keras.callbacks.Callback):
    """Records the trial's MLflow run id in the trial (user attr `mlflow_run_id`) as training starts,
    so a pruned, failed or killed trial can still be matched to its run."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial
        self.run_id: str | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        run = mlflow.active_run()
        if run is not None:
            self.run_id = run.info.run_id
            self.trial.set_user_attr("mlflow_run_id", self.run_id)


class _BudgetSpentLog(logging.Filter):
    """Optuna logs a trial that raised as a failure, with a traceback; a BudgetSpent trial is no error: one
    info line instead, and its "failed with value None" line dropped."""

    spent: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BudgetSpent):
            record.exc_info, record.exc_text, record.args = None, None, ()
            record.msg, record.levelno, record.levelname = str(error), logging.INFO, "INFO"
            return True
        return not any(record.getMessage() == f"Trial {n} failed with value None." for n in self.spent)


logging.getLogger("optuna.study._optimize").addFilter(_BudgetSpentLog())


def claim_trial(trial: optuna.Trial, n_trials: int) -> None:
    """Raise BudgetSpent if `n_trials` complete, pruned or running trials come before `trial` (the storage
    numbers trials in creation order, so of two workers that started one at the same moment, the later one
    yields). Called before any parameter is sampled, so a refused trial has none and TPE ignores it."""
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ahead = sum(1 for t in trial.study.get_trials(deepcopy=False, states=counted) if t.number < trial.number)
    if ahead >= n_trials:
        trial.set_user_attr("over_budget", True)
        _BudgetSpentLog.spent.add(trial.number)
        raise BudgetSpent(f"trial {trial.number} not run: the study's {n_trials} trials were all claimed by workers")


def make_objective(base: TrainConfig, sweep: SweepConfig, data: PreparedData):
    """The Optuna objective: train one trial's config as a nested run, return its final val_accuracy
    (its final val_loss, the tie-break, goes in the user attr `val_loss`)."""
    client = MlflowClient()

    def objective(trial: optuna.Trial) -> float:
        claim_trial(trial, sweep.n_trials)
        keras.backend.clear_session()  # free the previous trial's graphs and layer names
        config = trial_config(trial, base, sweep)
        link = TrialRunLink(trial)
        tags = {STUDY_TAG: sweep.study_name, TRIAL_TAG: str(trial.number), ROLE_TAG: "trial"}
        try:
            result = train_and_evaluate(config, data, run_name=f"trial-{trial.number}", nested=True, tags=tags,
                                        callbacks=[link, KerasPruningCallback(trial, OBJECTIVE)])
        except optuna.TrialPruned:
            # MLflow ended the run FAILED as the exception left it; a pruned trial is a stopped run.
            if link.run_id:
                client.set_tag(link.run_id, STATE_TAG, TrialState.PRUNED.name)
                client.set_terminated(link.run_id, "KILLED")
            raise
        except Exception:
            if link.run_id:  # the run itself was ended FAILED by train_and_evaluate
                client.set_tag(link.run_id, STATE_TAG, TrialState.FAIL.name)
            raise
        client.set_tag(result.run_id, STATE_TAG, TrialState.COMPLETE.name)
        trial.set_user_attr("mlflow_run_id", result.run_id)
        trial.set_user_attr("val_loss", float(result.val_loss))
        trial.set_user_attr("recognizer_uri", result.model_uri)
        trial.set_user_attr("test_accuracy", result.test.accuracy)
        trial.set_user_attr("epochs_run", len(result.history.get("loss", [])))
        return result.val_accuracy

    return objective


def make_pruner(sweep: SweepConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner named by `sweep.pruner`; steps are epochs."""
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                           n_warmup_steps=sweep.pruner_warmup_epochs)
    if sweep.pruner == "hyperband":
        min_resource = min(max(1, sweep.pruner_warmup_epochs), epochs)
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max(epochs, min_resource + 1),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def default_storage_url(tracking_uri: str) -> str:
    """`sqlite:///<dir>/optuna.db`, where <dir> holds the MLflow store: the folder of a SQLite tracking
    database or of a local mlruns folder; the working directory for a remote tracking server."""
    parsed = urllib.parse.urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        folder = Path(tracking_uri[len("sqlite:///"):]).parent
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path or ".").parent
    else:
        folder = Path.cwd()
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def hide_password(url: str) -> str:
    """The storage URL as it may be logged."""
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def _one_line(err: BaseException) -> str:
    """A database error as one line: the driver's own message, without SQLAlchemy's SQL and links."""
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def open_storage(url: str, heartbeat_interval: int) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: trials of a dead process are failed after 2 missed beats and retried.

    A bad URL, a missing driver, a refused connection or a missing database is an InputError within about
    STORAGE_CONNECT_TIMEOUT seconds. Workers that start together on a fresh database race to create Optuna's
    tables; the losers retry."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect()  # the dialect and its driver module: an unknown or missing one fails here
    except sqlalchemy.exc.ArgumentError:
        raise InputError(f"invalid sweep setting: storage {url!r} is not a SQLAlchemy database URL") from None
    except ImportError as err:  # the dialect is known, its driver is not installed
        raise InputError(f"invalid sweep setting: storage {hide_password(url)}: its database driver is not "
                         f"installed ({err})") from None
    shown = hide_password(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        engine_kwargs["connect_args"] = {"connect_timeout": STORAGE_CONNECT_TIMEOUT}
    for attempt in range(SCHEMA_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=STALE_TRIAL_RETRIES))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            # Another worker created the same table or version row a moment earlier.
            if attempt == SCHEMA_RETRIES - 1:
                raise InputError(f"cannot create the Optuna tables in storage {shown}: {_one_line(err)}") from None
            logger.info("storage %s: another worker is creating the tables; retrying", shown)
            time.sleep(0.5 + random.random())
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as err:
            raise InputError(f"cannot open sweep storage {shown}: {_one_line(err)}") from None
        except ImportError as err:  # Optuna's wrapping of a missing driver module
            raise InputError(f"invalid sweep setting: storage {shown}: its database driver is not installed "
                             f"({err.__cause__ or err})") from None
    raise AssertionError("unreachable")


def study_settings(base: TrainConfig, sweep: SweepConfig, data: PreparedData) -> dict[str, Any]:
    """What makes trials of one study comparable: the fixed training settings, the data, the search."""
    params = {k: v for k, v in base.to_params().items()
              if k not in (*SWEPT_FIELDS, "train_data", "test_data", "cache_dir", "register", "model_name",
                           "ensemble_members", "resolved_architecture")}  # (they follow from the others and the data)
    params["architecture"] = base.resolved_architecture  # 'auto' and what it chose are the same study
    search = {k: v for k, v in sweep.to_params().items()
              if k not in ("n_trials", "study_name", "heartbeat_interval", "workers", "register", "model_name")}
    return {**params, **search, "train_data_hash": data.params["train_data_hash"],
            "val_data_hash": data.params["val_data_hash"],
            "test_data_hash": data.params["test_data_hash"]}


def check_same_settings(study: optuna.Study, settings: dict[str, Any]) -> None:
    """Record the settings on a new study; refuse to resume a study with different ones."""
    previous = study.user_attrs.get("settings")
    if previous is None:
        study.set_user_attr("settings", settings)
        return
    # A setting the study does not record is newer than the study: it ran with that setting's default, or with
    # what the code did before the setting existed where that differs.
    before = TrainConfig().replace(**VALUES_BEFORE_THE_SETTING).to_params()
    recorded = {**before, **SweepConfig().to_params(), **previous}
    # Also equal as text: `ensemble` was a number before 'auto' (1 then, '1' now).
    changed = [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in settings.items()
               if recorded.get(k) != v and str(recorded.get(k)) != str(v)]
    if changed:
        raise InputError(f"invalid sweep setting: study '{study.study_name}' was run with other settings "
                         f"({'; '.join(changed)}); keep them to resume it, or use a new --study-name")


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


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check: fail (and queue retries of) trials whose process stopped beating."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward n_trials: complete or pruned."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _figure_of(axes: Any) -> Figure:
    return np.ravel(axes)[0].figure


def study_figures(study: optuna.Study) -> dict[str, Figure]:
    """Optuna's matplotlib visualisations of the study (pure: the study in, figures out)."""
    from optuna.visualization import matplotlib as ovm

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete == 0:
        logger.info("no figures: the study has no complete trial")
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figures = {"optimization_history": _figure_of(ovm.plot_optimization_history(study)),
                   "slice": _figure_of(ovm.plot_slice(study)),
                   "parallel_coordinate": _figure_of(ovm.plot_parallel_coordinate(study)),
                   "intermediate_values": _figure_of(ovm.plot_intermediate_values(study))}
        if complete >= 2:
            figures["param_importances"] = _figure_of(ovm.plot_param_importances(study))
        else:
            logger.info("no param_importances figure: it needs 2 complete trials, the study has %d", complete)
    return figures


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial by the registry's ordering (`is_better` on val_accuracy, then the user attr
    `val_loss`); the earliest of fully tied trials. None if no trial completed."""
    best = None
    for trial in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        if best is None or is_better(trial.value, trial.user_attrs.get("val_loss"),
                                     best.value, best.user_attrs.get("val_loss")):
            best = trial
    return best


def log_study_summary(study: optuna.Study) -> FrozenTrial | None:
    """Log to the active (parent) run: trial counts, all trials as CSV (val_accuracy is `value`, val_loss
    `user_attrs_val_loss`), figures, and the best trial (`best_trial`): its value, val_loss and params."""
    states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    mlflow.log_metrics({f"trials_{s}": float(states.get(s, 0)) for s in ("complete", "pruned", "fail")})
    mlflow.log_text(study.trials_dataframe().to_csv(index=False), "optuna/trials.csv")
    log_figures(study_figures(study), "optuna")
    best = best_trial(study)
    if best is None:
        logger.warning("study '%s' has no complete trial: nothing to report as best", study.study_name)
        return None
    mlflow.log_metric("best_val_accuracy", best.value)
    if "val_loss" in best.user_attrs:  # trials run before it was recorded have none
        mlflow.log_metric("best_val_loss", best.user_attrs["val_loss"])
    mlflow.log_params({"best_trial_number": best.number, **{f"best_{k}": v for k, v in best.params.items()}})
    mlflow.set_tag("best_run_id", best.user_attrs.get("mlflow_run_id", ""))
    return best


def worker_seed(seed: int) -> int:
    """The TPE sampler seed of this worker process: derived from `seed`, the host, the process and the
    time, so workers started together (or a restarted one) never share a seed."""
    token = f"{seed}:{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "big")


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE with its own seed per worker and `constant_liar` (running trials count as bad guesses, so
    parallel workers spread out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True)


def run_trials(study: optuna.Study, objective: Any, n_trials: int, poll_seconds: float) -> int:
    """Run trials until the study has `n_trials` complete + pruned ones; returns how many this worker ran.

    While the rest of the budget is held by other workers' running trials, wait for them: they may end
    FAIL, or die (their heartbeat stops; the retry Optuna queues is then run here). Failed trials do not
    count toward the budget, so a worker stops early only after `n_trials` failures of its own (a sweep
    whose every trial fails is broken, not unlucky)."""
    ran, failures, waiting_logged = 0, 0, False
    while True:
        fail_stale_trials(study)
        counts = Counter(t.state for t in study.get_trials(deepcopy=False))
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if finished >= n_trials:
            return ran
        if failures >= n_trials:
            logger.warning("study '%s': stopping this worker after %d failed trials; %d of %d finished",
                           study.study_name, failures, finished, n_trials)
            return ran
        if counts[TrialState.WAITING] == 0 and finished + counts[TrialState.RUNNING] >= n_trials:
            if not waiting_logged:
                logger.info("study '%s': %d of %d trials finished, the other %d running in other workers; waiting",
                            study.study_name, finished, n_trials, counts[TrialState.RUNNING])
                waiting_logged = True
            time.sleep(poll_seconds)
            continue
        waiting_logged = False
        ended: list[FrozenTrial] = []
        study.optimize(objective, n_trials=1, catch=(*TRIAL_ERRORS, BudgetSpent), gc_after_trial=True,
                       callbacks=[lambda _, trial: ended.append(trial)])
        if ended and ended[0].state == TrialState.FAIL and not ended[0].user_attrs.get("over_budget"):
            failures += 1
        ran += 1


def load_or_create_study(storage: optuna.storages.RDBStorage, sweep: SweepConfig, sampler: Any,
                         pruner: Any) -> optuna.Study:
    """The study, created if missing; workers creating it at the same moment all end up with the one study."""
    for attempt in range(SCHEMA_RETRIES):
        try:
            return optuna.create_study(study_name=sweep.study_name, storage=storage, direction="maximize",
                                       sampler=sampler, pruner=pruner, load_if_exists=True)
        except sqlalchemy.exc.IntegrityError:  # created by another worker between the check and the insert
            if attempt == SCHEMA_RETRIES - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def open_study(base: TrainConfig, sweep: SweepConfig, sampler_seed: int,
               shared: bool = False) -> tuple[str, optuna.storages.RDBStorage, PreparedData, optuna.Study]:
    """Check the tracking server, open the storage, prepare the data (InputError on any of them, before
    anything is written), then create or load the study, check its settings and make the MLflow experiment.
    `shared`: several processes will use the storage, so SQLite is refused. Returns (url, storage, data, study)."""
    check_tracking_server()
    url = default_storage_url(mlflow.get_tracking_uri()) if sweep.storage == "auto" else sweep.storage
    if shared and url.startswith("sqlite"):
        raise InputError(f"invalid sweep setting: --workers {sweep.workers} needs a storage that several processes "
                         f"can share: pass --storage postgresql://user@host/db (or mysql://...); the SQLite storage "
                         f"{url} serves one worker at a time")
    storage = open_storage(url, sweep.heartbeat_interval)
    data = prepare_data(base)  # once per sweep; raises InputError on bad CSVs before any run starts
    study = load_or_create_study(storage, sweep, make_sampler(sampler_seed), make_pruner(sweep, base.epochs))
    check_same_settings(study, study_settings(base, sweep, data))
    ensure_experiment()
    return url, storage, data, study


def run_sweep(base: TrainConfig, sweep: SweepConfig) -> SweepResult:
    """Create or join the study, run trials until it has `n_trials` under one parent MLflow run (this
    worker's), log the summary and register the best trial's model (if `sweep.register`).

    Storage and tracking server are checked first: a bad or unreachable one is an InputError before
    any data is read."""
    seed = worker_seed(base.seed)
    url, storage, data, study = open_study(base, sweep, seed)
    fail_stale_trials(study)
    logger.info("study '%s' in %s: %d of %d trials finished (sampler seed %d)", sweep.study_name,
                hide_password(url), finished_count(study), sweep.n_trials, seed)

    if finished_count(study) >= sweep.n_trials and not mlflow.active_run() and not os.environ.get("MLFLOW_RUN_ID"):
        return finished_study(study, sweep, url)  # nothing to run: no new (empty) sweep run

    fixed = {k: v for k, v in base.to_params().items() if k not in (*SWEPT_FIELDS, "register", "model_name")}
    tags = {STUDY_TAG: sweep.study_name, ROLE_TAG: "sweep", "optuna.storage": hide_password(url),
            "optuna.sampler_seed": str(seed)}
    with mlflow.start_run(run_name=f"sweep-{sweep.study_name}", tags=tags) as parent, \
            RunHeartbeat(parent.info.run_id, sweep.heartbeat_interval):
        log_new_params({**fixed, **sweep.to_params(), **data.params})
        close_orphaned_runs(study, parent.info.experiment_id, parent.info.run_id)
        poll = min(max(sweep.heartbeat_interval / 2, 0.5), 10.0)
        ran = run_trials(study, make_objective(base, sweep, data), sweep.n_trials, poll)
        mlflow.log_metric("trials_run_by_this_worker", float(ran))
        fail_stale_trials(study)
        close_orphaned_runs(study, parent.info.experiment_id, parent.info.run_id)
        best = log_study_summary(study)
        registration = None
        if best is not None and sweep.register:
            # Every worker gets here only once the budget is done; the registry's lock and its check for an
            # already registered run make the best trial's model registered once, whoever comes first.
            registration = register_if_better(
                best.user_attrs["mlflow_run_id"], best.user_attrs["recognizer_uri"], sweep.model_name,
                tags={"study_name": sweep.study_name, "trial_number": best.number,
                      "sweep_run_id": parent.info.run_id},
                description=(f"Best trial ({best.number}) of Optuna study '{sweep.study_name}', sweep run "
                             f"{parent.info.run_id}: val_accuracy {best.value:.4f}, val_loss "
                             f"{best.user_attrs.get('val_loss', float('nan')):.4f}, params "
                             + ", ".join(f"{k}={v:.4g}" for k, v in best.params.items()) + "."))
            mlflow.set_tags({"registered_version": registration.version,
                             "champion_decision": registration.decision})
    settle_other_sweep_runs(sweep.study_name, parent.info.experiment_id, parent.info.run_id)
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return SweepResult(sweep.study_name, hide_password(url), parent.info.run_id, dict(states),
                       best.number if best else None, best.value if best else None,
                       best.user_attrs.get("val_loss") if best else None,
                       dict(best.params) if best else {}, best.user_attrs.get("mlflow_run_id") if best else None,
                       registration)


def finished_study(study: optuna.Study, sweep: SweepConfig, url: str) -> SweepResult:
    """The result of a study that already has its trials, reported from the study and its latest sweep run
    without starting a run. Its best model is registered if it is not yet (`register_if_better` registers a run
    once)."""
    best = best_trial(study)
    earlier = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1,
                                 filter_string=f"tags.`{STUDY_TAG}` = '{sweep.study_name}' and "
                                               f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"])
    parent = earlier[0].info.run_id if earlier else ""
    logger.info("study '%s' already has %d trials: nothing to run", sweep.study_name, finished_count(study))
    registration = None
    if best is not None and sweep.register:
        registration = register_if_better(best.user_attrs["mlflow_run_id"], best.user_attrs["recognizer_uri"],
                                          sweep.model_name, tags={"study_name": sweep.study_name,
                                                                  "trial_number": best.number, "sweep_run_id": parent})
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return SweepResult(sweep.study_name, hide_password(url), parent, dict(states), best.number if best else None,
                       best.value if best else None, best.user_attrs.get("val_loss") if best else None,
                       dict(best.params) if best else {}, best.user_attrs.get("mlflow_run_id") if best else None,
                       registration)


def worker_arguments(base: TrainConfig, sweep: SweepConfig) -> list[str]:
    """`asl-mlops tune` options that reproduce `base` and `sweep` in one worker (with --workers 1)."""
    def spelled(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    params = {**{k: v for k, v in dataclasses.asdict(base).items() if k not in (*SWEPT_FIELDS, "register",
                                                                                 "model_name")},
              **dataclasses.asdict(sweep), "workers": 1}
    return [arg for k, v in params.items() for arg in ("--" + k.replace("_", "-"), spelled(v))]


def run_workers(base: TrainConfig, sweep: SweepConfig) -> SweepResult:
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
    command = [sys.executable, "-m", "asl_mlops", "tune", *worker_arguments(base, sweep)]
    logger.info("starting %d workers on study '%s' (%d CPU thread(s) each)", sweep.workers, sweep.study_name, threads)
    workers = [subprocess.Popen(command, env=env) for _ in range(sweep.workers)]
    codes = [w.wait() for w in workers]
    if any(codes):
        raise WorkerFailed(f"{sum(1 for c in codes if c)} of {sweep.workers} workers failed (exit codes {codes})",
                           max(codes) if max(codes) > 0 else 1)
    study = optuna.load_study(study_name=sweep.study_name, storage=storage)
    best = best_trial(study)
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return SweepResult(sweep.study_name, hide_password(url), "(one per worker)", dict(states),
                       best.number if best else None, best.value if best else None,
                       best.user_attrs.get("val_loss") if best else None, dict(best.params) if best else {},
                       best.user_attrs.get("mlflow_run_id") if best else None)


class WorkerFailed(Exception):
    """A worker process of `run_workers` exited with an error (its own output says which)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
