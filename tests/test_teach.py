"""`asl-mlops teach PHOTOS`: one person's photos retrain the champion photo recognizer; the new version is registered,
gated (the person's held-out photos, other people's accuracy, serving) and promoted only if it passes; a harmful
version is refused with the check named; the champion's training data out of reach is a clear error that leaves
nothing behind. Real hands (../shared/data/hands), a real `mlflow run`, a real SQLite registry, the real CLI."""

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


def person_folder(root: Path, letters_of: dict[str, str] | None = None) -> Path:
    """PERSON's photos as teach mode keeps them: root/PERSON/<LETTER>/*.jpg; `letters_of` files each letter's
    photos under another letter (a person teaching it wrong)."""
    folder = root / PERSON
    for letter in LETTERS:
        target = folder / (letters_of or {}).get(letter, letter)
        target.mkdir(parents=True, exist_ok=True)
        for photo in real_hand_photos(letter, PERSON, 4):
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
    done = teach(champion, person_folder(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    after = client.get_model_version_by_alias(NAME, "champion")
    assert int(after.version) > int(before.version)
    assert f"taught {PERSON}: 72 photos taught, 24 held out" in done.stdout
    assert f"-> {NAME} v{after.version}" in done.stdout and "promoted" in done.stdout
    tags = after.tags
    assert tags["validation_status"] == "passed" and tags["taught_signer"] == PERSON
    assert tags["taught_from_version"] == str(before.version)
    for check in ("taught_accuracy", "others_drop", "serving_latency"):
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


def test_a_taught_version_that_would_hurt_other_people_is_refused_with_the_check_named(champion, tmp_path):
    client = client_of(champion)
    before = client.get_model_version_by_alias(NAME, "champion")
    # Every letter's photos filed under the next letter, weighing 200 photos each: the recognizer learns the
    # person's mistakes and reads other people's hands wrong.
    shifted = {letter: LETTERS[(i + 1) % len(LETTERS)] for i, letter in enumerate(LETTERS)}
    done = teach(champion, person_folder(tmp_path, shifted), "--teach-weight", "200")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "others_drop" in done.stdout and "not promoted: failed others_drop" in done.stdout
    assert client.get_model_version_by_alias(NAME, "champion").version == before.version
    newest = max(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    assert newest.tags["validation_status"] == "failed"
    assert newest.tags["validation.others_drop"].endswith("fail")


def test_teach_without_the_champions_training_data_says_where_it_looked_and_leaves_nothing(champion, tmp_path):
    client = client_of(champion)
    versions = len(client.search_model_versions(f"name = '{NAME}'"))
    runs = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    train = champion["root"] / "train"
    moved = champion["root"] / "train-moved"
    train.rename(moved)
    try:
        done = teach(champion, person_folder(tmp_path))
    finally:
        moved.rename(train)
    assert done.returncode == 2
    assert f"was trained with train_data {train}" in done.stderr and "not a folder here" in done.stderr
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
        assert "one person's letter folders" in done.stderr
