"""Kaggle downloads: the Sign MNIST CSVs and the ASL Alphabet and Massey photo sets, laid out as letter folders.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from asl_mlops.data.photos import _EXPECTED, _LETTER_OF_NAME
from asl_mlops.data.sign_mnist import CSV_NAMES
from asl_mlops.errors import InputError

logger = logging.getLogger(__name__)
KAGGLE_DATASET = "datamunge/sign-language-mnist"
KAGGLE_URL = "https://www.kaggle.com/datasets/datamunge/sign-language-mnist"


# ---------------------------------------------------------------------------------------------
# Download

# kagglehub's metadata request has no timeout, so an unreachable network can hang for minutes;
# a quick probe of the same API host fails in seconds instead (and honours HTTPS_PROXY like it).
KAGGLE_API = "https://api.kaggle.com"
PROBE_TIMEOUT = (5, 10)  # seconds: connect, read


def kaggle_dataset(handle: str, advice: Callable[[str], str]) -> Path:
    """`kagglehub.dataset_download(handle)`, after a quick probe of Kaggle's API host; a failure is an InputError
    whose message is `advice(reason)` (what went wrong, and how to get the data anyway)."""
    import kagglehub
    import requests
    from kagglehub import exceptions as kaggle_errors

    try:
        requests.head(KAGGLE_API, timeout=PROBE_TIMEOUT)
    except requests.RequestException as err:
        raise InputError(advice(f"cannot reach {KAGGLE_API} ({type(err).__name__}; offline?)")) from None
    started = time.monotonic()
    try:
        return Path(kagglehub.dataset_download(handle))
    except (requests.RequestException, kaggle_errors.CredentialError, kaggle_errors.UnauthenticatedError,
            kaggle_errors.BackendError, kaggle_errors.NotFoundError, kaggle_errors.DataCorruptionError,
            ValueError) as err:  # ValueError: a malformed ~/.kaggle/kaggle.json
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(advice(f"kagglehub failed after {time.monotonic() - started:.0f}s: {reason}")) from None


def download_sign_mnist(dest_dir: Path) -> list[Path]:
    """Download Sign MNIST from Kaggle with kagglehub and copy the two CSVs into dest_dir."""
    dest_dir = Path(dest_dir)
    dataset_dir = kaggle_dataset(KAGGLE_DATASET, _sign_mnist_help)
    copied = []
    for csv_name in CSV_NAMES:
        # The Kaggle archive has each CSV both at the top level and in a same-named folder.
        found = sorted(dataset_dir.rglob(csv_name), key=lambda p: len(p.parts))
        if not found:
            raise InputError(_sign_mnist_help(f"{csv_name} is not in the downloaded dataset at {dataset_dir}"))
        dest_dir.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copyfile(found[0], dest_dir / csv_name)))
    return copied


def _sign_mnist_help(reason: str) -> str:
    """One-line download failure message that says how to get the data anyway."""
    return (f"cannot download Kaggle dataset {KAGGLE_DATASET}: {reason}. Check the network and set KAGGLE_USERNAME "
            f"and KAGGLE_KEY (or put kaggle.json in ~/.kaggle/), or download the CSVs manually from {KAGGLE_URL} and put "
            f"{' and '.join(CSV_NAMES)} in data/")


# Photo datasets on Kaggle: name -> (handle, page). Sign MNIST (CSVs) is download_sign_mnist's.
KAGGLE_PHOTO_SETS: dict[str, tuple[str, str]] = {
    "asl-alphabet": ("grassknoted/asl-alphabet", "https://www.kaggle.com/datasets/grassknoted/asl-alphabet"),
    "massey": ("ayuraj/asl-dataset", "https://www.kaggle.com/datasets/ayuraj/asl-dataset"),
}
DATASETS: tuple[str, ...] = ("sign-mnist", *KAGGLE_PHOTO_SETS)



def download(dataset: str, dest: str | Path) -> list[Path]:
    """Download a Kaggle dataset into dest: "sign-mnist" -> the two CSVs (download_sign_mnist);
    "asl-alphabet", "massey" -> a photo folder dest/<dataset>/<LETTER>/. Returns what it wrote."""
    dest = Path(dest)
    if dataset == "sign-mnist":
        return download_sign_mnist(dest)
    if dataset not in KAGGLE_PHOTO_SETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    handle, url = KAGGLE_PHOTO_SETS[dataset]
    downloaded = kaggle_dataset(handle, lambda reason: _photos_help(handle, url, reason))
    return [layout_letter_folders(downloaded, dest / dataset)]


def _photos_help(handle: str, url: str, reason: str) -> str:
    """One-line download failure message that says how to get photos anyway."""
    return (f"cannot download Kaggle dataset {handle}: {reason}. Check the network and set KAGGLE_USERNAME and "
            f"KAGGLE_KEY (or put kaggle.json in ~/.kaggle/), or download it manually from {url}, or pass your own "
            f"photo folder ({_EXPECTED})")


def layout_letter_folders(source_root: Path, dest: Path) -> Path:
    """Copy (hard-link where possible) the letter folders of a downloaded tree into dest/<LETTER>/ and return dest.

    The letter folders are those of the directory under source_root with the most of them (the shallowest on a
    tie: Massey's archive holds its folders twice, nested). J, Z and other folders are left out. dest appears
    whole or not at all: it is built beside dest and renamed, replacing an earlier dest."""
    source_root, dest = Path(source_root), Path(dest)
    best: tuple[int, int, str] | None = None
    parent: Path | None = None
    for folder in sorted([source_root, *(p for p in source_root.rglob("*") if p.is_dir())]):
        letters = sum(1 for p in folder.iterdir() if p.is_dir() and p.name.lower() in _LETTER_OF_NAME)
        if letters and (best is None or (-letters, len(folder.parts), str(folder)) < best):
            best, parent = (-letters, len(folder.parts), str(folder)), folder
    if parent is None:
        raise InputError(f"{source_root}: no letter folders (A, B, ... Y) anywhere in the downloaded dataset")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp"))
    old = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared data folder from others
        for folder in sorted(parent.iterdir()):
            letter = _LETTER_OF_NAME.get(folder.name.lower())
            if folder.is_dir() and letter:
                shutil.copytree(folder, tmp / letter, copy_function=_link_or_copy, dirs_exist_ok=True)
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".", suffix=".old"))
            os.rename(dest, old / dest.name)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / dest.name).exists() and not dest.exists():
            os.rename(old / dest.name, dest)  # put the earlier copy back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("%s: letter folders of %s", dest, parent)
    return dest


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a downloaded file (no second copy on disk); copy where links don't work (another filesystem)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
