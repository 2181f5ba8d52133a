"""asl_mlops.serving.client and `asl-mlops predict`: path loop (unit), and the CLI on a local model and a server (e2e)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from served_model import images_body

from asl_mlops.cli import main
from asl_mlops.errors import InputError
from asl_mlops.serving.client import Prediction, answer_line, paths_from, run


def test_paths_from_reads_until_x_or_end_of_input_and_skips_blank_lines():
    assert list(paths_from(io.StringIO("a.png\n\n  b.png  \nx\nc.png\n"))) == ["a.png", "b.png"]
    assert list(paths_from(io.StringIO("a.png\nb.png"))) == ["a.png", "b.png"]
    prompt = io.StringIO()
    assert list(paths_from(io.StringIO("x\n"), prompt=prompt)) == []
    assert "x to quit" in prompt.getvalue()


def test_run_reports_bad_files_in_file_words_and_goes_on(tmp_path: Path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(b"fake")
    bad.write_bytes(b"worse")

    def predictor(image_base64: str) -> Prediction:
        if image_base64 == "d29yc2U=":  # base64 of b"worse"
            raise InputError("row 0, column image: not a PNG or JPEG image")
        return Prediction("K", 10, 0.9876, [])

    out, err = io.StringIO(), io.StringIO()
    failures = run([str(bad), str(tmp_path / "missing.png"), str(good)], predictor, out, err)
    assert failures == 2
    assert out.getvalue() == f"{good}: K (0.988)\n"
    assert err.getvalue().splitlines() == [
        f"error: {bad}: not a PNG or JPEG image",  # the file's name, not the request's row and column
        f"error: {tmp_path / 'missing.png'}: cannot read file (No such file or directory)"]


def test_answer_lines_name_the_letter_or_why_there_is_none_with_the_guesses_and_the_box():
    box = {"x": 0.3125, "y": 0.12, "w": 0.4, "h": 0.75}
    top3 = [{"letter": "B", "probability": 0.41}, {"letter": "D", "probability": 0.2249},
            {"letter": "F", "probability": 0.1}]
    assert answer_line("a.png", Prediction("K", 10, 0.9876, [])) == "a.png: K (0.988)"
    assert answer_line("l.jpg", Prediction("L", 11, 0.981, top3, box)) == \
        "l.jpg: L (0.981), hand at x 0.31, y 0.12, w 0.40, h 0.75"
    assert answer_line("b.jpg", Prediction("", -1, 0.41, top3, box, "not sure")) == \
        "b.jpg: not sure (maybe B 0.410, D 0.225, F 0.100), hand at x 0.31, y 0.12, w 0.40, h 0.75"
    assert answer_line("wall.png", Prediction("", -1, 0.0, [], None, "no hand found")) == "wall.png: no hand found"


# --- e2e ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_files(served):
    """Three test-set images as PNG files, and the lines `asl-mlops predict` must print for them."""
    folder = served.workdir / "images"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(served.test_images[:3]):
        paths.append(folder / f"hand{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    predictions = served.post(images_body(served.test_images[:3])).json()["predictions"]
    lines = [f"{path}: {p['letter']} ({p['confidence']:.3f})" for path, p in zip(paths, predictions)]
    bad = folder / "notes.png"
    bad.write_text("not an image")
    return [str(p) for p in paths], lines, str(bad)


@pytest.mark.e2e
@pytest.mark.slow
def test_predict_files_with_the_local_registered_model(served_store, image_files):
    paths, lines, _ = image_files
    result = CliRunner().invoke(main, ["predict", *paths])  # default --model-uri models:/asl-recognizer@champion
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == lines


@pytest.mark.e2e
@pytest.mark.slow
def test_predict_with_the_local_model_in_a_real_process_prints_no_tensorflow_start_up_lines(served, image_files):
    paths, lines, _ = image_files
    cli = Path(sys.executable).parent / "asl-mlops"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    done = subprocess.run([str(cli), "predict", "--model-uri", "models:/asl-recognizer@champion", *paths],
                          capture_output=True, text=True, timeout=300,
                          env={**env, "MLFLOW_TRACKING_URI": served.tracking_uri,
                               "MLFLOW_REGISTRY_URI": served.tracking_uri})  # over any an earlier test set
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == lines
    for noise in ("cuInit", "cuda drivers", "oneDNN", "absl::InitializeLog"):
        assert noise not in done.stderr, done.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_predict_files_via_endpoint_bad_file_is_named_and_exit_is_nonzero(served, image_files):
    paths, lines, bad = image_files
    result = CliRunner().invoke(main, ["predict", "--endpoint", served.url, paths[0], bad, paths[1]])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [lines[0], lines[1]]
    assert result.stderr.strip() == f"error: {bad}: not a PNG or JPEG image (HTTP 400)"


@pytest.mark.e2e
@pytest.mark.slow
def test_predict_names_a_file_that_is_not_an_image_in_file_words(served_store, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: milk, eggs")
    result = CliRunner().invoke(main, ["predict", str(notes)])  # the local registered model
    assert result.exit_code == 2
    assert result.stderr == f"error: {notes}: not a PNG or JPEG image\n"


@pytest.mark.e2e
@pytest.mark.slow
def test_interactive_mode_reads_paths_from_stdin_until_x(served_store, image_files):
    paths, lines, _ = image_files
    stdin = f"{paths[0]}\n{paths[1]}\nx\n{paths[2]}\n"
    result = CliRunner().invoke(main, ["predict", "--model-uri", "models:/asl-recognizer@champion"], input=stdin)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == lines[:2]


@pytest.mark.e2e
@pytest.mark.slow
def test_interactive_mode_in_a_real_process_with_piped_stdin(served, image_files):
    paths, lines, bad = image_files
    cli = Path(sys.executable).parent / "asl-mlops"
    done = subprocess.run([str(cli), "predict", "--endpoint", served.url], input=f"{paths[2]}\n{bad}\n{paths[0]}\n",
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [lines[2], lines[0]]
    assert f"error: {bad}: not a PNG or JPEG image (HTTP 400)" in done.stderr
    assert "quit" not in done.stderr  # no prompts when stdin is not a terminal
