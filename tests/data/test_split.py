"""Train/validation splits: near-duplicate families and signers stay on one side; random splits stay stratified."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asl_mlops.data.sign_mnist import Dataset
from asl_mlops.data.split import (
    find_families,
    grouped_split,
    random_split,
    signer_split,
    split_train_val,
    stratified_split,
)
from asl_mlops.data.synth import make_synthetic
from asl_mlops.errors import InputError
from asl_mlops.labels import LABELS


@pytest.fixture(scope="module")
def balanced() -> Dataset:
    return make_synthetic(480, seed=4)  # 20 independent rows per label


@pytest.fixture(scope="module")
def families() -> Dataset:
    return make_synthetic(480, seed=4, variants=5)  # 4 photos per label, 5 near-identical images each


def _rows(dataset: Dataset) -> list[bytes]:
    return sorted(_rows_unsorted(dataset))


def test_families_are_the_photos_of_the_synthetic_set(families: Dataset) -> None:
    family = find_families(families)
    assert family.max() + 1 == 96 and set(np.bincount(family)) == {5}
    for f in range(96):  # a family is one label
        assert len(set(families.labels[family == f])) == 1


def test_independent_images_are_families_of_one(balanced: Dataset) -> None:
    assert find_families(balanced).max() + 1 == len(balanced)


def test_grouped_split_never_puts_a_family_on_both_sides(families: Dataset) -> None:
    split = grouped_split(families, 0.25, seed=0)
    family = find_families(families)
    row_family = {row: f for row, f in zip(_rows_unsorted(families), family)}
    train_families = {row_family[row] for row in _rows_unsorted(split.train)}
    val_families = {row_family[row] for row in _rows_unsorted(split.held_out)}
    assert not train_families & val_families
    assert len(val_families) == split.held_out_families == 24 and split.families == 96
    for label in LABELS:  # stratified: one of each label's four families held out
        assert np.sum(split.held_out.labels == label) == 5
    assert sorted(_rows(split.train) + _rows(split.held_out)) == _rows(families)
    assert split.params("val") == {"families": 96, "val_families": 24}


def _rows_unsorted(dataset: Dataset) -> list[bytes]:
    return [bytes([label]) + image.tobytes() for label, image in zip(dataset.labels, dataset.images)]


@pytest.mark.parametrize("val_split", ["grouped", "random"])
def test_same_seed_same_split_other_seed_other_split(families: Dataset, val_split: str) -> None:
    a = split_train_val(families, val_split, 0.25, split_seed=7)
    b = split_train_val(families, val_split, 0.25, split_seed=7)
    c = split_train_val(families, val_split, 0.25, split_seed=8)
    assert a.held_out.content_hash == b.held_out.content_hash and a.train.content_hash == b.train.content_hash
    assert a.held_out.content_hash != c.held_out.content_hash


def test_random_split_is_stratified_disjoint_and_complete(balanced: Dataset) -> None:
    split = random_split(balanced, 0.25, seed=0)
    assert (len(split.train), len(split.held_out)) == (360, 120)
    for label in LABELS:
        assert np.sum(split.held_out.labels == label) == 5
    assert not set(_rows(split.train)) & set(_rows(split.held_out))
    assert sorted(_rows(split.train) + _rows(split.held_out)) == _rows(balanced)
    assert split.params() == {}


def test_random_split_of_families_leaks_twins(families: Dataset) -> None:
    """Why grouped is the default: a random split validates on twins of training images."""
    split = random_split(families, 0.25, seed=0)
    family = dict(zip(_rows_unsorted(families), find_families(families)))
    train_families = {family[row] for row in _rows_unsorted(split.train)}
    assert all(family[row] in train_families for row in _rows_unsorted(split.held_out))


@pytest.mark.parametrize("val_split", ["grouped", "random"])
@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(balanced: Dataset, val_split: str, fraction: float) -> None:
    with pytest.raises(InputError, match="val_fraction"):
        split_train_val(balanced, val_split, fraction, split_seed=0)


def test_a_small_random_fraction_still_holds_out_one_row_per_label_and_keeps_single_rows() -> None:
    rows = make_synthetic(48, seed=0)  # 2 rows per label: 0.1 of them rounds to none
    split = random_split(rows, 0.1, seed=0)
    assert sorted(split.held_out.labels.tolist()) == sorted(LABELS)
    keep, held = stratified_split(np.array([3, 3, 3, 3, 5]), 0.5, seed=0)  # half the 3s; the single 5 stays kept
    assert len(held) == 2 and set(held) < {0, 1, 2, 3} and sorted(keep.tolist() + held.tolist()) == [0, 1, 2, 3, 4]


def test_a_random_split_with_no_label_of_two_rows_is_refused() -> None:
    with pytest.raises(InputError, match="val_fraction: nothing to hold out"):
        random_split(make_synthetic(24, seed=0), 0.1, seed=0)


def test_a_small_fraction_of_few_families_still_holds_out_one_family_per_label() -> None:
    photos = make_synthetic(240 * 5, seed=0, variants=5)  # 240 families, 10 per label
    split = grouped_split(photos, 0.05, seed=0)  # 0.05 of 240 is 12 families, fewer than the 24 labels
    assert split.held_out_families == 24 and len(split.held_out) == 24 * 5
    assert sorted(np.unique(split.held_out.labels)) == sorted(np.unique(photos.labels))


def test_grouped_split_needs_two_families_per_label() -> None:
    one_photo_per_label = make_synthetic(120, seed=0, variants=5)
    with pytest.raises(InputError, match="24 near-duplicate families for 24 labels.*--val-split random"):
        grouped_split(one_photo_per_label, 0.2, seed=0)


def test_unknown_val_split_is_refused(balanced: Dataset) -> None:
    with pytest.raises(InputError, match="val_split"):
        split_train_val(balanced, "stratified", 0.2, split_seed=0)


# --- signer split ----------------------------------------------------------------------------------


def signers_of(counts: list[int]) -> np.ndarray:
    """Photos of signers s00, s01, ... with the given photo counts, shuffled (as a loaded folder's are not)."""
    names = np.repeat([f"s{i:02d}" for i in range(len(counts))], counts)
    return np.random.default_rng(0).permutation(names)


@settings(max_examples=80, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=12), fraction=st.floats(0.05, 0.6),
       seed=st.integers(0, 2**32 - 1))
def test_signer_split_holds_out_whole_signers_within_the_fraction(counts: list[int], fraction: float,
                                                                 seed: int) -> None:
    signers = signers_of(counts)
    train, held, held_names = signer_split(signers, fraction, seed)
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(len(signers)))  # each photo once
    assert not set(signers[train]) & set(signers[held])  # nobody on both sides
    assert held_names == tuple(sorted(set(signers[held]))) and len(held_names) >= 1 and len(train) > 0
    if len(held_names) > 1 or np.sum(signers == held_names[0]) <= math.ceil(fraction * len(signers)):
        assert len(held) <= math.ceil(fraction * len(signers))
    else:  # nobody fits: the one held-out signer is the smallest
        assert len(held) == min(counts)
    again = signer_split(signers, fraction, seed)
    assert all(np.array_equal(a, b) for a, b in zip(again[:2], (train, held))) and again[2] == held_names


def test_signer_split_differs_across_seeds_on_twenty_signers() -> None:
    signers = signers_of([10 + i % 7 for i in range(20)])
    held = {signer_split(signers, 0.2, seed)[2] for seed in range(10)}
    assert len(held) >= 8
    assert all(3 <= len(names) <= 4 for names in held)  # 0.2 of 249 photos is 50, about 3-4 signers


def test_signer_split_keeps_a_signer_to_train_on() -> None:
    train, held, names = signer_split(np.array(["a", "a", "b"]), 0.9, seed=0)
    assert len(names) == 1 and len(train) > 0 and len(held) > 0


@pytest.mark.parametrize("signers, message", [
    (["alice"] * 5, r"needs at least 2 signers, found 1 \(alice\)"),
    (["alice", "", "bob"], r"needs the signer of every photo, and 1 of 3 have none"),
])
def test_signer_split_refuses_one_or_unknown_signers(signers: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        signer_split(np.array(signers), 0.2, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_signer_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(InputError, match="val_fraction"):
        signer_split(np.array(["a", "b"]), fraction, seed=0)
