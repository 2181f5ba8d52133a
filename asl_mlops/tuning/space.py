"""What a sweep searches: the search space (trial -> TrainConfig), the objective, the sampler and the pruner.
"""

from __future__ import annotations

import hashlib
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
