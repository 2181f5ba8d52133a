"""Tests for asl_mlops.labels: the one label <-> class index <-> letter mapping."""

import numpy as np
import pytest

from asl_mlops.labels import (
    LABELS,
    LETTERS,
    NUM_CLASSES,
    index_to_letter,
    indices_to_labels,
    label_to_letter,
    labels_to_indices,
    letter_to_label,
)


def test_24_classes_without_j_and_z() -> None:
    assert NUM_CLASSES == len(LABELS) == len(LETTERS) == 24
    assert 9 not in LABELS and "J" not in LETTERS and "Z" not in LETTERS
    assert "".join(LETTERS) == "ABCDEFGHIKLMNOPQRSTUVWXY"


@pytest.mark.parametrize("index", range(NUM_CLASSES))
def test_round_trips(index: int) -> None:
    label = int(indices_to_labels(np.array([index]))[0])
    letter = index_to_letter(index)
    assert int(labels_to_indices(np.array([label]))[0]) == index
    assert label_to_letter(label) == letter
    assert letter_to_label(letter) == label
    assert letter_to_label(letter.lower()) == label


def test_k_is_label_10_and_class_index_9() -> None:
    # The original bug: chr(65 + class_index) calls class 9 'J' and is off by one after I.
    assert letter_to_label("K") == 10
    assert int(labels_to_indices(np.array([10]))[0]) == 9
    assert index_to_letter(9) == "K" != chr(65 + 9)
    assert label_to_letter(10) == "K"
    assert index_to_letter(23) == "Y" and label_to_letter(24) == "Y"


def test_vectorised_round_trip() -> None:
    labels = np.array(LABELS * 2, dtype=np.int64)
    np.testing.assert_array_equal(indices_to_labels(labels_to_indices(labels)), labels)
    np.testing.assert_array_equal(labels_to_indices(np.array(LABELS)), np.arange(24))


@pytest.mark.parametrize("bad", [9, 25, -1])
def test_rejects_labels_outside_sign_mnist(bad: int) -> None:
    with pytest.raises(ValueError):
        labels_to_indices(np.array([0, bad]))
    with pytest.raises(ValueError):
        label_to_letter(bad)


def test_rejects_unknown_letters() -> None:
    for letter in ("J", "Z"):
        with pytest.raises(ValueError):
            letter_to_label(letter)
