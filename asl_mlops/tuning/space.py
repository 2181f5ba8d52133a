"""What a sweep searches: the search space (trial -> TrainConfig), the objective, the sampler and the pruner.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import warnings
from typing import Any

import keras
import mlflow
import optuna
import tensorflow as tf
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from optuna_integration import KerasPruningCallback

from asl_mlops.config import SweepConfig, TrainConfig
from asl_mlops.train import train_and_evaluate
from asl_mlops.training.inputs import PreparedData
from asl_mlops.tuning.runs import ROLE_TAG, STATE_TAG, STUDY_TAG, TRIAL_TAG

OBJECTIVE = "val_accuracy"  # reported each epoch for pruning; the trial's value is the final one
# Trial errors that fail one trial but not the sweep: numeric blow-ups (NaN loss raises
# FloatingPointError) and TensorFlow runtime errors. Anything else is a bug and stops the sweep.
TRIAL_ERRORS: tuple[type[Exception], ...] = (ArithmeticError, tf.errors.OpError)
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the space (Optuna's 10 is a whole 10-trial sweep)


class BudgetSpent(Exception):
    """A trial started beyond the study's n_trials because another worker started one at the same moment."""


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


# Optuna logs a trial's exception from this module's logger; the logger's name is the only handle it offers.
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
