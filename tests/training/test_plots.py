"""The run's figures are legible: no title hidden under another axis's image."""

import numpy as np
import pytest

from asl_mlops.training.plots import misclassified_figure


@pytest.mark.parametrize("errors", [1, 7, 13, 40])
def test_misclassified_titles_are_not_covered_by_images(errors: int):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    y_true = rng.integers(0, 24, 100)
    y_pred = y_true.copy()
    y_pred[:errors] = (y_pred[:errors] + 1) % 24
    figure = misclassified_figure(images, y_true, y_pred)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == min(errors, 36)
    for ax in shown:
        title = ax.title.get_window_extent(renderer)
        for other in shown:
            assert not title.overlaps(other.get_window_extent(renderer)), f"{ax.get_title()!r} is covered"


def test_the_confusion_matrix_counts_photos_with_no_hand_in_a_column_of_their_own():
    from asl_mlops.training.plots import confusion_matrix_figure

    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, -1, 1, -1, -1, 3])
    figure = confusion_matrix_figure(y_true, y_pred)
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "no hand"
    counts = ax.images[0].get_array()
    assert counts.shape == (24, 25)
    assert counts[0, 24] == 1 and counts[2, 24] == 2 and counts[2, 3] == 1 and counts.sum() == len(y_true)


def test_without_missed_hands_the_confusion_matrix_is_square():
    from asl_mlops.training.plots import confusion_matrix_figure

    figure = confusion_matrix_figure(np.array([0, 1, 2]), np.array([0, 1, 1]))
    assert figure.axes[0].images[0].get_array().shape == (24, 24)


def test_the_reliability_figure_marks_the_threshold():
    from asl_mlops.training.plots import reliability_figure

    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 200)
    y_true = rng.integers(0, 24, 200)
    y_pred = np.where(rng.uniform(size=200) < confidence, y_true, (y_true + 1) % 24)
    y_pred[:5] = -1
    figure = reliability_figure(y_true, y_pred, confidence, 0.6)
    assert any("not sure below 0.60" in t.get_text() for t in figure.axes[1].get_legend().get_texts())
