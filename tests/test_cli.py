"""The asl-mlops CLI: every command explains itself; bad input is one line and exit code 2."""

import re

import mlflow
import pytest
from click.testing import CliRunner
from malformed import MALFORMED_CASES
from mlflow.tracking import MlflowClient

from asl_mlops.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [[], ["data"], ["data", "download"], ["data", "synth"], ["data", "validate"],
                                  ["train"], ["evaluate"]])
def test_help(runner, args):
    result = runner.invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_train_help_explains_every_option(runner):
    out = runner.invoke(main, ["train", "--help"]).output
    for flag in ("--learning-rate", "--decay-rate", "--l2", "--epochs", "--batch-size", "--seed", "--weights",
                 "--architecture", "--early-stopping", "--flip-horizontal", "--brightness"):
        assert flag in out


def test_synth_then_validate(runner, tmp_path):
    result = runner.invoke(main, ["data", "synth", "--out", str(tmp_path), "--train-rows", "48", "--test-rows", "24"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["data", "validate", str(tmp_path / "sign_mnist_train.csv"),
                                  str(tmp_path / "sign_mnist_test.csv")])
    assert result.exit_code == 0, result.output
    assert "48 rows" in result.output and "24 rows" in result.output


@pytest.mark.parametrize("case", sorted(MALFORMED_CASES))
def test_validate_rejects_malformed_file(runner, tmp_path, case):
    write, expected = MALFORMED_CASES[case]
    path = write(tmp_path)
    result = runner.invoke(main, ["data", "validate", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and path.name in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", sorted(MALFORMED_CASES))
def test_train_with_malformed_data_exits_2_and_leaves_no_run(runner, tmp_path, case, synthetic_dir, mlflow_store):
    write, expected = MALFORMED_CASES[case]
    result = runner.invoke(main, ["train", "--train-data", str(write(tmp_path)),
                                  "--test-data", str(synthetic_dir / "sign_mnist_test.csv")])
    assert result.exit_code == 2, result.output
    assert re.search(expected, result.output), result.output
    # Validation comes before the run starts: no run at all, so none left RUNNING and no artifacts.
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_run_mlflow_run_made_says_why_the_data_was_refused(runner, tmp_path, synthetic_dir, mlflow_store,
                                                             monkeypatch):
    write, expected = MALFORMED_CASES["label_9"]
    with mlflow.start_run() as run:  # as `mlflow run` makes it, before the command starts
        pass
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    result = runner.invoke(main, ["train", "--train-data", str(write(tmp_path)),
                                  "--test-data", str(synthetic_dir / "sign_mnist_test.csv")])
    assert result.exit_code == 2, result.output
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert re.search(expected, tags["error"]) and tags["mlflow.note.content"].startswith("Refused: ")
    assert not mlflow.get_run(run.info.run_id).data.metrics  # nothing else was logged


def test_unwritable_cache_dir_exits_2_with_one_line_and_leaves_no_run(runner, tmp_path, synthetic_dir, mlflow_store):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(main, ["train", "--architecture", "resnet50", "--weights", "none", "--epochs", "1",
                                  "--cache-dir", str(blocker / "cache"),
                                  "--train-data", str(synthetic_dir / "sign_mnist_train.csv"),
                                  "--test-data", str(synthetic_dir / "sign_mnist_test.csv")])
    assert result.exit_code == 2, result.output
    assert re.fullmatch(r"error: cache_dir .*a-file/cache/trunk: cannot write the trunk-feature cache there .*\n",
                        result.output), result.output
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.slow
def test_train_logs_to_the_asl_mlops_experiment_unless_one_is_set(runner, synthetic_dir, mlflow_store, monkeypatch):
    args = ["train", "--epochs", "1", "--batch-size", "64", "--tta", "false", "--ensemble", "1",
            "--train-data", str(synthetic_dir / "sign_mnist_train.csv"),
            "--test-data", str(synthetic_dir / "sign_mnist_test.csv")]
    assert runner.invoke(main, args).exit_code == 0
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    assert runner.invoke(main, args).exit_code == 0
    runs = mlflow.search_runs(search_all_experiments=True)
    assert sorted(mlflow.get_experiment(e).name for e in runs["experiment_id"]) == ["asl-mlops", "mine"]


def test_bad_option_value_names_the_field(runner, synthetic_dir, mlflow_store):
    result = runner.invoke(main, ["train", "--epochs", "0", "--train-data", str(synthetic_dir / "sign_mnist_train.csv")])
    assert result.exit_code == 2 and "epochs" in result.output


def test_download_offline_is_a_clear_error(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    result = runner.invoke(main, ["data", "download", "--dest", str(tmp_path)])
    assert result.exit_code == 2
    assert "kaggle" in result.output.lower()


def test_evaluate_with_unknown_model_uri_is_a_clear_error(runner, synthetic_dir, mlflow_store):
    MlflowClient().search_experiments()  # the store exists; the run does not
    result = runner.invoke(main, ["evaluate", "--model-uri", "runs:/0123456789abcdef/model",
                                  "--data", str(synthetic_dir / "sign_mnist_test.csv")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --model-uri runs:/0123456789abcdef/model: run 0123456789abcdef is not "
                                    "in the MLflow tracking store "), result.output
    not_a_run = runner.invoke(main, ["evaluate", "--model-uri", "models:/m-0123456789abcdef",
                                     "--data", str(synthetic_dir / "sign_mnist_test.csv")])
    assert not_a_run.exit_code == 2 and "error: --model-uri models:/m-0123456789abcdef: no model there" in \
        not_a_run.output


def test_registry_promote_needs_a_version_number(runner, mlflow_store):
    result = runner.invoke(main, ["registry", "promote", "abc"])
    assert result.exit_code == 2 and "VERSION" in result.output


def test_predict_and_serving_request_parsing_do_not_import_tensorflow():
    """`predict --endpoint` and bad-input errors should not wait for TensorFlow's import (6-10 s)."""
    import subprocess
    import sys

    code = "import sys, asl_mlops.serving.client, asl_mlops.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]


@pytest.mark.parametrize("args, words", [
    (["--epochs", "1e309"], "'1e309' is infinite"),
    (["--learning-rate", "inf"], "'inf' is infinite"),
    (["--l2", "nan"], "'nan' is not a number"),
    (["--epochs", "2.5"], "'2.5' is not a whole number"),
])
def test_non_finite_and_fractional_numbers_are_named_as_such(args, words):
    from click.testing import CliRunner

    from asl_mlops.cli import main

    result = CliRunner().invoke(main, ["train", *args])
    assert result.exit_code == 2 and words in result.output, result.output


def test_whole_floats_are_accepted_as_integers():
    from asl_mlops.cli import WholeNumber

    assert WholeNumber().convert("12.0", None, None) == 12 and WholeNumber().convert("7", None, None) == 7
