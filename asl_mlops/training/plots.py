"""Pure plotting functions: arrays in, a matplotlib Figure out (Agg backend, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from asl_mlops.labels import LETTERS, NUM_CLASSES  # noqa: E402


def confusion_matrix_figure(y_true: np.ndarray, y_pred: np.ndarray, title: str = "Test confusion matrix") -> Figure:
    """Confusion matrix of class indices, letters on both axes; where predictions hold -1 (a photo with no hand
    found), a last column "no hand" counts them."""
    from sklearn.metrics import confusion_matrix

    no_hand = bool(np.any(np.asarray(y_pred) < 0))
    columns = [*range(NUM_CLASSES), -1] if no_hand else list(range(NUM_CLASSES))
    counts = confusion_matrix(y_true, y_pred, labels=columns)[:NUM_CLASSES]
    fig, ax = plt.subplots(figsize=(11.5 if no_hand else 11, 10))
    ax.imshow(counts, cmap="Blues", aspect="auto")
    peak = max(int(counts.max()), 1)
    for (i, j), count in np.ndenumerate(counts):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > peak / 2 else "black")
    ax.set_xticks(range(len(columns)), [*LETTERS, "no hand"][:len(columns)], rotation=90 if no_hand else 0)
    ax.set_yticks(range(NUM_CLASSES), list(LETTERS))
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reliability_figure(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray, threshold: float,
                       bins: int = 10) -> Figure:
    """Left: accuracy against confidence in `bins` bins (a calibrated recognizer follows the diagonal), with the
    photos per bin; right: coverage and answered accuracy as the "not sure" threshold moves, the chosen one
    marked. Photos with no hand found (y_pred -1) count as unanswered."""
    y_true, y_pred, confidence = np.asarray(y_true), np.asarray(y_pred), np.asarray(confidence, dtype=np.float64)
    found, right = y_pred >= 0, y_pred == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence[found], edges) - 1, 0, bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    accuracy = np.array([right[found][which == b].mean() if np.any(which == b) else np.nan for b in range(bins)])
    counts = np.bincount(which, minlength=bins)
    fig, (left, right_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
    left.bar(centres, np.nan_to_num(accuracy), width=1 / bins, alpha=0.6, edgecolor="tab:blue", label="accuracy")
    for x, n in zip(centres, counts):
        if n:
            left.text(x, 0.02, str(n), ha="center", fontsize=7)
    left.set_xlabel("confidence")
    left.set_ylabel("accuracy (photos per bin below)")
    left.set_title("Reliability of the confidence (photos with a hand)")
    left.legend(loc="upper left")
    grid = np.linspace(0.0, 1.0, 101)
    n = max(len(y_true), 1)
    coverage = [np.sum(found & (confidence >= t)) / n for t in grid]
    answered = [right[found & (confidence >= t)].mean() if np.any(found & (confidence >= t)) else np.nan for t in grid]
    right_ax.plot(grid, coverage, label="answered share of photos")
    right_ax.plot(grid, answered, label="accuracy of the answers")
    right_ax.axvline(threshold, color="tab:red", linestyle="--", label=f"not sure below {threshold:.2f}")
    right_ax.set_xlabel("threshold")
    right_ax.set_ylim(0, 1.02)
    right_ax.set_title("Answering only when sure")
    right_ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def training_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Left: accuracy and loss per epoch (train and validation); right: train vs validation accuracy."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, (ax_left, ax_right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
        if key in history:
            ax_left.plot(epochs, history[key], style, color="tab:blue", label=key)
    ax_left.set_xlabel("epoch")
    ax_left.set_ylabel("accuracy", color="tab:blue")
    ax_loss = ax_left.twinx()
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in history:
            ax_loss.plot(epochs, history[key], style, color="tab:red", label=key)
    ax_loss.set_ylabel("loss", color="tab:red")
    handles = ax_left.get_legend_handles_labels()[0] + ax_loss.get_legend_handles_labels()[0]
    ax_left.legend(handles, [h.get_label() for h in handles], loc="center right")
    ax_left.set_title("Accuracy and loss")
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        if key in history:
            ax_right.plot(epochs, history[key], marker="o", label=label)
    ax_right.set_xlabel("epoch")
    ax_right.set_ylabel("accuracy")
    ax_right.set_title("Train vs validation accuracy")
    ax_right.legend()
    fig.tight_layout()
    return fig


def misclassified_figure(images: "np.ndarray | Sequence[np.ndarray]", y_true: np.ndarray, y_pred: np.ndarray, max_images: int = 36) -> Figure:
    """Grid of up to `max_images` misclassified images (28x28 gray, or photo thumbnails) titled 'true X / pred Y'."""
    wrong = np.flatnonzero(y_true != y_pred)[:max_images]
    cols = 6
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    # constrained layout leaves room for every title (tight_layout let a row's images cover the next row's titles)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.1 + 0.4), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)  # RGB photo thumbnails ignore the colour map
        predicted = LETTERS[y_pred[i]] if y_pred[i] >= 0 else "no hand"
        ax.set_title(f"true {LETTERS[y_true[i]]} / pred {predicted}", fontsize=8,
                     color="tab:red")
    fig.suptitle(f"Misclassified test images: {int(np.sum(y_true != y_pred))} of {len(y_true)}"
                 + (f" (first {len(wrong)} shown)" if len(wrong) < np.sum(y_true != y_pred) else ""))
    return fig
