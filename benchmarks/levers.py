"""Which cheap levers make the default recipe robust across seeds? Judged on the stand-in test set.

    python benchmarks/levers.py --train-data ../shared/data/sign_mnist_train.csv.gz
    python benchmarks/levers.py --tiny --out /tmp/levers.json    # two 1-epoch models on synthetic rows (a smoke test)

Same data as benchmarks/selection.py (its `carve`: a grouped stand-in of 20% of the families, seed 2026,
grouped validation G and training rows T from the rest). A recipe (selection.py's `default`: the earlier
default, the cnn at 75,50,25 for 12 epochs, one network; `--cnn-filters 32,64,32 --epochs 12 --set ensemble=2` is
today's default, `--cnn-filters 32,64,32 --epochs 24` the one before) is
trained once per seed with `train_and_evaluate` (a real MLflow run; the logged model is the one kept, in `--models-dir`), then
each lever is applied to the trained models and scored on the stand-in:

- `base`: the logged model as is.
- `bn-reestimate`: BatchNorm moving statistics recomputed for the final (EMA-averaged) weights by one
  pass over T with the training augmentation (Keras' EMA averages only trainable weights, so the
  statistics belong to the raw weights of the last steps). Training does this itself since the default
  `ema_momentum` became 0.999 (asl_mlops.training.fit.reestimate_batchnorm), so for models trained since, it
  only re-runs that pass; it tells on models trained before (kept in `--models-dir`). With `--set ensemble=2`
  it changes nothing (the kept model's BatchNorm layers are inside its members, and training did each
  member's pass).
- `bn-reestimate+tta`: both.
- `tta-shift5`: mean of the softmax over the image and its four 1-pixel shifts (edge pixels repeated).
- `tta-zero5`: the same with zeros shifted in (what Keras' ZeroPadding2D + Cropping2D do in a model).
- `tta-affine9`: the shift5 views plus rotations of +-6 degrees and zooms of +-6%.
- `tta`: asl_mlops.recognizers.tta as shipped (the recognizer's and the run's final metrics' path): the affine9 views
  through `keras.ops.image.affine_transform`.
- `ensemble-K`: mean softmax of K models of different seeds, every combination (K times the training).

Per lever: stand-in errors mean +- sd and worst over seeds (over combinations for ensembles), the
photos misread (stand-in families, asl_mlops.data.split.find_families, with more than half of their variants
wrong: the errors come in whole photos; `tta_errors_by_photo` in the JSON lists each seed's), and the
training cost relative to one default run. The `bn-reestimate` rows re-run the pass with the recipe's own
settings (`--set` included). Models already in `--models-dir` are not trained again; `--out` holds the results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def photos_misread(probabilities, y, family) -> int:
    """Photos (near-duplicate families, `family` per row) with more than half of their variants misread."""
    import numpy as np

    wrong = np.bincount(family, weights=(probabilities.argmax(axis=1) != y).astype(float), minlength=family.max() + 1)
    return int(np.sum(wrong > np.bincount(family) / 2))


def standin_summary(predictions, y, family) -> dict:
    """Stand-in errors (mean +- sd, worst, best) and photos misread over `predictions` (seeds or ensembles)."""
    from asl_mlops.training.evaluate import evaluate_probabilities

    errors = [evaluate_probabilities(y, p).errors for p in predictions]
    photos = [photos_misread(p, y, family) for p in predictions]
    return {"errors": errors, "mean": statistics.fmean(errors),
            "sd": statistics.stdev(errors) if len(errors) > 1 else 0.0, "worst": max(errors), "best": min(errors),
            "photos_misread": photos, "photos_mean": statistics.fmean(photos), "photos_worst": max(photos)}


def shifted(x, dy: int, dx: int, mode: str = "edge"):
    """Batch (N, H, W, C) shifted by (dy, dx) pixels, edge pixels repeated (or zeros, mode='constant')."""
    import numpy as np

    pad = max(abs(dy), abs(dx))
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    h, w = x.shape[1:3]
    return padded[:, pad - dy:pad - dy + h, pad - dx:pad - dx + w, :]


def affine(x, degrees: float = 0.0, zoom: float = 1.0):
    """Batch rotated by `degrees` and zoomed by `zoom` about the centre (nearest fill), via scipy."""
    import numpy as np
    from scipy import ndimage

    h, w = x.shape[1:3]
    theta = np.deg2rad(degrees)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / zoom
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    offset = centre - rot @ centre
    return np.stack([ndimage.affine_transform(img[..., 0], rot, offset=offset, order=1, mode="nearest")[..., None]
                     for img in x]).astype(x.dtype)


def tta_views(x, kind: str):
    if kind == "zero5":  # what built-in Keras layers (ZeroPadding2D + Cropping2D) can do inside a model
        return [x] + [shifted(x, dy, dx, "constant") for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    views = [x, shifted(x, 1, 0), shifted(x, -1, 0), shifted(x, 0, 1), shifted(x, 0, -1)]
    if kind == "affine9":
        views += [affine(x, 6.0), affine(x, -6.0), affine(x, zoom=1.06), affine(x, zoom=0.94)]
    return views


def bn_reestimated(model, x_train, y_train, config):
    """A copy of `model` whose BatchNorm moving statistics are recomputed over one augmented pass of T
    (asl_mlops.training.fit.reestimate_batchnorm, which training now runs itself after weight averaging)."""
    import keras

    from asl_mlops.training.fit import reestimate_batchnorm

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    reestimate_batchnorm(copy, x_train, y_train, config)
    return copy


def settings_of(pairs: list[str]) -> dict[str, object]:
    """`--set FIELD=VALUE` pairs as TrainConfig overrides, each value read as `asl-mlops train --field` reads it."""
    import dataclasses

    import click

    from asl_mlops.cli import option_type
    from asl_mlops.config import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {pair}: expected FIELD=VALUE with a TrainConfig field")
        try:
            out[name] = option_type(fields[name]).convert(value, None, None)
        except click.BadParameter as err:
            raise SystemExit(f"--set {pair}: {err.message}") from None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(ROOT / "data" / "sign_mnist_train.csv"),
                        help="Sign MNIST training CSV to carve everything from.")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="Training seeds.")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "benchmarks" / "results" / "levers-work",
                        help="Where the trained models are kept (.keras), so a re-run only scores.")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Override the recipe's 12 epochs (e.g. 6 or 24, to measure a schedule).")
    parser.add_argument("--cnn-filters", default=None,
                        help="Override the recipe's conv widths, 75,50,25 (TrainConfig.cnn_filters, e.g. 32,64,32).")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                        help="Override any other TrainConfig field of the recipe, e.g. --set label_smoothing=0.1 "
                             "(repeatable; the value is read as the field's type).")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="Grouped validation G's share of the non-stand-in families (T is trained on the rest).")
    parser.add_argument("--all-photos", action="store_true",
                        help="Draw T's rows (as many as usual) at random from every non-stand-in photo, G's included: "
                             "more distinct hands, fewer variants of each.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "levers.json",
                        help="JSON results file.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows, seeds 0 and 1, one narrow network for one epoch, the models "
                             "in a temporary --models-dir.")
    args = parser.parse_args()
    tiny_recipe = {}
    if args.tiny:
        import tiny

        work = tiny.folder("levers")
        args.train_data, args.seeds, args.models_dir = str(tiny.sign_mnist(work)[0]), [0, 1], work / "models"
        tiny_recipe = tiny.TRAIN

    import keras
    import mlflow
    import mlflow.pyfunc
    import numpy as np

    from asl_mlops.config import TrainConfig
    from asl_mlops.data.split import find_families
    from asl_mlops.labels import index_to_letter
    from asl_mlops.training.evaluate import (
        evaluate_probabilities,
        predict_probabilities,
    )
    from asl_mlops.training.inputs import split_data

    overrides = {**tiny_recipe, **({"cnn_filters": args.cnn_filters} if args.cnn_filters else {}),
                 **settings_of(args.settings)}
    # a sibling script: `python benchmarks/<script>.py` puts benchmarks/ first on sys.path
    import selection
    recipe = selection.recipe_changes("default", args.epochs, overrides)
    csv, split, random_val, standin, info = selection.carve(args.train_data, 0.2, 2026, args.val_fraction, args.all_photos)
    args.models_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() and not args.tiny else {"trained": {}}
    info = {**info, "val_fraction": args.val_fraction, "all_photos": args.all_photos}
    stored = results.get("data")
    if stored is not None and {**stored, "val_fraction": stored.get("val_fraction", 0.2),
                               "all_photos": stored.get("all_photos", False)} != info:
        # its models (kept in --models-dir) were trained on another carve
        raise SystemExit(f"{args.out} holds results for another carve ({stored}); use another --out and --models-dir")
    results["data"] = info
    with tempfile.TemporaryDirectory() as store:
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("levers", artifact_location=f"{store}/artifacts"))
        for seed in args.seeds:
            path = args.models_dir / f"default-seed{seed}.keras"
            if not path.exists():
                model_info = selection.train_one("default", seed, (csv, split, random_val, standin), f"{store}/cache",
                                                args.epochs, overrides)
                mlflow.pyfunc.load_model(model_info.pop("model_uri")).unwrap_python_model().model.save(path)
                results["trained"][str(seed)] = model_info
                write_results(args.out, stamped(results))
                print(f"seed {seed}: {model_info['standin_errors']} stand-in errors, {model_info['seconds']:.0f} s",
                      flush=True)
        data = split_data(csv, split, standin)

    y = data.y_test
    probs: dict[str, dict[int, np.ndarray]] = {"base": {}, "bn-reestimate": {}, "tta-shift5": {}, "tta-zero5": {},
                                               "tta-affine9": {}, "tta": {},
                                               "bn-reestimate+tta": {}}
    views = {kind: tta_views(data.x_test, kind) for kind in ("shift5", "zero5", "affine9")}
    for seed in args.seeds:
        keras.backend.clear_session()
        model = keras.models.load_model(args.models_dir / f"default-seed{seed}.keras")
        per_view = [predict_probabilities(model, v) for v in views["affine9"]]
        probs["base"][seed] = per_view[0]
        probs["tta-shift5"][seed] = np.mean(per_view[:5], axis=0)
        probs["tta-affine9"][seed] = np.mean(per_view, axis=0)
        probs["tta-zero5"][seed] = np.mean([per_view[0]] + [predict_probabilities(model, v)
                                                            for v in views["zero5"][1:]], axis=0)
        probs["tta"][seed] = predict_probabilities(model, data.x_test, tta=True)  # asl_mlops.recognizers.tta, as shipped
        config = TrainConfig(seed=seed, **recipe)  # the augmentation and batch size the model trained with
        recalibrated = bn_reestimated(model, data.x_train, data.y_train, config)
        probs["bn-reestimate"][seed] = predict_probabilities(recalibrated, data.x_test)
        probs["bn-reestimate+tta"][seed] = predict_probabilities(recalibrated, data.x_test, tta=True)
        print(f"seed {seed}: " + ", ".join(f"{k} {evaluate_probabilities(y, p[seed]).errors}"
                                           for k, p in probs.items()), flush=True)

    family = find_families(standin)  # the stand-in's photos: families of near-identical variants

    def summary(predictions: list[np.ndarray], cost: int) -> dict:
        return {**standin_summary(predictions, y, family), "training_cost": cost}

    def errors_by_photo(p: np.ndarray) -> list[dict]:
        """Each stand-in photo with errors: its variants, how many are wrong, its letter, its commonest misreading."""
        predicted = p.argmax(axis=1)
        rows = []
        for photo in np.unique(family[predicted != y]):
            members = family == photo
            wrong = members & (predicted != y)
            read_as = np.bincount(predicted[wrong]).argmax()
            rows.append({"photo": int(photo), "variants": int(members.sum()), "wrong": int(wrong.sum()),
                         "letter": index_to_letter(int(y[members][0])), "read_as": index_to_letter(int(read_as))})
        return sorted(rows, key=lambda row: -row["wrong"])

    levers = {name: summary([p[s] for s in args.seeds], 1) for name, p in probs.items()}
    results["tta_errors_by_photo"] = {str(s): errors_by_photo(probs["tta"][s]) for s in args.seeds}
    for k in (2, 3):
        for base in ("base", "tta-shift5", "tta"):
            combos = list(itertools.combinations(args.seeds, k))
            if not combos:
                continue
            levers[f"ensemble-{k}" + ("" if base == "base" else f"+{base}")] = summary(
                [np.mean([probs[base][s] for s in c], axis=0) for c in combos], k)
    results["levers"] = levers
    results["standin_rows"] = int(len(y))
    results["standin_photos"] = int(family.max() + 1)
    write_results(args.out, stamped(results))
    for seed, photos in results["tta_errors_by_photo"].items():
        print(f"seed {seed}, tta, errors by photo: " + ", ".join(
            f"{r['wrong']}/{r['variants']} {r['letter']}->{r['read_as']}" for r in photos))
    print(f"\n{'lever':<26}{'cost':>5}{'errors mean +- sd':>22}{'worst':>7}{'photos':>8}{'worst':>7}  "
          f"errors of {len(y)}, photos misread of {family.max() + 1}")
    for name, s in levers.items():
        print(f"{name:<26}{s['training_cost']:>5}{s['mean']:>14.1f} +- {s['sd']:<5.1f}{s['worst']:>7}"
              f"{s['photos_mean']:>8.1f}{s['photos_worst']:>7}  {s['errors']}")


if __name__ == "__main__":
    main()
