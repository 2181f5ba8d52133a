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
