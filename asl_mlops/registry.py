"""Registry stage: register a cleanly finished run's model, and move the `champion` alias only if it
does not regress.

The no-regression rule compares the `val_accuracy` tag of the new version with the current champion's,
and only when both were validated on the same rows (`val_data_hash` tag: the training CSV, seed and
val_fraction together). Accuracies measured on different data are not comparable, so a version trained on other data never takes the alias by
itself: the decision is logged, and a person moves it with `asl-mlops registry promote VERSION`.
Every decision, with both numbers, is a log line and a `champion_decision` tag on the version and
on the run that produced it. Assumes one writer at a time per registered model (no locking).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from asl_mlops.errors import InputError

logger = logging.getLogger(__name__)

CHAMPION = "champion"
DEFAULT_MODEL_NAME = "asl-recognizer"
# Run params copied onto each version as tags, so `registry show` and the UI say what produced it.
PARAM_TAGS = ("architecture", "learning_rate", "decay_rate", "l2", "epochs", "batch_size", "seed",
              "train_data_hash", "val_data_hash", "test_data_hash")


@dataclass(frozen=True)
class Registration:
    """The outcome of `register_if_better`."""

    model_name: str
    version: str  # as a string, whatever the store returns
    promoted: bool  # the champion alias now points at `version`
    decision: str  # one line, with both accuracies


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def champion_decision(val_accuracy: float, data_hash: str, champion: ModelVersion | None) -> Decision:
    """The no-regression rule: promote only on a strictly higher val_accuracy on the same validation rows."""
    if champion is None:
        return Decision(True, f"no champion yet; val_accuracy {val_accuracy:.4f}")
    champ_tags = champion.tags or {}
    champ_hash = champ_tags.get("val_data_hash", "")
    champ_val = champ_tags.get("val_accuracy")
    if champ_val is None:
        return Decision(False, f"kept champion v{champion.version}: it has no val_accuracy tag to compare with "
                               f"{val_accuracy:.4f}; promote by hand if wanted")
    champ_val_f = float(champ_val)
    if champ_hash != data_hash:
        return Decision(False, f"kept champion v{champion.version}: trained on other data ({champ_hash[:12] or '?'}, "
                               f"val_accuracy {champ_val_f:.4f}) than this version ({data_hash[:12] or '?'}, "
                               f"val_accuracy {val_accuracy:.4f}); not comparable, promote by hand if wanted")
    if val_accuracy > champ_val_f:
        return Decision(True, f"val_accuracy {val_accuracy:.4f} > champion v{champion.version}'s {champ_val_f:.4f} "
                              f"on the same data")
    return Decision(False, f"kept champion v{champion.version}: val_accuracy {val_accuracy:.4f} <= its "
                           f"{champ_val_f:.4f} on the same data")


def current_champion(model_name: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The version the `champion` alias points at, or None if there is none (or no such model)."""
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise


def register_if_better(run_id: str, model_uri: str, model_name: str = DEFAULT_MODEL_NAME, *,
                       tags: dict[str, Any] | None = None, description: str | None = None) -> Registration:
    """Register `model_uri` (produced by run `run_id`) as a new version of `model_name`; move `champion`
    to it only under the no-regression rule.

    Metrics and the data hash are read from the run itself (`final_val_accuracy`, `test_accuracy`,
    `val_data_hash`), so any finished run can be registered. Only a FINISHED run is accepted, and a
    run already registered under `model_name` is not registered twice (a re-run sweep returns its version).
    """
    client = MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise InputError(f"run {run_id} is {run.info.status}: only a run that finished cleanly is registered")
    if "final_val_accuracy" not in run.data.metrics:
        raise InputError(f"run {run_id} has no final_val_accuracy metric: it was not made by asl-mlops train/tune")
    val_accuracy = run.data.metrics["final_val_accuracy"]
    data_hash = run.data.params.get("val_data_hash", "")

    existing = [v for v in client.search_model_versions(f"name = '{model_name}'") if v.run_id == run_id]
    if existing:
        version = existing[0]
        champion = current_champion(model_name, client)
        promoted = champion is not None and str(champion.version) == str(version.version)
        decision = f"run {run_id} is already version {version.version}; nothing registered"
        logger.info("%s: %s", model_name, decision)
        return Registration(model_name, str(version.version), promoted, decision)

    version_tags = {"val_accuracy": f"{val_accuracy:.6f}", "run_id": run_id,
                    **{k: run.data.params[k] for k in PARAM_TAGS if k in run.data.params}}
    if "test_accuracy" in run.data.metrics:
        version_tags["test_accuracy"] = f"{run.data.metrics['test_accuracy']:.6f}"
    version_tags.update({k: str(v) for k, v in (tags or {}).items()})
    champion = current_champion(model_name, client)  # before registering, so it is never the new version
    model_version = mlflow.register_model(model_uri, model_name, tags=version_tags)
    version = str(model_version.version)
    client.update_model_version(model_name, version, description=description or
                                f"Trained by MLflow run {run_id}; val_accuracy {val_accuracy:.4f}.")

    decision = champion_decision(val_accuracy, data_hash, champion)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    verdict = f"{'promoted' if decision.promote else 'not promoted'}: {decision.reason}"
    client.set_model_version_tag(model_name, version, "champion_decision", verdict)
    client.set_tag(run_id, "champion_decision", f"{model_name} v{version} {verdict}")
    logger.info("registered %s version %s; %s", model_name, version, verdict)
    return Registration(model_name, version, decision.promote, verdict)


def promote(version: str, model_name: str = DEFAULT_MODEL_NAME) -> Registration:
    """Move `champion` to `version` by hand (no rule applied; the decision is tagged on the version)."""
    client = MlflowClient()
    try:
        target = client.get_model_version(model_name, str(version))
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise InputError(f"registered model '{model_name}' has no version {version}") from None
        raise
    before = current_champion(model_name, client)
    client.set_registered_model_alias(model_name, CHAMPION, str(target.version))
    verdict = f"promoted by hand (champion was {f'v{before.version}' if before else 'unset'})"
    client.set_model_version_tag(model_name, target.version, "champion_decision", verdict)
    logger.info("%s version %s: %s", model_name, target.version, verdict)
    return Registration(model_name, str(target.version), True, verdict)


def list_versions(model_name: str = DEFAULT_MODEL_NAME) -> list[tuple[ModelVersion, list[str]]]:
    """All versions of `model_name`, newest first, each with its aliases; InputError if there is no such model."""
    client = MlflowClient()
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise InputError(f"no registered model named '{model_name}'") from None
        raise
    # Version search results carry no aliases in every store; the registered model has them all.
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{model_name}'")
    return [(v, sorted(aliases.get(str(v.version), []))) for v in sorted(versions, key=lambda v: -int(v.version))]


def versions_table(versions: list[tuple[ModelVersion, list[str]]]) -> str:
    """A plain-text table: version, aliases, val/test accuracy, data hash, run, last champion decision."""
    header = ("version", "aliases", "val_acc", "test_acc", "val_data", "run_id", "champion_decision")
    rows = [header]
    for v, aliases in versions:
        tags = v.tags or {}
        rows.append((v.version, ",".join(aliases) or "-", _short_float(tags.get("val_accuracy")),
                     _short_float(tags.get("test_accuracy")), tags.get("val_data_hash", "?")[:12],
                     v.run_id or "-", tags.get("champion_decision", "")))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]) for r in rows)


def _short_float(value: str | None) -> str:
    return f"{float(value):.4f}" if value is not None else "-"
