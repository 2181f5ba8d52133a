"""The single mapping between Sign MNIST labels, model class indices and letters.

Sign MNIST labels are 0-24 with 9 (J, which needs motion) unused, and Z (25) absent. The model has
24 outputs, so class index != label after I: class 9 is label 10 = K. Everything that turns a
label, a class index or a letter into another goes through this module.
"""

import numpy as np

#: The highest Sign MNIST label (Y), and the one below it that never occurs (J, which needs motion).
MAX_LABEL = 24
UNUSED_LABEL = 9
#: Labels that occur in Sign MNIST, in class-index order.
LABELS: tuple[int, ...] = tuple(label for label in range(MAX_LABEL + 1) if label != UNUSED_LABEL)
#: Letter of each class index: A-Y without J.
LETTERS: tuple[str, ...] = tuple(chr(ord("A") + label) for label in LABELS)
NUM_CLASSES: int = len(LABELS)  # 24

_LABEL_TO_INDEX = np.full(MAX_LABEL + 1, -1, dtype=np.int64)
_LABEL_TO_INDEX[list(LABELS)] = np.arange(NUM_CLASSES)


def invalid_labels(labels: np.ndarray) -> np.ndarray:
    """Which of `labels` (numbers) are not Sign MNIST labels: outside 0-24, or 9."""
    labels = np.asarray(labels)
    return (labels < 0) | (labels > MAX_LABEL) | (labels == UNUSED_LABEL)


def labels_to_indices(labels: np.ndarray) -> np.ndarray:
    """Map Sign MNIST labels (0-24, not 9) to class indices 0-23."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and invalid_labels(labels).any():
        raise ValueError(f"labels must be integers 0-{MAX_LABEL} except {UNUSED_LABEL}")
    return _LABEL_TO_INDEX[labels]


def indices_to_labels(indices: np.ndarray) -> np.ndarray:
    """Map class indices 0-23 to Sign MNIST labels."""
    return np.asarray(LABELS, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]


def index_to_letter(index: int) -> str:
    """Letter of a class index (0 -> 'A', 9 -> 'K')."""
    return LETTERS[int(index)]


def label_to_letter(label: int) -> str:
    """Letter of a Sign MNIST label (0 -> 'A', 10 -> 'K')."""
    return LETTERS[int(labels_to_indices(np.array([label]))[0])]


def letter_to_label(letter: str) -> int:
    """Sign MNIST label of a letter ('K' -> 10)."""
    return LABELS[LETTERS.index(letter.upper())]
