"""Every error that stops a newcomer says what to do next: the commands they would run, against a real SQLite
MLflow store, and the message each one prints.

The versions here are stand-in models (registration and the messages need no trained network); their verdicts are
recorded as the validation gate records them (`validation.write_verdict`, `registry.promote_if_better`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from asl_mlops.cli import main
from asl_mlops.registry import CHALLENGER, CHAMPION, LOCK_SUFFIX, promote_if_better, register
from asl_mlops.gate import Check, Verdict, write_verdict

PHOTOS = "asl-photo-recognizer"
URI = f"models:/{PHOTOS}@{CHAMPION}"
#: The gate's refusal of the photo quick start's version: two failed checks, as `compute_checks` makes them.
REFUSAL = (Check("unseen_signer_accuracy", "0.3100", ">= 0.6", False, "0.3100 < 0.6"),
           Check("gain", "no champion", "> 0 (tie: lower val_loss)", True),
           Check("worst_letter_recall", "0.0000 (B)", ">= 0.25", False, "B 0.0000 < 0.25"),
           Check("serving_latency", "54.4 ms", "<= 500 ms", True))
FAILED = "unseen_signer_accuracy 0.3100, needs >= 0.6; worst_letter_recall 0.0000 (B), needs >= 0.25"


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def registered(name: str) -> str:
    """A finished run's model registered as `name`'s `challenger`, as `train --register` leaves it before the gate;
    returns the version."""
    with mlflow.start_run() as run:
        mlflow.log_metrics({"val_accuracy": 0.31, "val_loss": 2.0})
        info = mlflow.pyfunc.log_model(name="recognizer", python_model=Echo(), pip_requirements=[])
    return register(run.info.run_id, info.model_uri, name).version


def refused(name: str = PHOTOS) -> str:
    """A registered version the validation gate refused, recorded as the gate records it; returns the version."""
    version = registered(name)
    failed = ", ".join(f"{c.name} ({c.reason})" for c in REFUSAL if not c.passed)
    decision = promote_if_better(name, version, passed=False, failed=failed).decision
    write_verdict(Verdict(name, version, "photos/test", REFUSAL, None, False, decision, 1.2, 54.4), MlflowClient())
    return version


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_a_missing_champion_names_the_refused_challenger_its_failed_checks_and_the_commands_that_use_it(
        mlflow_store, tiny_csv):
    refused()
    said = (f"registered model '{PHOTOS}' has no 'champion' version: v1 is 'challenger', and the validation gate "
            f"refused it ({FAILED}). To use it anyway: `asl-mlops registry promote 1 --model-name {PHOTOS}` makes it "
            f"champion, or --model-uri models:/{PHOTOS}@challenger uses it as it is\n")
    for command, prefix in ((["predict", "--model-uri", URI, "hand.png"], f"cannot load model {URI}"),
                            (["serve", "--model-uri", URI, "--port", "0"], f"cannot load model {URI}"),
                            (["evaluate", "--model-uri", URI, "--data", str(tiny_csv)], f"--model-uri {URI}")):
        code, output = cli(*command)
        assert (code, output) == (2, f"error: {prefix}: {said}"), command

    # the default URI names another model: the one that is here is named, with its URI
    code, output = cli("predict", "hand.png")
    assert code == 2 and output.startswith("error: cannot load model models:/asl-recognizer@champion: no registered "
                                           "model named 'asl-recognizer' in the MLflow tracking store ")
    assert output.endswith(f"mlflow.db; registered models there: {PHOTOS} (--model-uri {URI})\n")

    # once promoted, nothing is challenger: validate says which version is what and asks for one
    assert cli("registry", "promote", "1")[0] == 0
    code, output = cli("registry", "validate")
    assert (code, output) == (2, f"error: registered model '{PHOTOS}' has no version with the alias 'challenger' "
                                 "('champion' is v1); give the version to validate with --version N\n")


def test_a_version_the_gate_never_decided_says_how_to_run_the_gate(mlflow_store):
    registered(PHOTOS)  # registered, the gate interrupted: no verdict
    code, output = cli("predict", "--model-uri", URI, "hand.png")
    assert code == 2 and ("v1 is 'challenger'; the validation gate has not decided on it (`asl-mlops registry "
                          f"validate --version 1 --promote --model-name {PHOTOS}` runs it)") in output


def test_registry_commands_use_the_only_registered_model_and_otherwise_list_the_models(mlflow_store, tmp_path):
    refused()
    MlflowClient().create_registered_model(f"{PHOTOS}{LOCK_SUFFIX}")  # a registration's lock is not a model
    code, output = cli("registry", "show")
    assert code == 0 and output.splitlines()[1].split()[:3] == ["1", CHALLENGER, "0.3100"]
    code, output = cli("registry", "validate", "--dry-run")  # the gate reaches its data question: on this model
    assert code == 2 and output.startswith(f"error: {PHOTOS} v1: give the labelled data to validate on with --data")

    registered("asl-recognizer")
    store = Path("mlflow.db").resolve()
    listed = (f"error: 2 registered models in the MLflow tracking store {store}: {PHOTOS}, asl-recognizer; say which "
              "with --model-name\n")
    for command in (["registry", "show"], ["registry", "validate", "--dry-run"], ["registry", "promote", "1"]):
        assert cli(*command) == (2, listed), command
    photos = tmp_path / "alice"
    for letter in "AB":
        (photos / letter).mkdir(parents=True)
        (photos / letter / "1.png").write_bytes(_PNG)
    assert cli("teach", str(photos)) == (2, listed)

    code, output = cli("registry", "show", "--model-name", "nope")
    assert (code, output) == (2, f"error: no registered model named 'nope' in the MLflow tracking store {store}; "
                                 f"registered models there: {PHOTOS}, asl-recognizer\n")
    code, output = cli("registry", "promote", "1", "--model-name", PHOTOS)
    assert code == 0 and output.startswith(f"{PHOTOS} v1 promoted by hand")


#: A 1x1 black PNG.
_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000003a7e9b55"
                     "0000000a49444154789c63600000000200015ee2f4e30000000049454e44ae426082")


def asl_mlops(*args: str, cwd: Path, tracking_uri: str | None = None) -> subprocess.CompletedProcess:
    """The real `asl-mlops` in a shell at `cwd`, with MLFLOW_TRACKING_URI as given (unset: None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.run([str(Path(sys.executable).parent / "asl-mlops"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_command_run_away_from_the_store_says_where_it_looked_and_creates_no_store(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    looked = (f"no MLflow tracking store at {elsewhere / 'mlflow.db'} (MLFLOW_TRACKING_URI is not set, so MLflow uses "
              "mlflow.db in the current folder): run this from the folder that holds your mlflow.db, or set "
              "MLFLOW_TRACKING_URI, e.g. sqlite:////path/to/mlflow.db or http://HOST:5000\n")
    for command, prefix in ((["registry", "show"], ""),
                            (["predict", "hand.png"], "cannot load model models:/asl-recognizer@champion: ")):
        done = asl_mlops(*command, cwd=elsewhere)
        assert (done.returncode, done.stderr) == (2, f"error: {prefix}{looked}"), done.stderr
        assert list(elsewhere.iterdir()) == [], "a read-only command left a store behind"

    empty = tmp_path / "empty.db"
    MlflowClient(f"sqlite:///{empty}").search_experiments()  # a store with no run and no model
    done = asl_mlops("registry", "show", cwd=elsewhere, tracking_uri=f"sqlite:///{empty}")
    assert done.returncode == 2 and done.stderr == (
        f"error: no model is registered in the MLflow tracking store {empty}; register one with `asl-mlops train ... "
        "--register true` (or `mlflow run . -P register=true`), or point at the store that has yours (from "
        "MLFLOW_TRACKING_URI): set MLFLOW_TRACKING_URI to the store your runs went to, e.g. "
        "sqlite:////path/to/mlflow.db or http://HOST:5000, or unset it to use ./mlflow.db of the folder you run in\n")


def test_a_promotion_by_hand_says_so_over_which_verdict_and_by_which_command(mlflow_store):
    refused()
    code, output = cli("registry", "promote", "1")
    said = (f"promoted by hand (champion was unset) over the validation gate's verdict 'failed' ({FAILED}), with "
            f"`asl-mlops registry promote 1 --model-name {PHOTOS}`")
    assert (code, output) == (0, f"{PHOTOS} v1 {said}\n")
    version = MlflowClient().get_model_version(PHOTOS, "1")
    assert version.tags["champion_decision"] == said
    assert mlflow.get_run(version.run_id).data.tags["champion_decision"] == f"{PHOTOS} v1 {said}"
    assert version.tags["validation_status"] == "failed"  # the gate's verdict stands; the decision was a person's
    section = version.description.split("### Validation gate")[1]
    assert section.startswith(": failed (failed: unseen_signer_accuracy, worst_letter_recall); promoted by hand\n")
    assert "| unseen_signer_accuracy | 0.3100 | >= 0.6 | fail |" in section  # the verdict it was promoted over
    assert section.endswith(f"\n\n{said[0].upper()}{said[1:]}.") and "not promoted" not in section

    registered(PHOTOS)  # a version the gate never saw
    code, output = cli("registry", "promote", "2")
    assert code == 0 and "(champion was v1) over no verdict of the validation gate (it never ran on this version)" \
        in output
    description = MlflowClient().get_model_version(PHOTOS, "2").description
    assert "### Validation gate: not run; promoted by hand\n\nPromoted by hand (champion was v1)" in description

