"""Validation gate: the checks a registered version must pass before `champion` moves to it, and its verdict.

`validate_version` loads the version (and the champion, for comparison) as pyfunc models, predicts once on
labelled data (`--data`, default the version's run's `test_data`), and checks, with `GateConfig`'s thresholds:

- `accuracy` >= min_accuracy (Sign MNIST recognizers), or `unseen_signer_accuracy` >= min_unseen_signer_accuracy
  (photo recognizers: the folder must hold signers the model never trained on; a photo with no hand found is
  an error);
- `gain`: val_accuracy over the champion's on the same validation rows, by the registry's rule
  (`registry.champion_decision`: strictly better, or by at least min_gain; other data is not comparable);
- `worst_letter_recall` >= min_letter_recall (Sign MNIST) or min_photo_letter_recall (photos), over the letters
  present in the data;
- `serving_latency`: the version, loaded in a fresh Python process, answers its logged input example within
  max_latency_ms (median of 3 predict calls; the load is timed and reported apart).

The evaluation is ONE MLflow run (`mlflow.models.evaluate` on the predictions: accuracy, per-letter recall
`letter_recall/<letter>`, the confusion matrix and per-class metrics as artifacts), tagged with the model name
and version; the version gets its id (`validation_run_id`), one tag per check (`validation.<check>`: value,
threshold, pass|fail), `validation_status` (passed|failed) and the verdict as a Markdown table in its
description. With `promote`, `registry.promote_if_better` then moves `champion` under the registry's lock, after
comparing again with the champion of that moment. A dry run computes and returns the verdict and writes nothing.

Why not `mlflow.validate_evaluation_results` with `MetricThreshold`s: it raises one exception for every failed
threshold, with a message, where the verdict needs each check's value and result; and two of the five checks
(the gain with its val_loss tie-break and same-rows rule, and latency) are not evaluation metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from asl_mlops.config import DEFAULT_MODEL_NAME, GateConfig
from asl_mlops.errors import InputError
from asl_mlops.labels import LETTERS
from asl_mlops.registry import (
    CHALLENGER,
    CHECK_TAG_PREFIX,
    DECISION_TAG,
    SECTION_HEADING,
    VALIDATION_STATUS_TAG,
    Registration,
    current_champion,
    no_version_with,
    promote_if_better,
    register,
    version_decision,
    version_metrics,
)

logger = logging.getLogger(__name__)

RUN_ID_TAG = "validation_run_id"
DATA_TAG = "validation_data"
#: What a photo with no hand found is predicted as in the evaluation (never a true letter).
NO_HAND = "no hand"
LATENCY_CALLS = 3
SERVING_CHECK_TIMEOUT = 300.0


@dataclass(frozen=True)
class Check:
    """One check of the gate: its value and threshold as shown, and whether it passed."""

    name: str
    value: str
    threshold: str
    passed: bool
    reason: str = ""  # why it failed, in a few words, for the decision line

    @property
    def result(self) -> str:
        return "pass" if self.passed else "fail"

    def tag(self) -> str:
        """`validation.<name>` tag value: value, threshold, pass|fail."""
        return f"{self.value} {self.threshold} {self.result}"


@dataclass(frozen=True)
class Verdict:
    """The gate's verdict on one version (`promoted`/`decision` as in `registry.Registration`)."""

    model_name: str
    version: str
    data: str
    checks: tuple[Check, ...]
    evaluation_run_id: str | None  # None in a dry run
    promoted: bool
    decision: str
    load_seconds: float
    latency_ms: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def table(self) -> str:
        """The checks as a Markdown table: check | value | threshold | result."""
        rows = ["| check | value | threshold | result |", "|---|---|---|---|"]
        rows += [f"| {c.name} | {c.value} | {c.threshold} | {c.result} |" for c in self.checks]
        return "\n".join(rows)

    def section(self) -> str:
        """The verdict as the version description's Markdown section."""
        run = f", evaluation run `{self.evaluation_run_id}`" if self.evaluation_run_id else ""
        failed = f" (failed: {', '.join(self.failed)})" if self.failed else ""
        loaded = (f"; loaded in {self.load_seconds:.1f} s in a fresh process" if np.isfinite(self.load_seconds)
                  else "")
        return (f"{SECTION_HEADING}: {self.status}{failed}\n\nOn `{self.data}`{run}{loaded}.\n\n{self.table()}\n\n"
                f"{self.decision}")

    def report(self) -> str:
        """What `asl-mlops registry validate` prints."""
        return (f"{self.model_name} v{self.version}: validation {self.status}"
                f"{' (failed: ' + ', '.join(self.failed) + ')' if self.failed else ''} on {self.data}\n"
                f"{self.table()}\n{self.decision}")


def _version(model_name: str, version: str | None, client: MlflowClient) -> ModelVersion:
    """The version to validate: `version`, or the one with alias `challenger`; InputError naming the option."""
    try:
        if version is None:
            return client.get_model_version_by_alias(model_name, CHALLENGER)
        return client.get_model_version(model_name, str(version))
    except MlflowException as err:
        if version is None:
            raise InputError(f"{no_version_with(model_name, CHALLENGER, client)}; give the version to validate with "
                             "--version N") from None
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise InputError(f"registered model '{model_name}' has no version {version} (--version)") from None
        raise


def gate_data(version: ModelVersion, data: str | None, client: MlflowClient) -> str:
    """The labelled data the gate evaluates on: `data`, or the version's run's `test_data` param if that path
    exists here; InputError naming --data otherwise."""
    if data is not None:
        if not Path(data).exists():
            raise InputError(f"--data {data}: no such file or folder")
        return data
    test_data = client.get_run(version.run_id).data.params.get("test_data") if version.run_id else None
    if test_data and Path(test_data).exists():
        return test_data
    where = f"its run's test_data ({test_data}) is not here" if test_data else "its run logged no test_data"
    raise InputError(f"{version.name} v{version.version}: give the labelled data to validate on with --data PATH "
                     f"(a Sign MNIST CSV, or a photo folder of unseen signers): {where}")


def _letters(indices: np.ndarray) -> np.ndarray:
    """Class indices -> letters; -1 (no hand found) -> NO_HAND."""
    return np.array([LETTERS[i] if i >= 0 else NO_HAND for i in indices.tolist()], dtype=object)


def letter_recalls(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Recall of each letter present in `y_true` (letters), in alphabet order."""
    return {letter: float(np.mean(y_pred[y_true == letter] == letter)) for letter in LETTERS
            if np.any(y_true == letter)}


def predict_letters(model_uri: str, data: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(true letters, predicted letters, is a photo folder) of the recognizer at `model_uri` on `data`, as it
    answers when served (asl_mlops.training.evaluate; a photo with no hand found is predicted as NO_HAND)."""
    from asl_mlops.training.evaluate import evaluate_model_uri

    evaluation = evaluate_model_uri(model_uri, data, log=False)
    return _letters(evaluation.y_true), _letters(evaluation.y_pred), Path(data).is_dir()


def answer_input_example(model_uri: str, calls: int = LATENCY_CALLS) -> dict[str, float]:
    """Load the model at `model_uri` and answer its logged input example `calls` times: seconds to load,
    milliseconds of each predict call. What the serving check runs in a fresh process."""
    start = time.perf_counter()
    from asl_mlops.recognizers.base import load_model

    model = load_model(model_uri)
    load_seconds = time.perf_counter() - start
    example = model.input_example
    if example is None:
        raise InputError(f"{model_uri} has no logged input example to answer")
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict(example)
        times.append((time.perf_counter() - start) * 1000)
    return {"load_seconds": load_seconds, "latency_ms": statistics.median(times), "first_call_ms": times[0]}


def serving_check(model_uri: str) -> dict[str, float]:
    """`answer_input_example` in a fresh Python process (this interpreter, this tracking store); InputError with
    its last output lines if it cannot load or answer."""
    code = ("import json, sys; from asl_mlops.gate import answer_input_example; "
            f"print('ANSWER ' + json.dumps(answer_input_example({model_uri!r})))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=SERVING_CHECK_TIMEOUT)
    answers = [line for line in done.stdout.splitlines() if line.startswith("ANSWER ")]
    if done.returncode != 0 or not answers:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise InputError(f"{model_uri} did not load and answer its input example in a fresh process: {tail}")
    return json.loads(answers[-1].removeprefix("ANSWER "))


def gain_check(version: ModelVersion, champion: ModelVersion | None, gate: GateConfig) -> Check:
    """The registry's no-regression rule as a check (see `registry.champion_decision`)."""
    threshold = f">= +{gate.min_gain:g}" if gate.min_gain > 0 else "> 0 (tie: lower val_loss)"
    decision = version_decision(version, champion, gate.min_gain)
    if champion is not None and str(champion.version) == str(version.version):
        return Check("gain", "champion", threshold, decision.promote)
    if "val_accuracy" not in (version.tags or {}):
        return Check("gain", "?", threshold, decision.promote, decision.reason)
    val_accuracy, _, data_hash = version_metrics(version)
    if champion is None:
        value = "no champion"
    elif (champion.tags or {}).get("val_data_hash", "") != data_hash or "val_accuracy" not in champion.tags:
        value = f"other data than v{champion.version}"
    else:
        value = f"{val_accuracy - float(champion.tags['val_accuracy']):+.4f} vs v{champion.version}"
    return Check("gain", value, threshold, decision.promote, decision.reason)


def latency_check(latency_ms: float, gate: GateConfig, serving_error: str = "") -> Check:
    """The serving check: an answer from a fresh process within max_latency_ms (`serving_error`: why there was none)."""
    fast = not serving_error and latency_ms <= gate.max_latency_ms
    return Check("serving_latency", "no answer" if serving_error else f"{latency_ms:.1f} ms",
                 f"<= {gate.max_latency_ms:g} ms", fast,
                 "" if fast else serving_error or f"{latency_ms:.1f} ms > {gate.max_latency_ms:g} ms")


def floor_check(name: str, value: float, floor: float) -> Check:
    passed = value >= floor
    return Check(name, f"{value:.4f}", f">= {floor:g}", passed, "" if passed else f"{value:.4f} < {floor:g}")


def compute_checks(y_true: np.ndarray, y_pred: np.ndarray, photos: bool, gain: Check, latency_ms: float,
                   gate: GateConfig, serving_error: str = "") -> tuple[Check, ...]:
    """The gate's checks from the predictions (letters), the gain check and the measured latency (pure);
    `serving_error`: why the fresh process gave no answer (the serving check fails)."""
    accuracy = float(np.mean(y_true == y_pred))
    recalls = letter_recalls(y_true, y_pred)
    worst = min(recalls, key=recalls.get)
    first = (floor_check("unseen_signer_accuracy", accuracy, gate.min_unseen_signer_accuracy) if photos
             else floor_check("accuracy", accuracy, gate.min_accuracy))
    recall = floor_check("worst_letter_recall", recalls[worst],
                         gate.min_photo_letter_recall if photos else gate.min_letter_recall)
    recall = Check(recall.name, f"{recall.value} ({worst})", recall.threshold, recall.passed,
                   recall.reason and f"{worst} {recall.reason}")
    latency = latency_check(latency_ms, gate, serving_error)
    return first, gain, recall, latency


def _decision_of(checks: tuple[Check, ...]) -> str:
    failed = [c for c in checks if not c.passed]
    if not failed:
        gain = next(c for c in checks if c.name == "gain")
        return f"would be promoted: passed every check; {gain.reason or gain.value}"
    return "not promoted: failed " + ", ".join(f"{c.name} ({c.reason})" for c in failed)


@contextmanager
def mlflow_warnings_only() -> Iterator[None]:
    """MLflow's logger ("mlflow", the one MLFLOW_LOGGING_LEVEL sets) at WARNING for the block. `mlflow.models.evaluate`
    logs two INFO lines on every call whatever its arguments: "number of classes is inferred as N" even with
    `label_list` given (N counts 'no hand' beside the 24 letters when a photo had none), and "Testing metrics on
    first row..."."""
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(max(logging.WARNING, mlflow_logger.getEffectiveLevel()))
    try:
        yield
    finally:
        mlflow_logger.setLevel(level)


def log_evaluation_run(version: ModelVersion, data: str, y_true: np.ndarray, y_pred: np.ndarray,
                       gate: GateConfig, extra_metrics: dict[str, float]) -> str:
    """One MLflow run (in the version's run's experiment) evaluating the predictions with `mlflow.models.evaluate`:
    accuracy, letter_recall/<letter>, worst_letter_recall, confusion matrix; returns its id."""
    import pandas as pd
    from mlflow.metrics import MetricValue
    from mlflow.models import make_metric

    client = MlflowClient()
    experiment_id = client.get_run(version.run_id).info.experiment_id if version.run_id else None
    run = client.create_run(experiment_id or "0", run_name=f"validate-{version.name}-v{version.version}",
                            tags={"model_name": version.name, "model_version": str(version.version),
                                  "validation_data": data})

    def recall_per_letter(predictions: pd.Series, targets: pd.Series) -> MetricValue:
        return MetricValue(aggregate_results=letter_recalls(np.asarray(targets), np.asarray(predictions)))

    def worst_letter_recall(predictions: pd.Series, targets: pd.Series) -> MetricValue:
        recalls = letter_recalls(np.asarray(targets), np.asarray(predictions))
        return MetricValue(aggregate_results={"worst_letter_recall": min(recalls.values())})

    metrics = [make_metric(eval_fn=recall_per_letter, greater_is_better=True, name="letter_recall"),
               make_metric(eval_fn=worst_letter_recall, greater_is_better=True, name="worst_letter_recall")]
    frame = pd.DataFrame({"label": y_true, "prediction": y_pred})
    with mlflow.start_run(run_id=run.info.run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ill-defined.*")  # NO_HAND is never a true label
        mlflow.log_params({"model_uri": f"models:/{version.name}/{version.version}", "data": data,
                           **gate.to_params()})
        with mlflow_warnings_only():
            mlflow.models.evaluate(data=frame, predictions="prediction", targets="label", model_type="classifier",
                                   extra_metrics=metrics,
                                   evaluator_config={"label_list": sorted(set(LETTERS) | set(y_pred.tolist())),
                                                     "log_model_explainability": False})
        mlflow.log_metrics(extra_metrics)
    return run.info.run_id


def write_verdict(verdict: Verdict, client: MlflowClient) -> None:
    """The verdict on the version (tags, description section) and on its evaluation run (tags)."""
    name, version = verdict.model_name, verdict.version
    for check in verdict.checks:
        client.set_model_version_tag(name, version, f"{CHECK_TAG_PREFIX}{check.name}", check.tag())
    client.set_model_version_tag(name, version, VALIDATION_STATUS_TAG, verdict.status)
    client.set_model_version_tag(name, version, DATA_TAG, verdict.data)
    if verdict.evaluation_run_id:
        client.set_model_version_tag(name, version, RUN_ID_TAG, verdict.evaluation_run_id)
        client.set_tag(verdict.evaluation_run_id, VALIDATION_STATUS_TAG, verdict.status)
        client.set_tag(verdict.evaluation_run_id, "mlflow.note.content", verdict.section())
    description = client.get_model_version(name, version).description or ""
    kept = description.split(SECTION_HEADING)[0].rstrip()
    client.update_model_version(name, version, description=f"{kept}\n\n{verdict.section()}".lstrip())


def validate_version(model_name: str = DEFAULT_MODEL_NAME, version: str | None = None, data: str | None = None,
                     gate: GateConfig = GateConfig(), *, promote: bool = False, dry_run: bool = False) -> Verdict:
    """Run the gate on `version` (default: the one with alias `challenger`) of `model_name` (see the module
    docstring); with `promote`, move `champion` to it if every check passes. `dry_run` writes nothing."""
    client = MlflowClient()
    target = _version(model_name, version, client)
    version = str(target.version)
    data = gate_data(target, data, client)
    uri = f"models:/{model_name}/{version}"
    y_true, y_pred, photos = predict_letters(uri, data)
    champion = current_champion(model_name, client)
    extra = {}
    if champion is not None and str(champion.version) != version:
        try:  # the champion on the same data, for the record (the gain check compares validation rows)
            champ_true, champ_pred, _ = predict_letters(f"models:/{model_name}/{champion.version}", data)
            extra["champion_accuracy"] = float(np.mean(champ_true == champ_pred))
        except InputError as err:
            logger.warning("champion v%s not evaluated on %s: %s", champion.version, data, err)
    serving_error = ""
    try:
        served = serving_check(uri)
    except InputError as err:  # a version that does not load or answer fails the check; it is not bad input
        serving_error, served = str(err), {"load_seconds": float("nan"), "latency_ms": float("inf")}
    checks = compute_checks(y_true, y_pred, photos, gain_check(target, champion, gate), served["latency_ms"], gate,
                            serving_error)
    extra.update({"accuracy": float(np.mean(y_true == y_pred)),
                  **{k: v for k, v in served.items() if np.isfinite(v)}})
    verdict = Verdict(model_name, version, data, checks, None, False, _decision_of(checks), served["load_seconds"],
                      served["latency_ms"])
    if dry_run:
        return dataclasses.replace(verdict, decision=f"dry run, nothing written; {verdict.decision}")
    run_id = log_evaluation_run(target, data, y_true, y_pred, gate, extra)
    decision = verdict.decision.replace("would be promoted", "not promoted (no --promote)")
    promoted = False
    if promote:
        registration = promote_if_better(model_name, version, passed=verdict.passed, failed=", ".join(
            f"{c.name} ({c.reason})" for c in checks if not c.passed), min_gain=gate.min_gain, client=client)
        promoted, decision = registration.promoted, registration.decision
        if verdict.passed and not promoted:  # the champion moved while the gate ran: the gain as decided
            gain = gain_check(target, current_champion(model_name, client), gate)
            checks = tuple(gain if c.name == "gain" else c for c in checks)
    verdict = dataclasses.replace(verdict, checks=checks, evaluation_run_id=run_id, promoted=promoted,
                                  decision=decision)
    write_verdict(verdict, client)
    logger.info("%s version %s: validation %s; %s", model_name, version, verdict.status, decision)
    return verdict


def register_and_validate(run_id: str, model_uri: str, model_name: str = DEFAULT_MODEL_NAME, *,
                          gate: GateConfig = GateConfig(), tags: dict[str, str] | None = None,
                          description: str | None = None) -> Verdict | Registration:
    """Register the run's model as `challenger` (`registry.register`) and run the gate on it with promotion, on
    its run's test data. A run already registered is validated only if its gate never finished."""
    registration = register(run_id, model_uri, model_name, tags=tags, description=description)
    if not registration.registered:
        tags_now = MlflowClient().get_model_version(model_name, registration.version).tags or {}
        if VALIDATION_STATUS_TAG in tags_now and DECISION_TAG in tags_now:
            return registration
    return validate_version(model_name, registration.version, gate=gate, promote=True)
