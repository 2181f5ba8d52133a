"""Calibrated confidence and the "not sure" threshold (asl_mlops.hands.calibration)."""

import numpy as np
import pytest

from asl_mlops.hands.calibration import (
    CONFIDENTLY,
    calibrate,
    fit_temperature,
    not_sure_threshold,
    reliability,
    tempered,
)


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs that are right 70% of the time but put ~0.95 on their top letter, a little more on the
    right ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 24, n)
    right = rng.uniform(size=n) < 0.7
    top = np.where(right, y, (y + rng.integers(1, 24, n)) % 24)
    logits = rng.normal(0, 0.3, (n, 24))
    logits[np.arange(n), top] += np.where(right, rng.uniform(5, 9, n), rng.uniform(4, 6, n))
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), y


def test_temperature_scaling_softens_an_overconfident_network_and_keeps_its_ranking():
    p, y = overconfident(2000, 0)
    t = fit_temperature(p, y)
    calibrated = tempered(p, t)
    assert t > 1.2
    np.testing.assert_array_equal(calibrated.argmax(axis=1), p.argmax(axis=1))
    assert abs(calibrated.max(axis=1).mean() - 0.7) < 0.05  # confidence now matches accuracy
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    np.testing.assert_allclose(tempered(p, 1.0), p, rtol=1e-6)


def test_the_threshold_is_the_lowest_that_reaches_the_accuracy_target():
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 0, 1, 0, 0], dtype=bool)
    assert not_sure_threshold(confidence, correct, 0.75) == 0.7  # top 5: 4 of 5 right
    assert not_sure_threshold(confidence, correct, 0.95) == 0.9
    assert not_sure_threshold(confidence, correct, 0.0) == 0.0
    assert not_sure_threshold(confidence, np.ones(7, dtype=bool), 0.95) == 0.0  # every answer qualifies
    never = not_sure_threshold(confidence, np.zeros(7, dtype=bool), 0.5)
    assert never > 0.99  # nothing reaches the target: never answer


def test_reliability_counts_no_hand_as_unanswered_and_confident_mistakes():
    y_true = np.array([0, 1, 2, 3, 4])
    y_pred = np.array([0, 2, -1, 3, 1])
    confidence = np.array([0.95, 0.92, 0.0, 0.5, 0.3])
    r = reliability(y_true, y_pred, confidence, threshold=0.4)
    assert r.top1 == pytest.approx(0.4)
    assert r.confidently_wrong == pytest.approx(0.2)  # 1 photo wrong at >= CONFIDENTLY
    assert CONFIDENTLY == 0.9
    assert r.coverage == pytest.approx(0.6) and r.answered_accuracy == pytest.approx(2 / 3)


def test_calibrate_returns_a_threshold_that_keeps_the_answers_accurate_on_new_data():
    p, y = overconfident(3000, 1)
    calibration = calibrate(p, y, 0.95)
    q, z = overconfident(3000, 2)
    calibrated = tempered(q, calibration.temperature)
    answered = calibrated.max(axis=1) >= calibration.not_sure_below
    assert 0.05 < answered.mean() < 0.95
    assert (calibrated.argmax(axis=1) == z)[answered].mean() > 0.9


def test_answers_put_no_hand_at_minus_one_with_no_confidence():
    from asl_mlops.hands.calibration import answers

    p = np.array([[0.1, 0.9], [0.7, 0.3]])
    y_pred, confidence = answers(p, np.array([True, False, True]))
    assert y_pred.tolist() == [1, -1, 0] and confidence.tolist() == [0.9, 0.0, 0.7]
