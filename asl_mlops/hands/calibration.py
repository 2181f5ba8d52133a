"""Calibration of the photo recognizer's confidence, and its "not sure" threshold, chosen on held-out signers.

A network trained on some people is more sure of itself than it is right about new people. Temperature scaling
(one number T, softmax(log p / T), Guo et al. 2017) is fitted to the validation signers' photos, which the
network never trained on, so its confidence means what it says for a new person. The "not sure" threshold is
then the lowest calibrated confidence at which the validation signers' answered letters are at least
`min_answered_accuracy` right: below it the recognizer names no letter (asl_mlops.recognizers.photos).

Pure NumPy/SciPy: probabilities and labels in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Confidence at or above which a wrong letter counts as "confidently wrong".
CONFIDENTLY = 0.9
#: Temperatures searched (log-spaced bounds for the scalar minimiser).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) of softmax outputs p (N, C): T > 1 softens, T < 1 sharpens, T = 1 keeps them."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature that minimises the cross-entropy of `probabilities` (N, C) against class indices `y_true`;
    1.0 when there is nothing to fit on."""
    from scipy.optimize import minimize_scalar

    if len(y_true) == 0:
        return 1.0
    rows = np.arange(len(y_true))

    def loss(log_t: float) -> float:
        return float(-np.log(np.clip(tempered(probabilities, np.exp(log_t))[rows, y_true], 1e-12, 1.0)).mean())

    low, high = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(minimize_scalar(loss, bounds=(low, high), method="bounded").x))


def not_sure_threshold(confidence: np.ndarray, correct: np.ndarray, min_answered_accuracy: float) -> float:
    """The lowest confidence threshold at which the answers it keeps (confidence >= threshold) are at least
    `min_answered_accuracy` right; 0.0 (always answer) for a target of 0 or when every answer qualifies, and just
    above the highest confidence (never answer) when no threshold reaches the target."""
    if min_answered_accuracy <= 0 or len(confidence) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    conf, right = np.asarray(confidence)[order], np.asarray(correct, dtype=np.float64)[order]
    accuracy_of_top = np.cumsum(right) / np.arange(1, len(right) + 1)  # accuracy of the k most confident answers
    ok = np.flatnonzero(accuracy_of_top >= min_answered_accuracy)
    if len(ok) == 0:
        return float(np.nextafter(conf[0], 2.0))
    k = ok[-1]  # the most answers that still reach the target
    if k == len(conf) - 1:
        return 0.0
    # Ties: answers with the same confidence are kept or refused together, so the cut sits at conf[k].
    return float(conf[k])


@dataclass(frozen=True)
class Reliability:
    """How far the confidence can be trusted on labelled photos (no hand found counts as not answered)."""

    photos: int
    top1: float  # share of photos with the right letter as the top guess (no hand = wrong)
    confidently_wrong: float  # share of photos answered with a wrong letter at confidence >= CONFIDENTLY
    coverage: float  # share of photos answered with a letter (hand found, confidence >= threshold)
    answered_accuracy: float  # share of answered photos that are right (nan if none answered)

    def metrics(self, prefix: str) -> dict[str, float]:
        """MLflow metrics (top-1 is the run's `<prefix>_accuracy` already)."""
        return {f"{prefix}_confidently_wrong": self.confidently_wrong,
                f"{prefix}_coverage": self.coverage, f"{prefix}_answered_accuracy": self.answered_accuracy}


def answers(probabilities: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, its confidence) of every photo from the (calibrated) probabilities of the photos where a
    hand was found: -1 and 0 where none was."""
    found = np.asarray(found, dtype=bool)
    y_pred, confidence = np.full(len(found), -1), np.zeros(len(found))
    y_pred[found], confidence[found] = probabilities.argmax(axis=1), probabilities.max(axis=1)
    return y_pred, confidence


def reliability(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray, threshold: float) -> Reliability:
    """`Reliability` of predictions: class indices (-1 = no hand found) and their calibrated confidence."""
    y_true, y_pred, confidence = np.asarray(y_true), np.asarray(y_pred), np.asarray(confidence, dtype=np.float64)
    n = max(len(y_true), 1)
    found = y_pred >= 0
    right = y_pred == y_true
    answered = found & (confidence >= threshold)
    return Reliability(
        photos=len(y_true), top1=float(right.sum() / n),
        confidently_wrong=float((found & ~right & (confidence >= CONFIDENTLY)).sum() / n),
        coverage=float(answered.sum() / n),
        answered_accuracy=float(right[answered].mean()) if answered.any() else float("nan"))


@dataclass(frozen=True)
class Calibration:
    """What a photo recognizer's run fitted on its validation signers: logged with the model and applied when
    serving."""

    temperature: float
    not_sure_below: float

    def params(self) -> dict[str, float]:
        return {"temperature": self.temperature, "not_sure_below": self.not_sure_below}


def calibrate(probabilities: np.ndarray, y_true: np.ndarray, min_answered_accuracy: float) -> Calibration:
    """Temperature and "not sure" threshold from softmax outputs (N, C) of validation hands and their classes."""
    temperature = fit_temperature(probabilities, y_true)
    calibrated = tempered(probabilities, temperature)
    correct = calibrated.argmax(axis=1) == np.asarray(y_true)
    return Calibration(temperature, not_sure_threshold(calibrated.max(axis=1), correct, min_answered_accuracy))
