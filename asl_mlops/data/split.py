"""Split stage: hold out validation (or a stand-in test set) from the training CSV, or whole signers from photos.

Sign MNIST's training CSV holds about 21 near-identical variants of each source photo (shifted,
re-filtered, brightened). A random row split puts twins of every validation image in training, so
validation accuracy saturates near 100% and cannot rank models. The `grouped` split finds those
families and holds out whole families instead, so validation images are new photos, as test images are.

How families are found (`find_families`): each image is shrunk to 14x14 by 2x2 mean pooling,
mean-centred and scaled to unit length; two images of the same label whose cosine similarity is at
least `FAMILY_SIMILARITY` are linked, and a family is a connected component of those links. On the
real training CSV (27,455 rows) this gives 1,246 families in about 1 s: median size 21; 93% have 17-21
members, 5% have 39-42 and 1% 61-84 (photos whose variants are near-identical to another photo's), and
7 are singletons. The count is stable around the threshold (1,188 at 0.97, 1,310 at 0.99): variants of
one photo are >= 0.997 alike, different photos well below.

What it buys, measured on the real CSV with the same features: the median similarity of a validation
image to its nearest training image is 1.000 for a random split (1% quantile 0.998), but 0.863 for the
default grouped split (1% quantile 0.594; 0.872 and 0.593 at val_fraction 0.2), close to the withheld test
set's 0.89 (0.62).

Photos whose signers are known (signer folders or a manifest.csv, `asl_mlops.data.photos`) have the same problem
with a different cure: frames of one person are near-duplicates, so `signer_split` holds out whole signers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from asl_mlops.config import VAL_SPLITS
from asl_mlops.data.sign_mnist import IMAGE_SIZE, Dataset
from asl_mlops.errors import InputError

#: Cosine similarity (of 14x14 mean-pooled, mean-centred images) at or above which two images of one
#: label are variants of one photo. See the module docstring for how the family count varies with it.
FAMILY_SIMILARITY = 0.98
_BLOCK_ROWS = 2048  # rows per similarity block, so memory stays O(block x label size)


def family_features(images: np.ndarray) -> np.ndarray:
    """Unit-length, mean-centred 14x14 mean-pooled images (N, 196), float32; a flat image is all zeros."""
    images = np.asarray(images, dtype=np.float32)
    n, side = len(images), IMAGE_SIZE // 2
    flat = images.reshape(n, side, 2, side, 2).mean(axis=(2, 4)).reshape(n, side * side)
    flat -= flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 1e-6)


def find_families(dataset: Dataset, similarity: float = FAMILY_SIMILARITY) -> np.ndarray:
    """Family id (0..F-1) of every row: connected components of same-label images whose features'
    cosine similarity is >= `similarity`. Deterministic: depends on the data only."""
    features = family_features(dataset.images)
    rows, cols = [], []
    for label in np.unique(dataset.labels):
        idx = np.flatnonzero(dataset.labels == label)
        for start in range(0, len(idx), _BLOCK_ROWS):
            block = idx[start:start + _BLOCK_ROWS]
            i, j = np.nonzero(features[block] @ features[idx].T >= similarity)
            rows.append(block[i])
            cols.append(idx[j])
    n = len(dataset)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    _, family = connected_components(graph, directed=False)
    return family.astype(np.int64)


@dataclass(frozen=True)
class Split:
    """Two disjoint parts of one dataset, and how they were made (logged with the run)."""

    train: Dataset
    held_out: Dataset
    families: int | None = None  # near-duplicate families found (grouped splits only)
    held_out_families: int | None = None

    def params(self, prefix: str = "val") -> dict[str, int]:
        """MLflow params describing the split, e.g. `val_families` and `families`."""
        if self.families is None:
            return {}
        return {"families": self.families, f"{prefix}_families": self.held_out_families}


def _subset(dataset: Dataset, idx: np.ndarray) -> Dataset:
    idx = np.sort(idx)  # keep file order inside each part; the trainer shuffles
    return Dataset(images=dataset.images[idx], labels=dataset.labels[idx], source=dataset.source)


def stratified_split(labels: np.ndarray, fraction: float, seed: int,
                     what: str = "val_fraction") -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices, each sorted: `fraction` of each label's rows held out at random, seeded (rounded,
    at least one and never all of a label; a label with a single row stays kept, as `grouped_split` keeps at least
    one family per label). Rows of a CSV (`random_split`) and photos without signers split this way."""
    _check_fraction(fraction, what)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > 1:
            count = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
            held.extend(rng.choice(members, size=count, replace=False).tolist())
    if not held:
        raise InputError(f"{what}: nothing to hold out: no label has two rows or more ({len(labels)} rows)")
    held_out = np.sort(np.array(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def random_split(dataset: Dataset, fraction: float, seed: int, what: str = "val_fraction") -> Split:
    """Stratified (per-label) random row split: `fraction` of the rows held out (`stratified_split`)."""
    keep, held = stratified_split(dataset.labels, fraction, seed, what)
    return Split(_subset(dataset, keep), _subset(dataset, held))


def grouped_split(dataset: Dataset, fraction: float, seed: int, what: str = "val_fraction") -> Split:
    """Hold out `fraction` of the near-duplicate families (whole families), stratified by label, and at least
    as many families as there are labels (so a small `fraction` of a small dataset still splits)."""
    from sklearn.model_selection import train_test_split

    _check_fraction(fraction, what)
    family = find_families(dataset)
    n_families = int(family.max()) + 1
    # Families never span labels (only same-label images are linked), so stratifying families by their
    # label stratifies rows by label too.
    family_label = np.zeros(n_families, np.int64)
    family_label[family] = dataset.labels
    labels = np.unique(dataset.labels)
    held_count = max(math.ceil(fraction * n_families), len(labels))
    try:
        _, held_families = train_test_split(np.arange(n_families), test_size=held_count, stratify=family_label,
                                            random_state=seed)
    except ValueError as err:
        if np.bincount(family_label)[labels].min() < 2:  # a label with a single family cannot be on both sides
            why = (f"it has {n_families} near-duplicate families for {len(labels)} labels, and a grouped split "
                   f"needs at least 2 per label ({err}); use --val-split random")
        else:  # holding out `held_count` leaves fewer training families than labels
            why = (f"holding out {held_count} of its {n_families} near-duplicate families leaves too few to train "
                   f"on ({err}); lower {what}, or use --val-split random")
        raise InputError(f"{what}: cannot hold out whole families of {dataset.source}: {why}") from None
    held = np.isin(family, held_families)
    return Split(_subset(dataset, np.flatnonzero(~held)), _subset(dataset, np.flatnonzero(held)),
                 families=n_families, held_out_families=len(held_families))


def signer_split(signers: np.ndarray, fraction: float, seed: int,
                 what: str = "val_fraction") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(training indices, held-out indices, held-out signers sorted): whole signers held out, seeded.

    Why: frames of one signer are near-duplicates of each other, so a random split measures recall of people
    already seen; holding out whole people makes the validation figure predict accuracy on new people. Signers are
    visited in a seeded random order and each is held out if the held-out photos stay within ceil(fraction * N);
    at least one signer is held out (the smallest, if none fits) and at least one stays in training. Every photo
    needs a known signer: "" (plain letter folders) is refused."""
    _check_fraction(fraction, what)
    signers = np.asarray(signers).astype(str).reshape(-1)
    if (signers == "").any():
        raise InputError(f"{what}: a signer split needs the signer of every photo, and {int((signers == '').sum())} "
                         f"of {len(signers)} have none; use signer folders or a manifest.csv (docs/photos.md)")
    names, signer_of, counts = np.unique(signers, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise InputError(f"{what}: a signer split needs at least 2 signers, found {len(names)} "
                         f"({', '.join(names.tolist()) or 'no photos'})")
    budget = math.ceil(fraction * len(signers))
    order = np.random.default_rng(seed).permutation(len(names))
    held: list[int] = []
    for name in order.tolist():
        if len(held) == len(names) - 1:
            break  # someone must stay to train on
        if counts[held].sum() + counts[name] <= budget:
            held.append(name)
    if not held:  # every signer alone is more than the budget: hold out the smallest (first in the order on ties)
        held.append(int(order[np.argmin(counts[order])]))
    held_out = np.isin(signer_of, held)
    return np.flatnonzero(~held_out), np.flatnonzero(held_out), tuple(sorted(names[held].tolist()))


def split_train_val(dataset: Dataset, val_split: str, val_fraction: float, split_seed: int) -> Split:
    """The training/validation split a run uses: `grouped` (whole families) or `random` (rows)."""
    if val_split == "grouped":
        return grouped_split(dataset, val_fraction, split_seed)
    if val_split == "random":
        return random_split(dataset, val_fraction, split_seed)
    raise InputError(f"val_split: {val_split!r} is not one of {', '.join(VAL_SPLITS)}")


def _check_fraction(fraction: float, what: str) -> None:
    if not 0.0 < fraction < 1.0:
        raise InputError(f"{what}: {fraction} must be between 0 and 1 (exclusive)")
