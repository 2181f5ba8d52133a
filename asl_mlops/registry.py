"""Registry stage: register a cleanly finished run's model as the `challenger`, and move the `champion` alias
to a version only when the validation gate (asl_mlops.gate) passed it and it does not regress.

The no-regression rule compares the new version's `val_accuracy` and `val_loss` tags (stored at full
precision) with the current champion's by `is_better`, the one ordering of models that the sweep uses
too: higher validation accuracy wins, an exact accuracy tie goes to the lower validation loss, and a
full tie keeps the champion (with the gate's `min_gain` > 0: higher by at least that much). It compares
only versions validated on the same rows (`val_data_hash` tag: the training CSV, val_split, val_fraction
and split_seed together). Scores measured on different data are not comparable, so a version trained on
other data never takes the alias by itself: a person moves it with `asl-mlops registry promote VERSION`.
Every decision, with the numbers that made it, is a log line and a `champion_decision` tag on the
version and on the run that produced it.

Concurrency: registrations and promotions of one model are serialised by `registry_lock`, a lease held as
a registered model named `<model>.lock` (creating a registered model is an atomic insert in every MLflow
store, so exactly one writer holds it; it is deleted when the step ends, and a holder that died is
overtaken when its lease expires). `register` registers and sets `challenger` under it; the gate's slow
evaluation runs outside it; `promote_if_better` compares with the champion of that moment and moves the
aliases under it, so two gates at once cannot leave the worse model champion. A version whose gate was
interrupted keeps `challenger` (if no newer version took it) and no `validation_status` tag: run
`asl-mlops registry validate --version V --promote`.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shlex
import socket
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from asl_mlops.config import CHAMPION, DEFAULT_MODEL_NAME
from asl_mlops.errors import InputError

logger = logging.getLogger(__name__)

# Run params copied onto each version as tags, so `registry show` and the UI say what produced it.
#: Registration lock: a registered model `<name>.lock`, held at most this long (a registration takes seconds).
LOCK_SUFFIX = ".lock"
LOCK_LEASE_SECONDS = 120.0
LOCK_WAIT_SECONDS = 300.0
DECISION_TAG = "champion_decision"
#: The alias of the newest registered version that the validation gate has not promoted (yet).
CHALLENGER = "challenger"
#: The validation gate's verdict on a version: passed or failed (asl_mlops.gate).
VALIDATION_STATUS_TAG = "validation_status"
#: The gate's tag of each check on a version: `validation.<check>` = "value threshold pass|fail".
CHECK_TAG_PREFIX = "validation."
#: The version description's verdict section starts with this heading (the gate writes it, `promote` rewrites it).
SECTION_HEADING = "### Validation gate"
PARAM_TAGS = ("architecture", "resolved_architecture", "learning_rate", "decay_rate", "l2", "epochs", "batch_size",
              "seed", "train_data_hash", "val_data_hash", "test_data_hash")


@dataclass(frozen=True)
class Registration:
    """The outcome of `register`, `promote_if_better` or `promote`."""

    model_name: str
    version: str  # as a string, whatever the store returns
    promoted: bool  # the champion alias now points at `version`
    decision: str  # one line, with the numbers compared
    registered: bool = True  # False: the run was already this version


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def is_better(val_accuracy: float, val_loss: float | None,
              other_accuracy: float, other_loss: float | None) -> bool:
    """The one ordering of models, for the champion rule and the sweep's best trial: strictly higher
    val_accuracy wins; on an exact accuracy tie, strictly lower val_loss wins. A tie on both, or a tie
    with either loss unknown, is not better, so the incumbent stays. Compared at full precision."""
    if val_accuracy != other_accuracy:
        return val_accuracy > other_accuracy
    return val_loss is not None and other_loss is not None and val_loss < other_loss


def _shown(a: float, b: float) -> tuple[str, str]:
    """`a` and `b` with 4 decimals, or with as many more as it takes to show that they differ."""
    if a != b:
        for decimals in range(4, 18):
            if f"{a:.{decimals}f}" != f"{b:.{decimals}f}":
                return f"{a:.{decimals}f}", f"{b:.{decimals}f}"
        return repr(a), repr(b)
    return f"{a:.4f}", f"{b:.4f}"


def _optional_float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def champion_decision(val_accuracy: float, val_loss: float | None, data_hash: str,
                      champion: ModelVersion | None, min_gain: float = 0.0) -> Decision:
    """The no-regression rule: promote only if `is_better` than the champion, on the same validation rows, and,
    with `min_gain` > 0, only if val_accuracy is higher by at least `min_gain`."""
    loss_text = f", val_loss {val_loss:.4f}" if val_loss is not None else ""
    if champion is None:
        return Decision(True, f"no champion yet; val_accuracy {val_accuracy:.4f}{loss_text}")
    champ_tags = champion.tags or {}
    champ_hash = champ_tags.get("val_data_hash", "")
    champ_val = champ_tags.get("val_accuracy")
    if champ_val is None:
        return Decision(False, f"kept champion v{champion.version}: it has no val_accuracy tag to compare with "
                               f"{val_accuracy:.4f}; promote by hand if wanted")
    champ_val_f = float(champ_val)
    champ_loss = _optional_float(champ_tags.get("val_loss"))
    if champ_hash != data_hash:
        return Decision(False, f"kept champion v{champion.version}: trained on other data ({champ_hash[:12] or '?'}, "
                               f"val_accuracy {champ_val_f:.4f}) than this version ({data_hash[:12] or '?'}, "
                               f"val_accuracy {val_accuracy:.4f}); not comparable, promote by hand if wanted")
    promote = is_better(val_accuracy, val_loss, champ_val_f, champ_loss)
    new_acc, champ_acc = _shown(val_accuracy, champ_val_f)
    v = champion.version
    if min_gain > 0:
        gain = val_accuracy - champ_val_f
        if gain >= min_gain:
            return Decision(True, f"val_accuracy {new_acc} >= champion v{v}'s {champ_acc} + {min_gain:g} on the "
                                  "same data")
        return Decision(False, f"kept champion v{v}: val_accuracy {new_acc} gains {gain:+.4f} over its {champ_acc} "
                               f"on the same data, less than min_gain {min_gain:g}")
    if val_accuracy > champ_val_f:
        return Decision(promote, f"val_accuracy {new_acc} > champion v{v}'s {champ_acc} on the same data")
    if val_accuracy < champ_val_f:
        return Decision(promote, f"kept champion v{v}: val_accuracy {new_acc} < its {champ_acc} on the same data")
    if val_loss is None or champ_loss is None:
        unknown = "this version" if val_loss is None else "the champion"
        return Decision(promote, f"kept champion v{v}: val_accuracy {new_acc} = its {champ_acc} on the same data "
                                 f"and {unknown} has no val_loss to break the tie")
    new_l, champ_l = _shown(val_loss, champ_loss)
    if promote:
        return Decision(promote, f"val_accuracy {new_acc} = champion v{v}'s {champ_acc}, val_loss {new_l} < "
                                 f"{champ_l} on the same data")
    return Decision(promote, f"kept champion v{v}: val_accuracy {new_acc} = its {champ_acc}, val_loss {new_l} >= "
                             f"{champ_l} on the same data")


def current_champion(model_name: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The version the `champion` alias points at, or None if there is none (or no such model)."""
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):  # no such registered model
            return None
        # The model exists but the alias does not: MLflow's stores say INVALID_PARAMETER_VALUE,
        # "Registered model alias champion not found."
        if (err.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
                and f"alias {CHAMPION} not found" in err.message):
            return None
        raise


def _error_is(err: MlflowException, *codes: int) -> bool:
    return err.error_code in {ErrorCode.Name(code) for code in codes}


@contextmanager
def registry_lock(model_name: str, client: MlflowClient | None = None, *, lease: float = LOCK_LEASE_SECONDS,
                  wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the registration lock of `model_name` (see the module docstring) for the duration of the block."""
    client = client or MlflowClient()
    lock = f"{model_name}{LOCK_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
    deadline = time.monotonic() + wait
    while True:
        try:
            client.create_registered_model(lock, tags={"holder": holder, "expires": repr(time.time() + lease)},
                                           description=f"asl-mlops registration lock of '{model_name}': held while "
                                                       "a version is registered and decided, then deleted.")
            break
        except MlflowException as err:
            # Taken (or deleted between MLflow's insert and its read-back): wait, or overtake an expired lease.
            if not _error_is(err, RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST):
                raise
        try:
            held = client.get_registered_model(lock)
            if float(held.tags.get("expires", "0")) < time.time():
                logger.warning("registration lock of '%s' held by %s expired; taking it over", model_name,
                               held.tags.get("holder", "?"))
                client.delete_registered_model(lock)
                continue
        except MlflowException as err:
            if not _error_is(err, RESOURCE_DOES_NOT_EXIST):
                raise
            continue
        if time.monotonic() > deadline:
            raise InputError(f"registered model '{model_name}': another registration has held its lock ('{lock}') "
                             f"for over {wait:.0f} s; retry later, or delete '{lock}' if no registration is running")
        time.sleep(0.1 + 0.2 * random.random())
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as err:
            if not _error_is(err, RESOURCE_DOES_NOT_EXIST):
                raise


def version_metrics(version: ModelVersion) -> tuple[float, float | None, str]:
    """(val_accuracy, val_loss, val_data_hash) as stored in a version's tags."""
    tags = version.tags or {}
    return float(tags["val_accuracy"]), _optional_float(tags.get("val_loss")), tags.get("val_data_hash", "")


#: The run's final metrics a version's description lists (what its logged model's page shows, per dataset).
FINAL_METRICS = (("val_accuracy", "validation rows"), ("val_loss", "validation rows"), ("test_accuracy", "test data"),
                 ("test_loss", "test data"), ("test_errors", "test data"))


def version_decision(version: ModelVersion, champion: ModelVersion | None, min_gain: float = 0.0) -> Decision:
    """The champion rule for a registered `version` against `champion` (None: there is none), from their tags."""
    if champion is not None and str(champion.version) == str(version.version):
        return Decision(True, "already champion")
    if "val_accuracy" not in (version.tags or {}):
        return Decision(False, f"version {version.version} has no val_accuracy tag to compare; promote by hand")
    return champion_decision(*version_metrics(version), champion, min_gain=min_gain)


def final_metrics_section(metrics: dict[str, float]) -> str:
    """A Markdown table of the run's final metrics (those it has), for the version's description: MLflow's OSS
    registry keeps no metrics on a version, so its page shows them only here and through its source model."""
    rows = [f"| {key} | {metrics[key]:.6g} | {data} |" for key, data in FINAL_METRICS if key in metrics]
    if not rows:
        return ""
    return "\n".join(["Final metrics", "", "| metric | value | data |", "|---|---|---|", *rows])


def register(run_id: str, model_uri: str, model_name: str = DEFAULT_MODEL_NAME, *,
             tags: dict[str, Any] | None = None, description: str | None = None) -> Registration:
    """Register `model_uri` (produced by run `run_id`) as a new version of `model_name` with the alias
    `challenger`; `champion` moves only through the validation gate (asl_mlops.gate).

    Metrics and the data hash are read from the run itself (`val_accuracy`, `val_loss`, `test_accuracy`,
    `val_data_hash`), so any finished run can be registered; they are stored as version
    tags at full precision, which the gain check compares. Only a FINISHED run is accepted, and a
    run already registered under `model_name` is not registered twice (a re-run sweep returns its version,
    `promoted` saying whether it is champion and `registered` False).
    """
    client = MlflowClient()
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise InputError(f"run {run_id} is {run.info.status}: only a run that finished cleanly is registered")
    metrics = run.data.metrics
    if "val_accuracy" not in metrics:
        raise InputError(f"run {run_id} has no val_accuracy metric: it was not made by asl-mlops train/tune")
    val_accuracy = metrics["val_accuracy"]
    val_loss = metrics.get("val_loss")

    # repr: the shortest text that reads back as the same float, so the rule compares what was measured.
    version_tags = {"val_accuracy": repr(float(val_accuracy)), "run_id": run_id,
                    **{k: run.data.params[k] for k in PARAM_TAGS if k in run.data.params}}
    if val_loss is not None:
        version_tags["val_loss"] = repr(float(val_loss))
    if "test_accuracy" in run.data.metrics:
        version_tags["test_accuracy"] = repr(float(run.data.metrics["test_accuracy"]))
    version_tags.update({k: str(v) for k, v in (tags or {}).items()})
    with registry_lock(model_name, client):
        existing = [v for v in client.search_model_versions(f"name = '{model_name}'") if v.run_id == run_id]
        if existing:
            version = existing[0]
            champion = current_champion(model_name, client)
            promoted = champion is not None and str(champion.version) == str(version.version)
            decision = f"run {run_id} is already version {version.version}; nothing registered"
            logger.info("%s: %s", model_name, decision)
            return Registration(model_name, str(version.version), promoted, decision, registered=False)
        model_version = mlflow.register_model(model_uri, model_name, tags=version_tags)
        version = str(model_version.version)
        described = description or f"Trained by MLflow run {run_id}."
        client.update_model_version(model_name, version, description=f"{described}\n\n{final_metrics_section(metrics)}")
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    decision = f"registered as {CHALLENGER}; val_accuracy {val_accuracy:.4f}"
    logger.info("%s version %s: %s", model_name, version, decision)
    return Registration(model_name, version, False, decision)


def promote_if_better(model_name: str, version: str, *, passed: bool, failed: str = "", min_gain: float = 0.0,
                      client: MlflowClient | None = None) -> Registration:
    """The last step of the validation gate (asl_mlops.gate): under `registry_lock`, compare `version` with
    the champion of this moment (`champion_decision`, with `min_gain`) and move `champion` to it only if the gate
    `passed` and it is still better; then `challenger` leaves it. `failed`: the failed checks, for the decision.
    The decision is tagged on the version (`champion_decision`) and on the run that produced it."""
    client = client or MlflowClient()
    with registry_lock(model_name, client):
        target = client.get_model_version(model_name, str(version))
        decision = version_decision(target, current_champion(model_name, client), min_gain)
        if not passed:
            decision = Decision(False, f"failed {failed}")
        elif decision.promote:
            client.set_registered_model_alias(model_name, CHAMPION, str(target.version))
            if str((client.get_registered_model(model_name).aliases or {}).get(CHALLENGER)) == str(target.version):
                client.delete_registered_model_alias(model_name, CHALLENGER)
            decision = Decision(True, f"passed every check; {decision.reason}")
        verdict = f"{'promoted' if decision.promote else 'not promoted'}: {decision.reason}"
        client.set_model_version_tag(model_name, str(target.version), DECISION_TAG, verdict)
        if target.run_id:
            client.set_tag(target.run_id, DECISION_TAG, f"{model_name} v{target.version} {verdict}")
    logger.info("%s version %s: %s", model_name, target.version, verdict)
    return Registration(model_name, str(target.version), decision.promote, verdict)


def promote(version: str, model_name: str = DEFAULT_MODEL_NAME) -> Registration:
    """Move `champion` to `version` by hand (no gate, no rule applied); `challenger` leaves it. The decision says
    so, over which verdict of the gate and by which command, in the version's `champion_decision` tag, its run's,
    and its description's verdict section."""
    client = MlflowClient()
    try:
        target = client.get_model_version(model_name, str(version))
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise InputError(f"registered model '{model_name}' has no version {version}") from None
        raise
    command = f"asl-mlops registry promote {target.version} --model-name {shlex.quote(model_name)}"
    with registry_lock(model_name, client):
        before = current_champion(model_name, client)
        client.set_registered_model_alias(model_name, CHAMPION, str(target.version))
        if str((client.get_registered_model(model_name).aliases or {}).get(CHALLENGER)) == str(target.version):
            client.delete_registered_model_alias(model_name, CHALLENGER)  # a champion is no longer a challenger
        verdict = (f"promoted by hand (champion was {f'v{before.version}' if before else 'unset'}) over "
                   f"{gate_verdict(target)}, with `{command}`")
        client.set_model_version_tag(model_name, target.version, DECISION_TAG, verdict)
        if target.run_id:
            client.set_tag(target.run_id, DECISION_TAG, f"{model_name} v{target.version} {verdict}")
        client.update_model_version(model_name, target.version,
                                    description=hand_promoted_description(target.description or "", verdict))
    logger.info("%s version %s: %s", model_name, target.version, verdict)
    return Registration(model_name, str(target.version), True, verdict)


#: A `validation.<check>` tag's text: value, threshold (from its comparison sign on), pass|fail.
CHECK_TAG_TEXT = re.compile(r"(?P<value>.*?) (?P<threshold>[<>]=? .*) (?P<result>pass|fail)")


def failed_checks(version: ModelVersion) -> list[str]:
    """The validation gate's failed checks on `version`, from its `validation.<check>` tags, as
    'check value, needs threshold', e.g. 'unseen_signer_accuracy 0.3100, needs >= 0.5'."""
    failed = []
    for key, text in sorted((version.tags or {}).items()):
        if not key.startswith(CHECK_TAG_PREFIX) or not text.endswith(" fail"):
            continue
        name, match = key[len(CHECK_TAG_PREFIX):], CHECK_TAG_TEXT.fullmatch(text)
        failed.append(f"{name} {match['value']}, needs {match['threshold']}" if match
                      else f"{name} {text.removesuffix(' fail')}")
    return failed


def gate_verdict(version: ModelVersion) -> str:
    """The validation gate's verdict on `version` in words, with its failed checks: "the validation gate's verdict
    'failed' (unseen_signer_accuracy 0.3100, needs >= 0.5)", "... 'passed'", or that there is none."""
    status = (version.tags or {}).get(VALIDATION_STATUS_TAG)
    if status is None:
        return "no verdict of the validation gate (it never ran on this version)"
    failed = failed_checks(version)
    return f"the validation gate's verdict '{status}'" + (f" ({'; '.join(failed)})" if failed else "")


def hand_promoted_description(description: str, decision: str) -> str:
    """`description` with its verdict section (`SECTION_HEADING`) saying the version was promoted by hand
    (`decision`) in place of the gate's own decision; a version the gate never saw gets the section."""
    kept, _, section = description.partition(SECTION_HEADING)
    sentence = f"{decision[0].upper()}{decision[1:]}."
    if not section:
        return f"{kept.rstrip()}\n\n{SECTION_HEADING}: not run; promoted by hand\n\n{sentence}".lstrip()
    paragraphs = section.strip().split("\n\n")
    heading = paragraphs[0].split("; promoted by hand")[0] + "; promoted by hand"
    body = paragraphs[1:-1] if len(paragraphs) > 1 and not paragraphs[-1].startswith("|") else paragraphs[1:]
    return "\n\n".join([kept.rstrip(), f"{SECTION_HEADING}{heading}", *body, sentence]).lstrip()


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
    """A plain-text table: version, aliases, val/test accuracy, data hash, run, validation status (the gate's
    verdict: passed, failed, or '-' if never validated), last champion decision."""
    header = ("version", "aliases", "val_acc", "test_acc", "val_data", "run_id", "validation", "champion_decision")
    rows = [header]
    for v, aliases in versions:
        tags = v.tags or {}
        rows.append((v.version, ",".join(aliases) or "-", _short_float(tags.get("val_accuracy")),
                     _short_float(tags.get("test_accuracy")), tags.get("val_data_hash", "?")[:12],
                     v.run_id or "-", tags.get(VALIDATION_STATUS_TAG, "-"), tags.get("champion_decision", "")))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + str(r[-1]) for r in rows)


def _short_float(value: str | None) -> str:
    return f"{float(value):.4f}" if value is not None else "-"


# --- where a command looked, and what to do when it found nothing -----------------------------------------------

def local_store_path(uri: str) -> Path | None:
    """The file (sqlite:///...) or folder (file:..., a plain path) of a local MLflow store, absolute; None for a
    tracking server or a database server."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///"):].split("?")[0] if uri.startswith("sqlite:///") else ""
        return Path(path).resolve() if path and path != ":memory:" else None
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path)).resolve()
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a path (C:\... parses as scheme 'c')
        return Path(uri).resolve()
    return None


def store_words(uri: str | None = None) -> str:
    """The tracking store as a person finds it: a local store's absolute path, else its URI (password hidden)."""
    uri = uri or mlflow.get_tracking_uri()
    path = local_store_path(uri)
    if path is not None:
        return str(path)
    parsed = urllib.parse.urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@", 1)
    return uri


def where_to_point() -> str:
    """Where the store came from, and how to point at another, for the end of a message."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return ("(from MLFLOW_TRACKING_URI): set MLFLOW_TRACKING_URI to the store your runs went to, e.g. "
                "sqlite:////path/to/mlflow.db or http://HOST:5000, or unset it to use ./mlflow.db of the folder "
                "you run in")
    return ("(MLFLOW_TRACKING_URI is not set, so MLflow uses mlflow.db in the current folder): run this from the "
            "folder that holds your mlflow.db, or set MLFLOW_TRACKING_URI, e.g. sqlite:////path/to/mlflow.db or "
            "http://HOST:5000")


def require_store() -> None:
    """InputError saying where it looked and how to point elsewhere if the tracking or registry store is a local
    file or folder that does not exist: MLflow would create an empty one there (the first MlflowClient does) and
    then find nothing in it. Call before anything asks MLflow about runs or models."""
    for uri in dict.fromkeys((mlflow.get_tracking_uri(), mlflow.get_registry_uri())):
        path = local_store_path(uri)
        if path is not None and not path.exists():
            raise InputError(f"no MLflow tracking store at {path} {where_to_point()}")


def registered_model_names(client: MlflowClient | None = None) -> list[str]:
    """The names of every registered model in the store, sorted, registration locks (`<name>.lock`) left out."""
    client = client or MlflowClient()
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page if not m.name.endswith(LOCK_SUFFIX)]
        token = page.token
        if not token:
            return sorted(names)


def nothing_registered() -> str:
    """The message for a store without a registered model: where it looked, how to register or point elsewhere."""
    return (f"no model is registered in the MLflow tracking store {store_words()}; register one with "
            "`asl-mlops train ... --register true` (or `mlflow run . -P register=true`), or point at the store that "
            f"has yours {where_to_point()}")


def no_such_model(model_name: str, names: list[str]) -> str:
    """The message for a registered model name that is not in the store (`names`: those that are)."""
    if not names:
        return f"no registered model named '{model_name}': {nothing_registered()}"
    return (f"no registered model named '{model_name}' in the MLflow tracking store {store_words()}; registered "
            f"models there: {', '.join(names)}")


def only_model_name(model_name: str | None = None, client: MlflowClient | None = None) -> str:
    """The registered model a command works on: `model_name` if given (InputError listing the registered models if
    it is not one), else the only registered model; with none or several, InputError saying where it looked and
    naming them. Creates no store (`require_store`)."""
    require_store()
    names = registered_model_names(client)
    if model_name:
        if model_name not in names:
            raise InputError(no_such_model(model_name, names))
        return model_name
    if len(names) == 1:
        return names[0]
    if not names:
        raise InputError(nothing_registered())
    raise InputError(f"{len(names)} registered models in the MLflow tracking store {store_words()}: "
                     f"{', '.join(names)}; say which with --model-name")


def no_version_with(model_name: str, alias: str, client: MlflowClient, uri_option: bool = True) -> str:
    """Why `model_name` has no version with `alias` and what to do, in one line: for `champion`, the version that
    is `challenger` (or the newest), the gate's verdict on it with its failed checks, and the commands that would
    use it anyway (`registry promote`; with `uri_option`, --model-uri models:/NAME@challenger too)."""
    quoted = shlex.quote(model_name)
    versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: -int(v.version))
    if not versions:
        return (f"registered model '{model_name}' has no versions yet: register one with `asl-mlops train ... "
                f"--register true --model-name {quoted}`")
    aliases = client.get_registered_model(model_name).aliases or {}
    held = ", ".join(f"'{a}' is v{v}" for a, v in sorted(aliases.items())) or "no version has an alias"
    if alias != CHAMPION:
        return f"registered model '{model_name}' has no version with the alias '{alias}' ({held})"
    by_number = {str(v.version): v for v in versions}
    challenger = by_number.get(str(aliases.get(CHALLENGER)))
    candidate = challenger or versions[0]
    n = candidate.version
    which = f"v{n} is '{CHALLENGER}'" if challenger else f"the newest version, v{n}, has no alias"
    status = (candidate.tags or {}).get(VALIDATION_STATUS_TAG)
    if status == "failed":
        why = f", and the validation gate refused it ({'; '.join(failed_checks(candidate)) or 'failed'})"
    elif status == "passed":
        decision = (candidate.tags or {}).get(DECISION_TAG, "not promoted")
        why = f"; it passed the validation gate ({decision})"
    else:
        why = (f"; the validation gate has not decided on it (`asl-mlops registry validate --version {n} --promote "
               f"--model-name {quoted}` runs it)")
    uri = f"models:/{model_name}@{CHALLENGER}" if challenger else f"models:/{model_name}/{n}"
    anyway = f"`asl-mlops registry promote {n} --model-name {quoted}` makes it champion"
    anyway += f", or --model-uri {uri} uses it as it is" if uri_option else ""
    return f"registered model '{model_name}' has no '{CHAMPION}' version: {which}{why}. To use it anyway: {anyway}"


#: models:/NAME@ALIAS and models:/NAME/VERSION (a registered model's version; models:/m-... is a logged model).
MODEL_ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?")
MODEL_VERSION_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)/?")
RUN_URI = re.compile(r"runs:/(?P<run_id>[^/]+)(/.*)?")


def explain_model_uri(model_uri: str) -> str | None:
    """Why `model_uri` names no model in this tracking store, in words that say what to do next (see
    `require_store`, `no_such_model`, `no_version_with`); None if it names one, if it is not a models:/ or runs:/
    URI, or if the store cannot be asked (the load that follows says why). Creates no store."""
    if not model_uri.startswith(("models:/", "runs:/")):
        return None
    try:
        require_store()
    except InputError as err:
        return str(err)
    client = MlflowClient()
    try:
        if match := RUN_URI.fullmatch(model_uri):
            try:
                client.get_run(match["run_id"])
            except MlflowException as err:
                if not _error_is(err, RESOURCE_DOES_NOT_EXIST):
                    raise
                return f"run {match['run_id']} is not in the MLflow tracking store {store_words()} {where_to_point()}"
            return None
        match = MODEL_ALIAS_URI.fullmatch(model_uri) or MODEL_VERSION_URI.fullmatch(model_uri)
        if match is None:
            return None
        names = registered_model_names(client)
        if match["name"] not in names:
            reason = no_such_model(match["name"], names)
            if len(names) == 1:
                reason += f" (--model-uri models:/{names[0]}@{match.groupdict().get('alias') or CHAMPION})"
            return reason
        if "alias" in match.groupdict():
            try:
                client.get_model_version_by_alias(match["name"], match["alias"])
                return None
            except MlflowException as err:
                if not _error_is(err, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST):
                    raise
                return no_version_with(match["name"], match["alias"], client)
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{match['name']}'"))
        if int(match["version"]) not in versions:
            return (f"registered model '{match['name']}' has no version {match['version']} (its versions: "
                    f"{', '.join(map(str, versions)) or 'none'})")
        return None
    except MlflowException:  # a store that cannot answer: the load says why
        return None
