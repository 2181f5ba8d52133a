"""Optuna storage: opened with retries (SQLite beside the tracking store, or a server), trial heartbeats, and the check that a resumed study keeps its settings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from asl_mlops.config import SWEPT_FIELDS, SweepConfig, TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.training.inputs import PreparedData

logger = logging.getLogger(__name__)
STALE_TRIAL_RETRIES = 2  # a trial killed with its process is retried at most this often
STORAGE_CONNECT_TIMEOUT = 10  # seconds to wait for a storage server to answer
SCHEMA_RETRIES = 5  # workers starting together race to create the storage's tables


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
              if k not in (*SWEPT_FIELDS, "train_data", "test_data", "cache_dir", "ensemble_members",
                           "resolved_architecture")}  # (they follow from the others and the data)
    params["architecture"] = base.resolved_architecture  # 'auto' and what it chose are the same study
    search = {k: v for k, v in sweep.to_params().items()
              if k not in ("n_trials", "study_name", "heartbeat_interval", "workers")}
    return {**params, **search, "train_data_hash": data.params["train_data_hash"],
            "val_data_hash": data.params["val_data_hash"],
            "test_data_hash": data.params["test_data_hash"]}


def check_same_settings(study: optuna.Study, settings: dict[str, Any]) -> None:
    """Record the settings on a new study; refuse to resume a study with different ones."""
    previous = study.user_attrs.get("settings")
    if previous is None:
        study.set_user_attr("settings", settings)
        return
    # A setting the study does not record is newer than the study: it ran with that setting's default.
    recorded = {**TrainConfig().to_params(), **SweepConfig().to_params(), **previous}
    changed = [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in settings.items() if recorded.get(k) != v]
    if changed:
        raise InputError(f"invalid sweep setting: study '{study.study_name}' was run with other settings "
                         f"({'; '.join(changed)}); keep them to resume it, or use a new --study-name")


class TrialHeartbeat:
    """Records a trial's heartbeat in the storage now and every heartbeat interval from a daemon thread, as
    `Study.optimize` does for the trials it runs. Optuna beats only inside optimize ("If you use ask() and tell()
    instead, it will not work", RDBStorage's docs); the sweep asks and tells (`sweep.run_trial`), so it beats
    here, through the storage's `record_heartbeat`. A trial whose beats stop (its process died) is failed by
    `fail_stale_trials` and retried."""

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study, trial: optuna.Trial) -> None:
        self.storage, self.number = storage, trial.number
        self.trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"trial-heartbeat-{trial.number}", daemon=True)

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self._stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as err:
                # a missed beat is not fatal (the trial goes stale only after two); the next one may get through
                logger.warning("heartbeat of trial %d failed: %s", self.number, _one_line(err.__cause__ or err))

    def __enter__(self) -> "TrialHeartbeat":
        if self.storage.get_heartbeat_interval() is not None:
            self.storage.record_heartbeat(self.trial_id)  # the trial can go stale only once it has beaten
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check: fail (and queue retries of) trials whose process stopped beating."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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
