"""The single mapping between Sign MNIST labels, model class indices and letters.

Sign MNIST labels are 0-24 with 9 (J, which needs motion) unused, and Z (25) absent. The model has
24 outputs, so class index != label after I: class 9 is label 10 = K. Everything that turns a
label, a class index or a letter into another goes through this module.
"""

import numpy as np

#: Labels that occur in Sign MNIST, in class-index order.
LABELS: tuple[int, ...] = tuple(label for label in range(25) if label != 9)
#: Letter of each class index: A-Y without J.
LETTERS: tuple[str, ...] = tuple(chr(ord("A") + label) for label in LABELS)
NUM_CLASSES: int = len(LABELS)  # 24

_LABEL_TO_INDEX = np.full(25, -1, dtype=np.int64)
_LABEL_TO_INDEX[list(LABELS)] = np.arange(NUM_CLASSES)


def labels_to_indices(labels: np.ndarray) -> np.ndarray:
    """Map Sign MNIST labels (0-24, not 9) to class indices 0-23."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 24 or np.any(labels == 9)):
        raise ValueError("labels must be integers 0-24 except 9")
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
