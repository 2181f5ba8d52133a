"""`asl-mlops teach PHOTOS`: one person's photos retrain the champion photo recognizer; the new version is registered,
gated (the person's held-out photos, other people's accuracy, serving) and promoted only if it passes; a harmful
version is refused with the check named; the champion's training data out of reach is a clear error that leaves
nothing behind. Real hands (../shared/data/hands), a real `mlflow run` (shared with the other modules that serve a
photo recognizer: tests/photo_model.py), a real SQLite registry of this module's own, the real CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL_HANDS, real_hand_photos
from mlflow.tracking import MlflowClient

from asl_mlops.labels import LETTERS

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not REAL_HANDS.is_dir(), reason=f"no real hand photos at {REAL_HANDS}")]

NAME = "asl-recognizer"
PERSON = "mandeep888"  # a signer the small champion never saw (4 photos a letter)


def person_folder(root: Path, letters_of: dict[str, str] | None = None, person: str = PERSON) -> Path:
    """`person`'s photos as teach mode keeps them: root/person/<LETTER>/*.jpg; `letters_of` files each letter's
    photos under another letter (a person teaching it wrong)."""
    folder = root / person
    for letter in LETTERS:
        target = folder / (letters_of or {}).get(letter, letter)
        target.mkdir(parents=True, exist_ok=True)
        for photo in real_hand_photos(letter, person, 4):
            shutil.copy(photo, target / f"{letter}-{photo.name}")
    return folder


@pytest.fixture(scope="module")
def champion(tmp_path_factory, hand_model) -> dict:
    """A small photo recognizer trained with `mlflow run .` on one signer, registered and made champion."""
    from photo_model import train_photo_recognizer

    root = tmp_path_factory.mktemp("teach")
    env = train_photo_recognizer(root, hand_model)
    return {"root": root, "env": env}


def client_of(champion: dict) -> MlflowClient:
    return MlflowClient(champion["env"]["MLFLOW_TRACKING_URI"], champion["env"]["MLFLOW_REGISTRY_URI"])


def teach(champion: dict, photos: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asl_mlops", "teach", str(photos), *args], env=champion["env"],
                          cwd=champion["root"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_teach_registers_gates_and_promotes_a_version_that_reads_the_person(champion, tmp_path):
    client = client_of(champion)
    before = client.get_model_version_by_alias(NAME, "champion")
    # The small champion's test folder has 49 photos: one photo is 2 points, so the 1-point others_drop floor would
    # turn on training noise here; 5 points still refuses a version that hurts (the next tests).
    done = teach(champion, person_folder(tmp_path), "--max-others-drop", "0.05")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    after = client.get_model_version_by_alias(NAME, "champion")
    assert int(after.version) > int(before.version)
    assert f"taught {PERSON}: 72 photos taught, 24 held out" in done.stdout
    assert f"-> {NAME} v{after.version}" in done.stdout and "promoted" in done.stdout
    tags = after.tags
    assert tags["validation_status"] == "passed" and tags["taught_signer"] == PERSON
    assert tags["taught_from_version"] == str(before.version)
    for check in ("taught_accuracy", "others_drop", "serving_latency"):  # nobody taught before: no earlier check
        assert tags[f"validation.{check}"].endswith("pass")
    assert float(tags["validation.taught_accuracy"].split()[0]) >= 0.9
    run = client.get_run(after.run_id)
    assert run.info.status == "FINISHED" and run.data.params["taught_signer"] == PERSON
    assert run.data.params["taught_photos"] == "72" and run.data.params["held_out_photos"] == "24"
    contexts = {tag.value for d in run.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"}
    assert {"training", "validation", "test", "teaching"} <= contexts
    # The same training data as the champion, by content.
    champion_params = client.get_run(before.run_id).data.params
    assert run.data.params["train_data_hash"] == champion_params["train_data_hash"]


def test_a_second_person_is_taught_on_top_of_the_first_and_the_same_photos_again_teach_nothing(champion, tmp_path):
    import json

    client = client_of(champion)
    first = person_folder(tmp_path / "first")
    assert teach(champion, first, "--max-others-drop", "0.05").returncode in (0, 1)
    done = teach(champion, person_folder(tmp_path, person="seeeeeeel"), "--max-others-drop", "0.05")
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-3000:]
    assert "taught seeeeeeel (and " in done.stdout and " taught before)" in done.stdout
    assert "earlier_taught_accuracy" in done.stdout  # the people taught before are checked too
    newest = max(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    run = client.get_run(newest.run_id)
    people = json.loads(run.data.params["taught_people"])
    assert {str(first.resolve()), str((tmp_path / "seeeeeeel").resolve())} <= set(people)
    assert run.data.params["taught_photos"] == str(72 * len(people))  # every taught person's photos trained
    # The first person's photos again, unchanged, after they were taught: nothing to do, nothing registered.
    if done.returncode == 0:
        versions = len(client.search_model_versions(f"name = '{NAME}'"))
        again = teach(champion, first)
        assert again.returncode == 0 and "already taught to the champion; nothing to do" in again.stdout
        assert len(client.search_model_versions(f"name = '{NAME}'")) == versions


def test_a_taught_version_that_would_hurt_other_people_is_refused_with_the_check_named(champion, tmp_path):
    client = client_of(champion)
    before = client.get_model_version_by_alias(NAME, "champion")
    # Every letter's photos filed under the next letter, weighing 200 photos each: the recognizer learns the
    # person's mistakes and reads other people's hands wrong.
    shifted = {letter: LETTERS[(i + 1) % len(LETTERS)] for i, letter in enumerate(LETTERS)}
    done = teach(champion, person_folder(tmp_path, shifted), "--teach-weight", "200")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "not promoted: failed" in done.stdout and "others_drop (accuracy on other people fell" in done.stdout
    assert client.get_model_version_by_alias(NAME, "champion").version == before.version
    newest = max(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    assert newest.tags["validation_status"] == "failed"
    assert newest.tags["validation.others_drop"].endswith("fail")


def test_teach_without_the_champions_training_data_says_where_it_looked_and_leaves_nothing(champion, tmp_path):
    client = client_of(champion)
    before = client.get_model_version_by_alias(NAME, "champion")
    # A champion whose run trained on a folder that is not on this machine: its params, but train_data elsewhere.
    params = dict(client.get_run(before.run_id).data.params)
    gone = tmp_path / "elsewhere" / "train"
    params["train_data"] = str(gone)
    run = client.create_run(client.get_run(before.run_id).info.experiment_id)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    from served_model import using_store

    with using_store(champion["env"]["MLFLOW_TRACKING_URI"]):  # the version's source is resolved in that store
        moved = client.create_model_version(NAME, before.source, run_id=run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", moved.version)
    versions = len(client.search_model_versions(f"name = '{NAME}'"))
    runs = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    try:
        done = teach(champion, person_folder(tmp_path))
    finally:
        client.set_registered_model_alias(NAME, "champion", before.version)
    assert done.returncode == 2
    assert f"was trained with train_data {gone}" in done.stderr and "not a folder here" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(client.search_model_versions(f"name = '{NAME}'")) == versions
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs


@pytest.mark.parametrize("layout", ["missing", "signers"])
def test_teach_refuses_photos_that_are_not_one_persons_letter_folders(champion, tmp_path, layout):
    photos = tmp_path / "nobody"
    if layout == "signers":
        person_folder(photos)  # photos/<PERSON>/<LETTER>/: several people's layout
    done = teach(champion, photos)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(photos) in done.stderr
    if layout == "signers":
        assert f"holds the photos of 1 people ({PERSON}): teach one person at a time" in done.stderr
