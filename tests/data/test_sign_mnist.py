"""Tests for asl_mlops.data: validation messages, content hashing, splitting, download errors."""

import re
import time
from pathlib import Path

import numpy as np
import pytest
from malformed import MALFORMED_CASES

from asl_mlops.data import download as data_download
from asl_mlops.data import sign_mnist
from asl_mlops.data.sign_mnist import COLUMNS, Dataset, load_csv, write_csv
from asl_mlops.data.synth import make_synthetic
from asl_mlops.errors import InputError
from asl_mlops.labels import LABELS


@pytest.mark.parametrize("case", sorted(MALFORMED_CASES))
def test_malformed_file_raises_input_error_naming_the_place(case: str, tmp_path: Path) -> None:
    write, expected = MALFORMED_CASES[case]
    path = write(tmp_path)
    with pytest.raises(InputError) as info:
        load_csv(path)
    message = str(info.value)
    assert re.search(expected, message), message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: file not found") as info:
        load_csv(tmp_path / "nope.csv")
    assert "asl-mlops data download" in str(info.value) and "asl-mlops data synth" in str(info.value)


def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    import os

    from asl_mlops.files import atomic_write

    old = os.umask(0o022)
    try:
        csv = write_csv(make_synthetic(8, seed=0), tmp_path / "train.csv")
        with atomic_write(tmp_path / "cache" / "entry.bin") as f:  # how every cache file is written
            f.write(b"x")
    finally:
        os.umask(old)
    assert csv.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "cache" / "entry.bin").stat().st_mode & 0o777 == 0o644


def test_valid_file_round_trips(tmp_path: Path) -> None:
    original = make_synthetic(48, seed=1)
    loaded = load_csv(write_csv(original, tmp_path / "train.csv"))
    assert loaded.images.shape == (48, 28, 28) and loaded.images.dtype == np.uint8
    assert loaded.labels.shape == (48,) and loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.images, original.images)
    np.testing.assert_array_equal(loaded.labels, original.labels)
    assert len(loaded) == 48
    assert loaded.source == str(tmp_path / "train.csv")
    assert loaded.content_hash == original.content_hash


def test_written_header_is_exact(tiny_csv: Path) -> None:
    header = tiny_csv.read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    assert header.startswith("label,pixel1,pixel2,") and header.endswith(",pixel784")


def test_csv_and_gz_hash_equal(tmp_path: Path) -> None:
    dataset = make_synthetic(30, seed=2)
    plain = load_csv(write_csv(dataset, tmp_path / "a.csv"))
    gz = load_csv(write_csv(dataset, tmp_path / "a.csv.gz"))
    assert plain.content_hash == gz.content_hash
    assert len(plain.content_hash) == 64


def test_gz_output_is_reproducible(tmp_path: Path) -> None:
    dataset = make_synthetic(30, seed=2)
    first = write_csv(dataset, tmp_path / "a.csv.gz").read_bytes()
    second = write_csv(dataset, tmp_path / "b.csv.gz").read_bytes()
    assert first == second


def test_different_content_different_hash() -> None:
    dataset = make_synthetic(30, seed=3)
    images = dataset.images.copy()
    images[0, 0, 0] ^= 1
    labels = dataset.labels.copy()
    labels[0] = LABELS[(LABELS.index(labels[0]) + 1) % len(LABELS)]
    assert Dataset(images, dataset.labels, "x").content_hash != dataset.content_hash
    assert Dataset(dataset.images, labels, "x").content_hash != dataset.content_hash


def test_dataset_is_read_only_but_callers_arrays_are_not() -> None:
    images = np.zeros((2, 28, 28), np.uint8)
    dataset = Dataset(images, np.array([0, 1], np.int64), "x")
    with pytest.raises(ValueError):
        dataset.images[0, 0, 0] = 1
    images[0, 0, 0] = 1  # the caller's own array stays writable


def test_lenient_on_crlf_bom_and_trailing_blank_lines(tiny_csv: Path, tmp_path: Path) -> None:
    text = tiny_csv.read_text()
    messy = tmp_path / "messy.csv"
    messy.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode() + b"\r\n\r\n")
    assert load_csv(messy).content_hash == load_csv(tiny_csv).content_hash


def test_first_bad_row_wins_over_later_parser_error(tiny_csv: Path, tmp_path: Path) -> None:
    # pandas stops at the over-long line 20; the earlier negative pixel on line 4 must be reported.
    lines = tiny_csv.read_text().splitlines()
    lines[3] = lines[3].replace(",", ",-1,", 1).rsplit(",", 1)[0]
    lines[19] += ",0"
    path = tmp_path / "two_errors.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"line 4, column pixel1: value -1 is outside 0-255"):
        load_csv(path)


def test_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "fake.csv.gz"
    path.write_text("label,pixel1\n")
    with pytest.raises(InputError, match=r"fake\.csv\.gz: not a readable gzip file"):
        load_csv(path)


# --- download ------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Simulate no network on any machine: route HTTPS through a closed local port, no credentials."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub-cache"))


@pytest.mark.usefixtures("offline")
def test_download_offline_fails_fast_and_says_what_to_do(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        data_download.download_sign_mnist(tmp_path / "data")
    assert time.monotonic() - started < 15
    message = str(info.value)
    for hint in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json",
                 "https://www.kaggle.com/datasets/datamunge/sign-language-mnist", "data/"):
        assert hint in message
    assert not (tmp_path / "data").exists()


@pytest.mark.usefixtures("offline")
def test_download_kagglehub_failure_is_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Get past the reachability probe so kagglehub itself meets the dead network.
    monkeypatch.setattr("requests.head", lambda *args, **kwargs: None)
    with pytest.raises(InputError, match="kagglehub failed"):
        data_download.download_sign_mnist(tmp_path / "data")


def test_download_copies_both_csvs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kagglehub

    cache = tmp_path / "cache"
    for name in sign_mnist.CSV_NAMES:  # Kaggle's layout: each CSV at the top and in a same-named folder
        (cache / name.removesuffix(".csv")).mkdir(parents=True)
        (cache / name).write_text(f"top {name}")
        (cache / name.removesuffix(".csv") / name).write_text(f"nested {name}")
    monkeypatch.setattr("requests.head", lambda *args, **kwargs: None)
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(cache))
    copied = data_download.download_sign_mnist(tmp_path / "data")
    assert copied == [tmp_path / "data" / name for name in sign_mnist.CSV_NAMES]
    assert [path.read_text() for path in copied] == [f"top {name}" for name in sign_mnist.CSV_NAMES]
