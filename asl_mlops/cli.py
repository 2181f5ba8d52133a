"""The `asl-mlops` command line: thin click commands over the pipeline's functions.

Options of `train` (and `tune`) are generated from the config dataclasses, so each knob has one
name everywhere (field `learning_rate` = flag `--learning-rate` = MLproject/MLflow `learning_rate`).
Bad input (InputError) becomes a one-line `error: ...` and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from asl_mlops.config import (
    CHAMPION_URI,
    DEMO_TEST_ROWS,
    DEMO_TRAIN_ROWS,
    SWEPT_FIELDS,
    TUNE_REGISTRY,
    GateConfig,
    RegistryConfig,
    ServeConfig,
    SweepConfig,
    TeachConfig,
    TrainConfig,
)
from asl_mlops.errors import InputError
from asl_mlops.quiet_import import import_tensorflow_quietly

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides our output


def flag_name(field_name: str) -> str:
    """Dataclass field -> CLI flag: learning_rate -> --learning-rate."""
    return "--" + field_name.replace("_", "-")


class FiniteFloat(click.ParamType):
    """A float that must be finite: '1e309' or 'nan' are refused as what they are."""

    name = "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is {'not a number' if math.isnan(number) else 'infinite'}; give a finite number",
                      param, ctx)
        return number


class WholeNumber(click.ParamType):
    """An integer, also written as a float with no fraction ('12.0', as `mlflow run` passes -P values)."""

    name = "integer"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        number = FiniteFloat().convert(value, param, ctx)
        if not number.is_integer():
            self.fail(f"{value!r} is not a whole number", param, ctx)
        return int(number)


def option_type(f: dataclasses.Field) -> Any:
    """The click type that reads a config field's value from the command line."""
    if "choices" in f.metadata:
        return click.Choice(f.metadata["choices"])
    return {"bool": click.BOOL, "int": WholeNumber(), "float": FiniteFloat()}.get(str(f.type), click.STRING)


def options_from(config_cls: type, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> Callable:
    """Decorator adding one click option per dataclass field (type, default and help from the field; `defaults`
    overrides a field's default for this command)."""
    def decorate(command: Callable) -> Callable:
        for f in reversed(dataclasses.fields(config_cls)):
            if f.name in exclude:
                continue
            default = (defaults or {}).get(f.name, f.default)
            command = click.option(flag_name(f.name), f.name, type=option_type(f), default=default, show_default=True,
                                   help=f.metadata.get("help", ""))(command)
        return command
    return decorate


def split_options(options: dict[str, Any], *config_classes: type) -> tuple[Any, ...]:
    """One config object per class, each built from the options named after its fields."""
    return tuple(cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.name in options})
                 for cls in config_classes)


#: The MLflow experiment of `asl-mlops` runs when none is chosen (MLFLOW_EXPERIMENT_NAME/ID, `mlflow run`).
DEFAULT_EXPERIMENT = "asl-mlops"


def use_default_experiment() -> None:
    """Put this command's runs in the 'asl-mlops' experiment unless the user or `mlflow run` chose one.
    Through MLFLOW_EXPERIMENT_NAME, so nothing is written before a run starts (and worker processes inherit it)."""
    if not any(os.environ.get(k) for k in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")):
        os.environ["MLFLOW_EXPERIMENT_NAME"] = DEFAULT_EXPERIMENT


def user_errors(command: Callable) -> Callable:
    """Turn InputError into `error: <message>` on stderr and exit code 2."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as err:
            click.echo(f"error: {err}", err=True)
            explain_refused_run(str(err))
            sys.exit(2)
    return wrapper


def explain_refused_run(message: str) -> None:
    """Under `mlflow run`, MLflow made the run before this command refused its input; say why on it (its
    description and an `error` tag), so it is not an empty FAILED run. MLflow marks it FAILED on the exit code."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient()
        client.set_tag(run_id, "error", message[:5000])
        client.set_tag(run_id, "mlflow.note.content", f"Refused: {message}")
    except MlflowException:  # the store itself may be the problem; the message is on stderr either way
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Train, evaluate, tune and serve an ASL fingerspelling letter recognizer, tracked in MLflow.

    MLflow's tracking store is taken from MLFLOW_TRACKING_URI; unset, it is ./mlflow.db (SQLite).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.group()
def data() -> None:
    """Get, make and check data: Sign Language MNIST CSV files, or photo folders (one sub-folder per letter)."""


@data.command("download")
@click.option("--dataset", type=click.Choice(["sign-mnist", "asl-alphabet", "massey"]), default="sign-mnist",
              show_default=True, help="Kaggle dataset: sign-mnist (the two CSVs), asl-alphabet "
                                      "(grassknoted/asl-alphabet) or massey (ayuraj/asl-dataset), the last two as a "
                                      "photo folder DEST/<dataset>/<LETTER>/.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True,
              help="Folder to put the CSVs or the photo folder in.")
@user_errors
def data_download(dataset: str, dest: Path) -> None:
    """Download a dataset from Kaggle (needs Kaggle credentials)."""
    from asl_mlops.data.download import download

    for path in download(dataset, dest):
        click.echo(str(path))


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write sign_mnist_train.csv and sign_mnist_test.csv to.")
@click.option("--train-rows", type=click.IntRange(min=24), default=DEMO_TRAIN_ROWS, show_default=True,
              help="Rows in the synthetic training CSV (balanced over the 24 letters).")
@click.option("--test-rows", type=click.IntRange(min=24), default=DEMO_TEST_ROWS, show_default=True,
              help="Rows in the synthetic test CSV.")
@click.option("--variants", type=click.IntRange(min=1), default=1, show_default=True,
              help="Near-identical images per synthetic photo in the training CSV (the real CSV has ~21); "
                   "with more than 1, grouped validation holds out whole photos.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed writes the same files.")
@user_errors
def data_synth(out: Path, train_rows: int, test_rows: int, variants: int, seed: int) -> None:
    """Write a learnable synthetic dataset in the exact Sign MNIST CSV format (for tests and demos)."""
    from asl_mlops.data.synth import write_synthetic

    for path in write_synthetic(out, train_rows=train_rows, test_rows=test_rows, seed=seed, variants=variants):
        click.echo(str(path))


@data.command("synth-photos")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write the letter folders to.")
@click.option("--per-letter", type=click.IntRange(min=1), default=4, show_default=True, help="Photos per letter.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed writes the same files.")
@user_errors
def data_synth_photos(out: Path, per_letter: int, seed: int) -> None:
    """Write a synthetic photo folder: letters drawn over noise, no hands (for tests of the folder format)."""
    from asl_mlops.data.synth import write_synthetic_photos

    click.echo(str(write_synthetic_photos(out, per_letter=per_letter, seed=seed)))


@data.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def data_validate(paths: tuple[Path, ...]) -> None:
    """Check Sign MNIST CSV files and photo folders; exit 2 naming the first bad row and column, or bad photo."""
    from asl_mlops.data.photos import LAYOUTS, is_photo_folder, load_photo_folder
    from asl_mlops.data.sign_mnist import load_csv
    from asl_mlops.labels import label_to_letter

    for path in paths:
        if is_photo_folder(path):
            photos = load_photo_folder(path)
            letters = "".join(sorted({label_to_letter(label) for label in photos.labels.tolist()}))
            signers = (f" of {len(photos.named_signers)} signers ({LAYOUTS[photos.layout]})"
                       if photos.layout != "letters" else "")
            click.echo(f"{path}: ok, {len(photos)} photos{signers}, letters {letters}, skipped folders "
                       f"{photos.skipped_folders}, content sha256 {photos.content_hash}")
            continue
        dataset = load_csv(path)
        counts = ", ".join(f"{n}" for n in sorted(set(dataset.labels.tolist())))
        click.echo(f"{path}: ok, {len(dataset)} rows, labels {counts}, content sha256 {dataset.content_hash}")


@main.command("train")
@options_from(TrainConfig)
@options_from(RegistryConfig)
@user_errors
def train_command(**options: Any) -> None:
    """Train, evaluate and log one model (the recognizer) to MLflow (what `mlflow run .` runs)."""
    use_default_experiment()
    import_tensorflow_quietly()
    from asl_mlops.tracking import check_tracking_server
    from asl_mlops.train import train_and_register
    from asl_mlops.gate import Verdict

    check_tracking_server()

    config, registry = split_options(options, TrainConfig, RegistryConfig)
    result, registration = train_and_register(config, registry)
    click.echo(f"run {result.run_id}: val_accuracy={result.val_accuracy:.4f} "
               f"test_accuracy={result.test.accuracy:.4f} ({result.test.errors} errors) model={result.model_uri}")
    if isinstance(registration, Verdict):  # the gate ran on the new version: its checks and decision
        click.echo(registration.report())
        if not registration.promoted:  # the next command a newcomer runs needs a champion: say how to get one
            name, version = registration.model_name, registration.version
            click.echo(f"{name} has no new champion. To use v{version} anyway: `asl-mlops registry promote {version} "
                       f"--model-name {name}` makes it champion, or --model-uri models:/{name}@challenger serves it "
                       "as it is")
    elif registration is not None:  # the run was registered and decided before
        click.echo(f"{registration.model_name} v{registration.version} {registration.decision}")


@main.command("evaluate")
@click.option("--model-uri", required=True,
              help="MLflow URI of a run's recognizer (runs:/RUN_ID/recognizer, or models:/m-ID) or a registered version "
                   f"({CHAMPION_URI}).")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Labelled data to evaluate on: a Sign MNIST CSV, or a photo folder for the photo recognizer.")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True, help="Prediction batch size.")
@click.option("--log/--no-log", default=True, show_default=True,
              help="Record the evaluation (metrics, report, plots) as an MLflow run named 'evaluate'.")
@user_errors
def evaluate_command(model_uri: str, data_path: Path, batch_size: int, log: bool) -> None:
    """Evaluate a logged recognizer on a labelled CSV or photo folder: accuracy, loss, per-letter report."""
    from asl_mlops.data.sign_mnist import load_csv

    # bad input fails here, before MLflow and TensorFlow are imported (a photo folder is checked the same way)
    dataset = None if data_path.is_dir() else load_csv(data_path)
    from asl_mlops.training.evaluate import evaluate_model_uri

    use_default_experiment()
    evaluation = evaluate_model_uri(model_uri, str(data_path), batch_size, log, dataset=dataset)
    click.echo(f"test_accuracy={evaluation.accuracy:.4f} test_loss={evaluation.loss:.4f} "
               f"errors={evaluation.errors} of {len(evaluation.y_true)}")


@main.command("tune")
@options_from(TrainConfig, exclude=SWEPT_FIELDS)
@options_from(SweepConfig)
@options_from(RegistryConfig, defaults={"register": TUNE_REGISTRY.register})
@user_errors
def tune_command(**options: Any) -> None:
    """Optuna sweep of learning_rate, decay_rate and l2: one parent MLflow run, one nested run per trial.

    The study is stored in --storage (default: optuna.db beside the MLflow store) under --study-name;
    re-running the same study resumes it up to --n-trials in total. The best trial's model is registered
    (--register) as 'challenger' and becomes 'champion' only if it passes the validation gate (`registry validate`).
    """
    import_tensorflow_quietly()
    from asl_mlops.tuning.sweep import run_sweep
    from asl_mlops.tuning.workers import WorkerFailed, run_workers

    base, sweep, registry = split_options(options, TrainConfig, SweepConfig, RegistryConfig)
    use_default_experiment()  # run_sweep / run_workers check the tracking server first
    if sweep.workers == 1:
        click.echo(run_sweep(base, sweep, registry).summary())
        return
    try:
        click.echo(run_workers(base, sweep, registry).summary())
    except WorkerFailed as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


@main.command("teach")
@click.argument("photos", type=click.Path(path_type=Path))
@options_from(TeachConfig)
@user_errors
def teach_command(photos: Path, **options: Any) -> None:
    """Teach the champion photo recognizer one person's hand: PHOTOS is their letter folders (PHOTOS/<LETTER>/*.jpg,
    as `serve --collect-dir DIR` keeps them in DIR/<name>/).

    Trains a new version exactly as the champion was trained (its own training data, as its run recorded it, must
    be here), with these photos added and weighted; logs one MLflow run with the photos as a dataset input;
    registers the version; and promotes it to 'champion' only if it passes the teach gate: the person's held-out
    photos read at least --min-taught-accuracy, other people's accuracy falls by at most --max-others-drop, and it
    answers within the serving latency limit. People taught before (as the champion's run recorded their folders)
    are taught again with these photos, and their held-out photos must still read at least --min-taught-accuracy.
    A server following models:/NAME@champion then switches to it. Teaching the same photos again does nothing.
    Exit code 0 if promoted (or nothing to do), 1 if the gate refused it, 2 for bad input.
    """
    from asl_mlops.data.photos import load_photo_folder

    load_photo_folder(photos)  # a bad folder fails here, in a second, before TensorFlow and MLflow are loaded
    use_default_experiment()
    import_tensorflow_quietly()
    from asl_mlops.teach import teach
    from asl_mlops.tracking import check_tracking_server

    check_tracking_server()
    result = teach(photos, TeachConfig(**options))
    if result is None:
        click.echo(f"{photos}: these photos are already taught to the champion; nothing to do")
        return
    click.echo(result.report())
    sys.exit(0 if result.verdict.promoted else 1)


@main.group("registry")
def registry_group() -> None:
    """Show registered recognizer versions, validate a challenger and move the 'champion' alias."""


MODEL_NAME_OPTION = click.option("--model-name", default=None,
                                 help="Registered model name (default: the only registered model; with several, "
                                      "the command lists them).")


@registry_group.command("show")
@MODEL_NAME_OPTION
@user_errors
def registry_show(model_name: str | None) -> None:
    """Print every version of the model: aliases, val/test accuracy, training data hash, run."""
    from asl_mlops.registry import list_versions, only_model_name, versions_table

    click.echo(versions_table(list_versions(only_model_name(model_name))))


@registry_group.command("validate")
@click.option("--version", default=None, type=click.IntRange(min=1),
              help="Version to validate (default: the one with the alias 'challenger').")
@MODEL_NAME_OPTION
@click.option("--data", "data_path", default=None,
              help="Labelled data to evaluate on: a Sign MNIST CSV, or for a photo recognizer a photo folder of "
                   "signers it never trained on (default: the version's run's test_data, if that path exists here).")
@click.option("--promote", is_flag=True, help="Move 'champion' to the version if every check passes (and remove "
                                              "'challenger' from it).")
@click.option("--dry-run", is_flag=True, help="Compute and print the verdict; write nothing (no run, tags, "
                                              "description or aliases).")
@options_from(GateConfig)
@user_errors
def registry_validate(version: int | None, model_name: str | None, data_path: str | None, promote: bool, dry_run: bool,
                      **thresholds: Any) -> None:
    """Run the validation gate on a version: accuracy, gain over the champion, worst letter's recall, serving
    latency in a fresh process. Records the verdict on the version. Exit code 0 if it passes, 1 if a check fails."""
    gate = GateConfig(**thresholds)
    from asl_mlops.registry import only_model_name
    from asl_mlops.gate import validate_version  # TensorFlow comes (quietly) only with a model to load

    use_default_experiment()
    verdict = validate_version(only_model_name(model_name), None if version is None else str(version), data_path, gate,
                               promote=promote, dry_run=dry_run)
    click.echo(verdict.report())
    sys.exit(0 if verdict.passed else 1)


@registry_group.command("promote")
@click.argument("version", type=click.IntRange(min=1))
@MODEL_NAME_OPTION
@user_errors
def registry_promote(version: int, model_name: str | None) -> None:
    """Point the 'champion' alias at VERSION by hand (no validation gate, no accuracy rule applied); the version's
    description and tags then say it was promoted by hand, over which verdict of the gate, by this command."""
    from asl_mlops.registry import only_model_name, promote

    registration = promote(str(version), only_model_name(model_name))
    click.echo(f"{registration.model_name} v{registration.version} {registration.decision}")


@main.command("predict")
@click.argument("images", nargs=-1, type=str)
@click.option("--model-uri", default=CHAMPION_URI, show_default=True,
              help="MLflow URI of the recognizer pyfunc model, loaded in this process.")
@click.option("--endpoint", default=None,
              help="URL of a running `asl-mlops serve` or `mlflow models serve` (e.g. http://127.0.0.1:5001); used "
                   "instead of --model-uri.")
@user_errors
def predict_command(images: tuple[str, ...], model_uri: str, endpoint: str | None) -> None:
    """Print `path: letter (confidence)` for each image file (PNG/JPEG).

    The photo recognizer adds the hand's box, or says why there is no letter: `path: not sure (maybe B 0.410, D
    0.220, F 0.100), hand at ...` (its best guesses) or `path: no hand found`.

    With no IMAGES, reads one path per line from standard input until a line `x` (or end of input).
    Unreadable or invalid files print `error: ...` and the rest go on; the exit code is 2 if any failed.
    """
    from asl_mlops.serving.client import (
        endpoint_predictor,
        local_predictor,
        paths_from,
        run,
    )

    predictor = endpoint_predictor(endpoint) if endpoint else local_predictor(model_uri)
    paths = images or paths_from(sys.stdin, prompt=sys.stderr if sys.stdin.isatty() else None)
    if run(paths, predictor):
        sys.exit(2)


@main.command("serve")
@options_from(ServeConfig)
@user_errors
def serve_command(**options: Any) -> None:
    """Serve the recognizer over HTTP until Ctrl-C: MLflow's scoring app (the same requests and answers as
    `mlflow models serve`) under uvicorn workers, with request limits and Prometheus metrics.

    Endpoints: GET / (a web page: upload a photo or turn on the camera and see the letter), POST /invocations,
    GET /ping and /health, GET /version, GET /metrics (Prometheus); with --collect-dir, GET and POST /teach (teach
    mode: the page keeps photos people show it). With --model-uri models:/NAME@ALIAS it follows the alias
    (--poll-seconds) and every answer names its version in the x-model-version header.
    Missing or other Content-Types get 415, bodies over --max-body-bytes 413 (before they are read),
    JSON that is a list, malformed or nested over 32 levels 400, and so do the model's own checks of a request.
    One access-log line per request on stdout: client, method, path, status, rows, milliseconds.
    """
    from asl_mlops.serving.app import serve

    serve(ServeConfig(**options))


if __name__ == "__main__":
    main()
