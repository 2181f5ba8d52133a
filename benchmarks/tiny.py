"""What a script's `--tiny` runs on: a few synthetic rows or a few real hand photos, one short training.

`--tiny` runs a whole script in seconds (tests/test_benchmarks.py runs every script so), writing its JSON to
`--out` only; its figures measure nothing. A module the scripts import, not a script.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The real hand photos beside the repository (one folder per letter, with manifest.csv naming each signer).
HANDS = ROOT.parent / "shared" / "data" / "hands"
#: TrainConfig changes of a tiny Sign MNIST run: one narrow network for one epoch.
TRAIN = {"epochs": 1, "ensemble": "1", "cnn_filters": "8,8,8", "batch_size": 64}
#: Signers whose photos a tiny photo run copies, and how many of each letter: three, so a run can hold one out for
#: testing and another for validation.
SIGNERS = ("massey-hand1", "massey-hand2", "t32rahman")
PER_LETTER = 2


def folder(script: str) -> Path:
    """A temporary folder for a tiny run of `script`, removed when the script exits."""
    path = Path(tempfile.mkdtemp(prefix=f"{script}-tiny-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def sign_mnist(folder: Path, train_rows: int = 480, test_rows: int = 96) -> tuple[Path, Path]:
    """Synthetic Sign MNIST training and test CSVs in `folder`; the training rows come in families of four
    near-duplicates, as the real CSV's photos do."""
    from asl_mlops.data.synth import write_synthetic

    return write_synthetic(folder, train_rows=train_rows, test_rows=test_rows, variants=4)


def hands(folder: Path, signers: tuple[str, ...] = SIGNERS, per_letter: int = PER_LETTER) -> Path:
    """The first `per_letter` real photos of each letter by each of `signers`, copied from HANDS into signer
    folders (folder/<signer>/<LETTER>/); exits saying so when HANDS is missing (synthetic photos hold no hand)."""
    import csv

    if not (HANDS / "manifest.csv").is_file():
        sys.exit(f"--tiny needs real hand photos in {HANDS} (with manifest.csv)")
    kept: dict[tuple[str, str], int] = {}
    with open(HANDS / "manifest.csv", newline="") as manifest:
        for row in csv.DictReader(manifest):
            key = (row["signer"], row["letter"])
            if row["signer"] in signers and kept.get(key, 0) < per_letter:
                kept[key] = kept.get(key, 0) + 1
                target = folder / row["signer"] / row["letter"]
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(HANDS / row["path"], target)
    return folder
