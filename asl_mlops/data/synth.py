"""A learnable synthetic stand-in for Sign MNIST, in exactly its CSV format.

Tests, CI and offline demos need data without Kaggle. Each of the 24 classes is a distinct glyph
drawn with OpenCV; every sample gets its own shift, rotation, scale, stroke width, background,
brightness and noise, so a model has to learn the shapes rather than memorise pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from asl_mlops.config import DEMO_TEST_ROWS, DEMO_TRAIN_ROWS
from asl_mlops.data.photos import LETTER_FOLDERS
from asl_mlops.data.sign_mnist import IMAGE_SIZE, Dataset, write_csv
from asl_mlops.labels import LABELS, NUM_CLASSES

# Glyphs are drawn on a 2x canvas and shrunk while warping, which anti-aliases the strokes.
_CANVAS = 2 * IMAGE_SIZE
_STROKES = (3, 4, 5)  # canvas pixels, i.e. 1.5-2.5 px in the 28x28 image
_MAX_SHIFT = 3.0  # px; Sign MNIST hands are roughly but not exactly centred
_MAX_ROTATION = 10.0  # degrees
_SCALE_RANGE = (0.85, 1.1)
_NOISE_SIGMA = (3.0, 9.0)  # grey levels


def _glyph(index: int, stroke: int) -> np.ndarray:
    """Draw class `index` (0-23) as a float mask in [0, 1] on the 56x56 canvas."""
    img = np.zeros((_CANVAS, _CANVAS), np.uint8)
    c, t, aa = _CANVAS // 2, stroke, cv2.LINE_AA

    def line(p, q):
        cv2.line(img, p, q, 255, t, aa)

    def poly(points, filled=False):
        pts = np.array(points, np.int32)
        if filled:
            cv2.fillPoly(img, [pts], 255, aa)
        else:
            cv2.polylines(img, [pts], True, 255, t, aa)

    def arc(center, radius, start, end):
        cv2.ellipse(img, center, (radius, radius), 0, start, end, 255, t, aa)

    # One small drawing per class; several echo their letter's outline so they stay recognisable.
    match index:
        case 0:  # A: small filled disc
            cv2.circle(img, (c, c), 10, 255, -1, aa)
        case 1:  # B: one vertical bar
            line((c, 10), (c, 46))
        case 2:  # C: arc open to the right
            arc((c, c), 16, 45, 315)
        case 3:  # D: one horizontal bar
            line((10, c), (46, c))
        case 4:  # E: plus
            line((c, 10), (c, 46))
            line((10, c), (46, c))
        case 5:  # F: diagonal cross
            line((12, 12), (44, 44))
            line((12, 44), (44, 12))
        case 6:  # G: triangle outline, apex up
            poly([(c, 10), (46, 44), (10, 44)])
        case 7:  # H: H shape
            line((16, 10), (16, 46))
            line((40, 10), (40, 46))
            line((16, c), (40, c))
        case 8:  # I: ring
            cv2.circle(img, (c, c), 15, 255, t, aa)
        case 9:  # K: filled triangle, apex down
            poly([(10, 12), (46, 12), (c, 46)], filled=True)
        case 10:  # L: L shape
            line((16, 10), (16, 44))
            line((16, 44), (44, 44))
        case 11:  # M: three vertical bars
            for x in (12, c, 44):
                line((x, 12), (x, 44))
        case 12:  # N: rising diagonal
            line((12, 44), (44, 12))
        case 13:  # O: square outline
            poly([(13, 13), (43, 13), (43, 43), (13, 43)])
        case 14:  # P: large filled square
            cv2.rectangle(img, (12, 12), (44, 44), 255, -1, aa)
        case 15:  # Q: ring with a tail
            cv2.circle(img, (24, 24), 13, 255, t, aa)
            line((32, 32), (48, 48))
        case 16:  # R: falling diagonal
            line((12, 12), (44, 44))
        case 17:  # S: arc open to the left
            arc((c, c), 16, 225, 495)
        case 18:  # T: T shape
            line((10, 14), (46, 14))
            line((c, 14), (c, 46))
        case 19:  # U: cup, arc open upwards
            arc((c, 24), 16, 0, 180)
        case 20:  # V: chevron pointing left (a V pointing down is too close to Y)
            line((44, 10), (12, c))
            line((12, c), (44, 46))
        case 21:  # W: two horizontal bars
            line((10, 18), (46, 18))
            line((10, 38), (46, 38))
        case 22:  # X: two dots on a diagonal
            cv2.circle(img, (18, 18), 7, 255, -1, aa)
            cv2.circle(img, (38, 38), 7, 255, -1, aa)
        case 23:  # Y: Y shape
            line((12, 10), (c, c))
            line((44, 10), (c, c))
            line((c, c), (c, 46))
        case _:
            raise ValueError(f"class index must be 0-{NUM_CLASSES - 1}, got {index}")
    return img.astype(np.float32) / 255.0


def _backgrounds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Hand-like backgrounds: a soft bright blob (palm) on a grey gradient, float (n, 28, 28)."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) - (IMAGE_SIZE - 1) / 2
    u = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    base = u(50, 110) + u(-2, 2) * xx + u(-2, 2) * yy
    cx, cy, ax, ay = u(-4, 4), u(-2, 6), u(9, 14), u(10, 15)
    palm = 1 / (1 + np.exp(-3 * (1 - ((xx - cx) / ax) ** 2 - ((yy - cy) / ay) ** 2)))
    return base + u(50, 90) * palm


def make_synthetic(n_rows: int, seed: int, variants: int = 1) -> Dataset:
    """A balanced synthetic Sign MNIST dataset of n_rows images, deterministic for a seed.

    With `variants` > 1 it has the real training CSV's structure: n_rows / variants "photos", each
    present as `variants` near-identical images (families, see asl_mlops.data.split), in shuffled order.
    """
    source = f"synthetic(n_rows={n_rows}, seed={seed}, variants={variants})"
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    if variants == 1:
        return _generate(n_rows, np.random.default_rng(seed), source=source)
    photos = _generate(-(-n_rows // variants), np.random.default_rng(seed), source=source)
    return _with_variants(photos, variants, np.random.default_rng([seed, 2]), n_rows)


def _with_variants(photos: Dataset, variants: int, rng: np.random.Generator, n_rows: int) -> Dataset:
    """Each photo as `variants` images shifted by up to 0.1 pixel, brightened by up to 3% and with
    fresh noise (like Sign MNIST's re-filtered, brightened copies); n_rows of them, shuffled."""
    n = len(photos) * variants
    base = np.repeat(photos.images.astype(np.float32), variants, axis=0)
    labels = np.repeat(photos.labels, variants)
    images = np.empty_like(base)
    for k, (dx, dy) in enumerate(rng.uniform(-0.1, 0.1, (n, 2))):
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        images[k] = cv2.warpAffine(base[k], matrix, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
    images = images * rng.uniform(0.97, 1.03, (n, 1, 1)) + rng.normal(0, 1.0, images.shape)
    order = rng.permutation(n)[:n_rows]
    return Dataset(images=np.clip(np.rint(images[order]), 0, 255).astype(np.uint8), labels=labels[order],
                   source=photos.source)


def _generate(n_rows: int, rng: np.random.Generator, source: str) -> Dataset:
    """Draw n_rows samples with per-sample jitter from `rng`."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    # Balanced: every label n_rows // 24 or one more times, in shuffled order.
    indices = rng.permutation(np.resize(np.arange(NUM_CLASSES), n_rows))
    templates = [[_glyph(i, s) for s in _STROKES] for i in range(NUM_CLASSES)]

    strokes = rng.integers(len(_STROKES), size=n_rows)
    angles = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n_rows)
    scales = rng.uniform(*_SCALE_RANGE, n_rows)
    shifts = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, (n_rows, 2))
    masks = np.empty((n_rows, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    centre = ((_CANVAS - 1) / 2, (_CANVAS - 1) / 2)
    for k in range(n_rows):
        # One affine warp does rotation, scale jitter, the 2x shrink and the shift together.
        matrix = cv2.getRotationMatrix2D(centre, float(angles[k]), float(scales[k]) / 2)
        matrix[:, 2] += (IMAGE_SIZE - 1) / 2 - np.array(centre) + shifts[k]  # canvas centre -> image centre
        masks[k] = cv2.warpAffine(templates[indices[k]][strokes[k]], matrix, (IMAGE_SIZE, IMAGE_SIZE),
                                  flags=cv2.INTER_LINEAR, borderValue=0)

    background = _backgrounds(rng, n_rows)
    # Glyphs are darker or brighter than the palm per sample, like shadows and highlights on a hand,
    # with enough contrast to be visible (clipping at 0 and 255 still lowers it on some samples).
    polarity = np.where(rng.random((n_rows, 1, 1)) < 0.5, -1.0, 1.0)
    images = background + polarity * rng.uniform(70, 110, (n_rows, 1, 1)) * masks
    images = images * rng.uniform(0.8, 1.2, (n_rows, 1, 1))  # brightness
    images += rng.normal(0, 1, images.shape) * rng.uniform(*_NOISE_SIGMA, (n_rows, 1, 1))
    labels = np.asarray(LABELS, np.int64)[indices]
    return Dataset(images=np.clip(np.rint(images), 0, 255).astype(np.uint8), labels=labels, source=source)


def write_synthetic(out_dir: Path, train_rows: int = DEMO_TRAIN_ROWS, test_rows: int = DEMO_TEST_ROWS,
                    seed: int = 0, variants: int = 1) -> tuple[Path, Path]:
    """Write sign_mnist_train.csv and sign_mnist_test.csv of synthetic data into out_dir (the training CSV
    with families of `variants` near-duplicates, as in the real one, if `variants` > 1)."""
    out_dir = Path(out_dir)
    train = make_synthetic(train_rows, seed, variants)
    # The test split gets its own stream, so no seed's test set equals another seed's train set.
    test = _generate(test_rows, np.random.default_rng([seed, 1]), source=f"synthetic test (seed={seed})")
    return write_csv(train, out_dir / "sign_mnist_train.csv"), write_csv(test, out_dir / "sign_mnist_test.csv")


# ---------------------------------------------------------------------------------------------
# Writing


def write_synthetic_photos(out: str | Path, per_letter: int = 4, seed: int = 0, size: int = 96) -> Path:
    """Write a synthetic photo folder to `out` and return it: per letter `per_letter` colour photos of the letter
    drawn over noise (mixed sizes around `size` px, JPEG and PNG), plus a README.txt and a `nothing/` folder that
    loading must skip. No hands in them; the same seed writes the same bytes."""
    import cv2

    out = Path(out)
    rng = np.random.default_rng(seed)

    def photo(text: str) -> np.ndarray:
        height, width = (int(v) for v in rng.integers(size * 3 // 4, size * 3 // 2 + 1, size=2))
        base = rng.integers(0, 256, size=3)
        image = np.clip(base + rng.normal(0, 25, size=(height, width, 3)), 0, 255).astype(np.uint8)
        scale = min(height, width) / 40 * rng.uniform(0.8, 1.1)
        (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 3)
        x = int(rng.integers(0, max(width - text_w, 0) + 1))
        y = int(rng.integers(min(text_h, height - 1), height))
        colour = tuple(int(255 - c) for c in base)  # opposite of the background, so the letter stays visible
        cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 3, cv2.LINE_AA)
        return image

    def write(path: Path, rgb: np.ndarray) -> None:
        ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode {path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())

    for letter in LETTER_FOLDERS:
        for i in range(per_letter):
            write(out / letter / f"{letter}{i}{'.jpg' if i % 2 == 0 else '.png'}", photo(letter))
    for i in range(2):
        write(out / "nothing" / f"nothing{i}.jpg", photo("-"))
    (out / "README.txt").write_text(f"Synthetic ASL photo folder (asl-mlops data synth-photos, seed {seed}): one "
                                    "folder per letter A-Y without J, letters drawn over noise, no hands. The folder nothing/ "
                                    "is not a letter: loading skips it, with a warning.\n")
    return out
