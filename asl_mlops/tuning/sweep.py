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
`optuna.db` beside the MLflow store) with heartbeats on. `n_trials` is the study's total of
complete + pruned trials, so a re-run under the same study name runs only the missing ones. A trial
of a killed process stops beating; it is failed and `RetryHeartbeatStaleTrialCallback` queues a retry
with the same params, which counts toward the budget. Each invocation of `run_sweep` opens a NEW parent
MLflow run (tagged `optuna.study_name`), which also works under `mlflow run` (that owns the run); its
summary (best params, CSV, figures) covers the whole study.

Workers: any number of processes may run `run_sweep` on one study at once (one storage server, one
tracking server). `run_trials` keeps the budget exact with Optuna's ask-and-tell: a worker asks for a
trial only while complete + pruned + running trials are fewer than `n_trials`, and a trial that two
workers asked for together beyond the budget is told FAIL before it samples a parameter (user attr
`over_budget`; `within_budget`). A worker whose remaining budget is held by other workers' running
trials waits for them, so it can take over if one dies (its retry) or fails; so every worker ends only
when the study has `n_trials`, with nothing RUNNING left by a dead process. Each worker's TPE sampler has
its own seed and `constant_liar`, so parallel workers do not propose the same parameters. Liveness is a
heartbeat: Optuna's for trials (recorded by `TrialHeartbeat`), the tag `asl_mlops.heartbeat` (refreshed
every heartbeat_interval) for sweep runs; `close_orphaned_runs` closes as KILLED only runs whose
heartbeat stopped. The best trial is registered after the budget is done, under the registry's lock, so
the workers register it once (asl_mlops.registry), then validated by the gate, which promotes it if it
passes (asl_mlops.gate).

MLflow status of a trial's run, plus the tag `optuna.trial_state`: COMPLETE -> FINISHED,
PRUNED -> KILLED, FAIL (an exception, e.g. NaN loss) -> FAILED, killed process -> KILLED.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import optuna
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from asl_mlops.config import (
    SWEPT_FIELDS,
    TUNE_REGISTRY,
    GateConfig,
    RegistryConfig,
    SweepConfig,
    TrainConfig,
)
from asl_mlops.errors import InputError
from asl_mlops.registry import Registration, is_better
from asl_mlops.tracking import (
    check_tracking_server,
    ensure_experiment,
    log_figures,
    log_new_params,
)
from asl_mlops.training.inputs import PreparedData, prepare_data
from asl_mlops.tuning.runs import (
    ROLE_TAG,
    STUDY_TAG,
    RunHeartbeat,
    close_orphaned_runs,
    settle_other_sweep_runs,
)
from asl_mlops.tuning.space import (
    OBJECTIVE,
    TRIAL_ERRORS,
    make_objective,
    make_pruner,
    make_sampler,
    worker_seed,
)
from asl_mlops.tuning.storage import (
    TrialHeartbeat,
    check_same_settings,
    default_storage_url,
    fail_stale_trials,
    hide_password,
    load_or_create_study,
    open_storage,
    study_settings,
)
from asl_mlops.gate import Verdict, register_and_validate

logger = logging.getLogger(__name__)


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
    registration: Registration | Verdict | None = None  # Verdict: registered and validated now

    @classmethod
    def of_study(cls, study: optuna.Study, storage_url: str, parent_run_id: str,
                 registration: Registration | Verdict | None = None) -> "SweepResult":
        """The result as the study stands now: its trial counts and its best trial (`best_trial`)."""
        states = dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))
        best = best_trial(study)
        if best is None:
            return cls(study.study_name, hide_password(storage_url), parent_run_id, states, registration=registration)
        return cls(study.study_name, hide_password(storage_url), parent_run_id, states, best.number, best.value,
                   best.user_attrs.get("val_loss"), dict(best.params), best.user_attrs.get("mlflow_run_id"),
                   registration)

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


def within_budget(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether `trial` may run: fewer than `n_trials` trials before it are complete, pruned, running or waiting
    to run. The storage numbers trials in the order they are created, under a lock on the study, so of two
    workers that asked for the last place at the same moment, the later yields."""
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(1 for t in trial.study.get_trials(deepcopy=False, states=counted) if t.number < trial.number)
    return ahead < n_trials


def run_trial(study: optuna.Study, storage: optuna.storages.RDBStorage, objective: Any,
              n_trials: int) -> TrialState | None:
    """Ask for a trial, run `objective` on it while it beats, and tell the study how it ended; returns its state,
    or None if it was not run because other workers' trials hold the budget (`within_budget`).

    Ask-and-tell rather than `study.optimize` because only here can a trial be refused before it samples a
    parameter, without raising: it is told FAIL with the user attr `over_budget` and no parameters, so TPE
    ignores it. (`MaxTrialsCallback` stops a study after a trial ends, so workers that each started one at the
    same moment would overshoot the budget by up to workers - 1 trials.) What optimize did besides is here:
    the trial's heartbeat, telling PRUNED or FAIL, logging how the trial ended."""
    with warnings.catch_warnings():  # Optuna warns that its heartbeat needs optimize(); TrialHeartbeat beats
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()
    with TrialHeartbeat(storage, study, trial):
        if not within_budget(trial, n_trials):
            trial.set_user_attr("over_budget", True)
            study.tell(trial, state=TrialState.FAIL)
            logger.info("trial %d not run: the study's %d trials are held by other workers", trial.number, n_trials)
            return None
        try:
            value = objective(trial)
        except optuna.TrialPruned as pruned:  # Optuna's pruning callback stopped the training
            study.tell(trial, state=TrialState.PRUNED)
            logger.info("trial %d pruned: %s", trial.number, pruned)
            return TrialState.PRUNED
        except TRIAL_ERRORS as err:
            study.tell(trial, state=TrialState.FAIL)
            logger.warning("trial %d failed with parameters %s: %r", trial.number, trial.params, err, exc_info=True)
            return TrialState.FAIL
        except (Exception, KeyboardInterrupt):  # a bug or an interrupt: stop the sweep, leave no RUNNING trial
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
    logger.info("trial %d finished: %s %.4f with parameters %s", trial.number, OBJECTIVE, value, trial.params)
    return TrialState.COMPLETE


def run_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, objective: Any, n_trials: int,
               poll_seconds: float) -> int:
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
        state = run_trial(study, storage, objective, n_trials)
        if state is None:  # another worker's trial took the last place: count again
            continue
        ran += 1
        failures += state == TrialState.FAIL
        gc.collect()  # the trial's model and graphs, before the next trial builds its own


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


def run_sweep(base: TrainConfig, sweep: SweepConfig, registry: RegistryConfig = TUNE_REGISTRY,
              gate: GateConfig = GateConfig()) -> SweepResult:
    """Create or join the study, run trials until it has `n_trials` under one parent MLflow run (this
    worker's), log the summary and register the best trial's model (if `registry.register`).

    Storage and tracking server are checked first: a bad or unreachable one is an InputError before
    any data is read."""
    seed = worker_seed(base.seed)
    url, storage, data, study = open_study(base, sweep, seed)
    fail_stale_trials(study)
    logger.info("study '%s' in %s: %d of %d trials finished (sampler seed %d)", sweep.study_name,
                hide_password(url), finished_count(study), sweep.n_trials, seed)

    if finished_count(study) >= sweep.n_trials and not mlflow.active_run() and not os.environ.get("MLFLOW_RUN_ID"):
        return finished_study(study, sweep, url, registry, gate)  # nothing to run: no new (empty) sweep run

    fixed = {k: v for k, v in base.to_params().items() if k not in SWEPT_FIELDS}
    tags = {STUDY_TAG: sweep.study_name, ROLE_TAG: "sweep", "optuna.storage": hide_password(url),
            "optuna.sampler_seed": str(seed)}
    with mlflow.start_run(run_name=f"sweep-{sweep.study_name}", tags=tags) as parent, \
            RunHeartbeat(parent.info.run_id, sweep.heartbeat_interval):
        log_new_params({**fixed, **sweep.to_params(), **registry.to_params(), **data.params})
        close_orphaned_runs(study, parent.info.experiment_id, parent.info.run_id)
        poll = min(max(sweep.heartbeat_interval / 2, 0.5), 10.0)
        ran = run_trials(study, storage, make_objective(base, sweep, data), sweep.n_trials, poll)
        mlflow.log_metric("trials_run_by_this_worker", float(ran))
        fail_stale_trials(study)
        close_orphaned_runs(study, parent.info.experiment_id, parent.info.run_id)
        best = log_study_summary(study)
    registration = None
    if best is not None and registry.register:
        # Every worker gets here only once the budget is done; the registry's lock and its check for an
        # already registered run make the best trial's model registered once, whoever comes first. After the
        # sweep run and its heartbeat thread have ended: mlflow.models.evaluate (the gate) imports MLflow's
        # flavors under its import-hook lock, and an MLflow call from another thread meanwhile deadlocks it.
        registration = register_and_validate(
            best.user_attrs["mlflow_run_id"], best.user_attrs["recognizer_uri"], registry.model_name,
            tags={"study_name": sweep.study_name, "trial_number": best.number,
                  "sweep_run_id": parent.info.run_id}, gate=gate,
            description=(f"Best trial ({best.number}) of Optuna study '{sweep.study_name}', sweep run "
                         f"{parent.info.run_id}: val_accuracy {best.value:.4f}, val_loss "
                         f"{best.user_attrs.get('val_loss', float('nan')):.4f}, params "
                         + ", ".join(f"{k}={v:.4g}" for k, v in best.params.items()) + "."))
        client = MlflowClient()
        client.set_tag(parent.info.run_id, "registered_version", registration.version)
        client.set_tag(parent.info.run_id, "champion_decision", registration.decision)
    settle_other_sweep_runs(sweep.study_name, parent.info.experiment_id, parent.info.run_id)
    return SweepResult.of_study(study, url, parent.info.run_id, registration)


def finished_study(study: optuna.Study, sweep: SweepConfig, url: str, registry: RegistryConfig,
                   gate: GateConfig = GateConfig()) -> SweepResult:
    """The result of a study that already has its trials, reported from the study and its latest sweep run
    without starting a run. Its best model is registered and validated if it is not yet (`register_and_validate`
    registers a run once)."""
    best = best_trial(study)
    earlier = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1,
                                 filter_string=f"tags.`{STUDY_TAG}` = '{sweep.study_name}' and "
                                               f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"])
    parent = earlier[0].info.run_id if earlier else ""
    logger.info("study '%s' already has %d trials: nothing to run", sweep.study_name, finished_count(study))
    registration = None
    if best is not None and registry.register:
        registration = register_and_validate(best.user_attrs["mlflow_run_id"], best.user_attrs["recognizer_uri"],
                                             registry.model_name, tags={"study_name": sweep.study_name,
                                                                     "trial_number": best.number, "sweep_run_id": parent},
                                             gate=gate)
    return SweepResult.of_study(study, url, parent, registration)
