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
of a killed process stops beating; the next run fails it and `RetryHeartbeatStaleTrialCallback`
queues a retry with the same params. Each invocation of `run_sweep` opens a NEW parent MLflow run
(tagged `optuna.study_name`), which also works under `mlflow run` (that owns the run); its summary
(best params, CSV, figures) covers the whole study. MLflow runs a dead process left RUNNING (earlier
parents, and children whose Optuna trial is no longer RUNNING) are closed as KILLED. One `tune`
process per study at a time is assumed for that clean-up.

MLflow status of a trial's run, plus the tag `optuna.trial_state`: COMPLETE -> FINISHED,
PRUNED -> KILLED, FAIL (an exception, e.g. NaN loss) -> FAILED, killed process -> KILLED.
"""

from __future__ import annotations

import logging
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

from asl_mlops.config import SWEPT_FIELDS, SweepConfig, TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.registry import Registration, is_better, register_if_better
from asl_mlops.tracking import log_figures, log_new_params
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


def make_objective(base: TrainConfig, sweep: SweepConfig, data: PreparedData):
    """The Optuna objective: train one trial's config as a nested run, return its final val_accuracy
    (its final val_loss, the tie-break, goes in the user attr `val_loss`)."""
    client = MlflowClient()

    def objective(trial: optuna.Trial) -> float:
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
        trial.set_user_attr("recognizer_uri", result.recognizer_uri)
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


def open_storage(url: str, heartbeat_interval: int) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: trials of a dead process are failed after 2 missed beats and retried."""
    try:
        shown = hide_password(url)
    except sqlalchemy.exc.ArgumentError:
        raise InputError(f"invalid sweep setting: storage {url!r} is not a SQLAlchemy database URL") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=2 * heartbeat_interval,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=STALE_TRIAL_RETRIES))
    except (sqlalchemy.exc.OperationalError, ModuleNotFoundError) as err:
        raise InputError(f"invalid sweep setting: cannot open storage {shown}: {err}") from None


def study_settings(base: TrainConfig, sweep: SweepConfig, data: PreparedData) -> dict[str, Any]:
    """What makes trials of one study comparable: the fixed training settings, the data, the search."""
    params = {k: v for k, v in base.to_params().items()
              if k not in (*SWEPT_FIELDS, "train_data", "test_data", "cache_dir", "register", "model_name")}
    search = {k: v for k, v in sweep.to_params().items()
              if k not in ("n_trials", "study_name", "heartbeat_interval", "register", "model_name")}
    return {**params, **search, "train_data_hash": data.params["train_data_hash"],
            "val_data_hash": data.params["val_data_hash"],
            "test_data_hash": data.params["test_data_hash"]}


def check_same_settings(study: optuna.Study, settings: dict[str, Any]) -> None:
    """Record the settings on a new study; refuse to resume a study with different ones."""
    previous = study.user_attrs.get("settings")
    if previous is None:
        study.set_user_attr("settings", settings)
        return
    changed = [f"{k} {previous.get(k)!r} -> {v!r}" for k, v in settings.items() if previous.get(k) != v]
    if changed:
        raise InputError(f"invalid sweep setting: study '{study.study_name}' was run with other settings "
                         f"({'; '.join(changed)}); keep them to resume it, or use a new --study-name")


def close_orphaned_runs(study: optuna.Study, experiment_id: str, keep_run_id: str) -> list[str]:
    """Set KILLED the study's MLflow runs a dead process left RUNNING; returns their ids.

    A trial run is left alone while Optuna still counts its trial as RUNNING (its heartbeat is fresh).
    """
    client = MlflowClient()
    running = client.search_runs([experiment_id], filter_string=(
        f"tags.`{STUDY_TAG}` = '{study.study_name}' and attributes.status = 'RUNNING'"))
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed = []
    for run in running:
        number = run.data.tags.get(TRIAL_TAG)
        state = states.get(int(number)) if number is not None else None
        if run.info.run_id == keep_run_id or state == TrialState.RUNNING:
            continue
        if state is not None:
            client.set_tag(run.info.run_id, STATE_TAG, state.name)
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
        logger.warning("closed MLflow run %s (%s) as KILLED: its process died", run.info.run_id,
                       f"trial {number}" if number is not None else "an earlier sweep run")
    return closed


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


def run_sweep(base: TrainConfig, sweep: SweepConfig) -> SweepResult:
    """Create or resume the study, run the missing trials under one parent MLflow run, log the summary
    and register the best trial's model (if `sweep.register`)."""
    url = default_storage_url(mlflow.get_tracking_uri()) if sweep.storage == "auto" else sweep.storage
    storage = open_storage(url, sweep.heartbeat_interval)
    data = prepare_data(base)  # once per sweep; raises InputError on bad CSVs before any run starts
    try:
        existing = len(optuna.load_study(study_name=sweep.study_name, storage=storage).trials)
    except KeyError:
        existing = 0
    # Seeded, and offset by the trials already run, so a resumed study does not repeat early proposals.
    sampler = optuna.samplers.TPESampler(seed=base.seed + existing, n_startup_trials=TPE_STARTUP_TRIALS)
    study = optuna.create_study(study_name=sweep.study_name, storage=storage, direction="maximize",
                                sampler=sampler, pruner=make_pruner(sweep, base.epochs), load_if_exists=True)
    check_same_settings(study, study_settings(base, sweep, data))
    fail_stale_trials(study)
    remaining = sweep.n_trials - finished_count(study)
    logger.info("study '%s' in %s: %d of %d trials finished, running %d", sweep.study_name, hide_password(url),
                sweep.n_trials - max(remaining, 0), sweep.n_trials, max(remaining, 0))

    fixed = {k: v for k, v in base.to_params().items() if k not in (*SWEPT_FIELDS, "register", "model_name")}
    tags = {STUDY_TAG: sweep.study_name, ROLE_TAG: "sweep", "optuna.storage": hide_password(url)}
    with mlflow.start_run(run_name=f"sweep-{sweep.study_name}", tags=tags) as parent:
        log_new_params({**fixed, **sweep.to_params(), **data.params})
        close_orphaned_runs(study, parent.info.experiment_id, parent.info.run_id)
        if remaining > 0:
            study.optimize(make_objective(base, sweep, data), n_trials=remaining, catch=TRIAL_ERRORS,
                           gc_after_trial=True, callbacks=[optuna.study.MaxTrialsCallback(
                               sweep.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))])
        fail_stale_trials(study)
        close_orphaned_runs(study, parent.info.experiment_id, parent.info.run_id)
        best = log_study_summary(study)
        registration = None
        if best is not None and sweep.register:
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
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return SweepResult(sweep.study_name, hide_password(url), parent.info.run_id, dict(states),
                       best.number if best else None, best.value if best else None,
                       best.user_attrs.get("val_loss") if best else None,
                       dict(best.params) if best else {}, best.user_attrs.get("mlflow_run_id") if best else None,
                       registration)
