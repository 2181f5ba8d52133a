"""Pure plotting functions: arrays in, a matplotlib Figure out (Agg backend, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from asl_mlops.labels import LETTERS, NUM_CLASSES  # noqa: E402


def confusion_matrix_figure(y_true: np.ndarray, y_pred: np.ndarray, title: str = "Test confusion matrix") -> Figure:
    """Confusion matrix of class indices, letters on both axes."""
    fig, ax = plt.subplots(figsize=(11, 10))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(NUM_CLASSES), display_labels=list(LETTERS),
        ax=ax, colorbar=False, cmap="Blues", values_format="d")
    ax.set_title(title)
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
