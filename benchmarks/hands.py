"""How well does the photo recognizer read the hands of people it never trained on, and how far can its
confidence be trusted?

Leave-one-signer-out on a photo folder that names its signers (../shared/data/hands: 7,202 photos, 28 signer
ids): for each signer, the product's recipe (asl_mlops.training.photo_inputs: validation signers held out
of the other signers' photos, augmented and signer-weighted training hands, the keypoint network, temperature
and "not sure" threshold fitted on the validation signers) is trained on the other signers and scored on that
signer's photos. A photo with no hand found is an error, as the served model answers it with no letter.

Per variant and seed it records, for every held-out signer: top-1, the share of photos answered with a wrong
letter at confidence >= 0.9, and, at the chosen threshold, the share answered and the accuracy of those answers;
and the validation accuracy of the fold's run (how well the validation figure predicts new people).
Summaries: mean over signers +- sd over seeds, the worst signer, pooled calibration figures.

Variants (--variant, repeatable), each the shipped recipe with one thing changed:
- shipped: the defaults of asl_mlops.config.TrainConfig;
- before: the recipe before signers were known: every photo alike, the earlier detection retries (padded 25%,
  brightened, padded 50%) and no calibration (temperature 1, never "not sure");
- unweighted: signer_balance 0 (every photo alike, the recipe before signers were known);
- balance1: signer_balance 1 (every signer alike);
- smoothing: label_smoothing 0.1;
- ensemble3: the softmax of 3 networks (seeds s, s+1, s+2) averaged;
- no-jitter, no-augment: the training copies not jittered / no copies;
- pointing: the training copies turned by at most 10 degrees in the photo's plane (30 about the other axes), so
  where the hand points (G/H against P/Q) is blurred less;
- logreg: logistic regression on the same features, unweighted (a floor).

    python benchmarks/hands.py --data ../shared/data/hands --out benchmarks/results/hands-loso-signers.json
    python benchmarks/hands.py --tiny --out /tmp/hands.json    # a few real photos, 3 variants, 1 epoch (a smoke test)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LETTERS = "ABCDEFGHIKLMNOPQRSTUVWXY"
#: The detection retries before the close-up views were added (asl_mlops.hands.detector.RETRIES).
RETRIES_BEFORE = ((0.25, False), (0.25, True), (0.5, False))
VARIANTS: dict[str, dict] = {
    "shipped": {}, "before": {"signer_balance": 0.0, "min_answered_accuracy": 0.0}, "unweighted": {"signer_balance": 0.0}, "balance1": {"signer_balance": 1.0},
    "smoothing": {"label_smoothing": 0.1}, "ensemble3": {}, "no-jitter": {}, "no-augment": {}, "pointing": {}, "logreg": {},
}


def networks_probabilities(variant: str, data, config, x_parts: list[np.ndarray]) -> list[np.ndarray]:
    """Softmax outputs of the variant's network(s), trained on `data`, for each array of `x_parts`."""
    import keras

    from asl_mlops.training.evaluate import predict_probabilities
    from asl_mlops.training.fit import fit
    from asl_mlops.training.models import build_model

    members = 3 if variant == "ensemble3" else 1
    outputs = [np.zeros((len(x), 24)) for x in x_parts]
    for k in range(members):
        keras.utils.set_random_seed(config.seed + k)
        model = build_model(config)
        fit(model, data, config.replace(seed=config.seed + k))
        for out, x in zip(outputs, x_parts):
            out += predict_probabilities(model, x) / members
        keras.backend.clear_session()
    return outputs


def run_fold(variant: str, photos, hands, held_out: np.ndarray, seed: int, config) -> dict[str, float]:
    """Train the variant on every photo but `held_out`'s (validation signers held out of those) and score it on
    the held-out photos."""
    from asl_mlops.training import photo_inputs as photo_data
    from asl_mlops.hands.calibration import answers, calibrate, reliability, tempered
    from asl_mlops.training.photo_inputs import photo_inputs

    train_set, test_set = photos.subset(~held_out), photos.subset(held_out)
    train_hands = [h for h, m in zip(hands, held_out) if not m]
    test_hands = [h for h, m in zip(hands, held_out) if m]
    config = config.replace(seed=seed, split_seed=seed, **VARIANTS[variant])
    data = photo_inputs(train_set, train_hands, test_set, test_hands, config)
    if variant in ("no-jitter", "no-augment", "pointing"):  # the training copies again, with the variant's augmentation
        from asl_mlops.training.photo_inputs import photo_validation_split

        train_index, _, _ = photo_validation_split(train_set, config)
        weights = photo_data.signer_weights(np.asarray(train_set.signers)[train_index], config.signer_balance)
        x, y, w = photo_data.augmented_training_features(
            tuple(train_hands[i] for i in train_index), train_set.labels[train_index], seed, weights=weights,
            **{"no-augment": {"copies": 0}, "no-jitter": {"jitter": 0.0},
               "pointing": {"degrees": (30.0, 30.0, 10.0)}}[variant])
        data = data.__class__(**{**data.__dict__, "x_train": x, "y_train": y, "w_train": w})
    x_test_found = data.x_test[data.test_found]
    if variant == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(data.x_train, data.y_train.argmax(axis=1))
        val_p, test_p = np.zeros((len(data.x_val), 24)), np.zeros((len(x_test_found), 24))
        val_p[:, model.classes_] = model.predict_proba(data.x_val)
        test_p[:, model.classes_] = model.predict_proba(x_test_found)
    else:
        val_p, test_p = networks_probabilities(variant, data, config, [data.x_val, x_test_found])
    val_true = data.val_labels[data.val_found]
    calibration = calibrate(val_p, val_true, config.min_answered_accuracy)
    if variant == "before":
        calibration = calibration.__class__(temperature=1.0, not_sure_below=0.0)
    y_pred, confidence = answers(tempered(test_p, calibration.temperature), data.test_found)
    r = reliability(data.y_test, y_pred, confidence, calibration.not_sure_below)
    val_accuracy = float(np.sum(val_p.argmax(axis=1) == val_true) / max(len(data.val_found), 1))
    return {"top1": r.top1, "confidently_wrong": r.confidently_wrong, "coverage": r.coverage,
            "answered_accuracy": r.answered_accuracy, "photos": r.photos, "val_accuracy": val_accuracy,
            "val_signers": data.params["val_signers"], "temperature": calibration.temperature,
            "not_sure_below": calibration.not_sure_below, "no_hand": float(1 - data.test_found.mean()),
            "answered": int(round(r.coverage * r.photos)),
            "answered_right": int(round(r.coverage * r.photos * (r.answered_accuracy if r.coverage else 0))),
            "y_true": data.y_test.tolist(), "y_pred": y_pred.tolist(),
            "confidence": [round(float(c), 4) for c in confidence]}


def per_signer(fold: dict, mine: np.ndarray) -> dict:
    """The part of a fold's figures that is one signer's photos (`mine`, a mask over the fold's photos)."""
    if mine.all():
        return fold
    from asl_mlops.hands.calibration import reliability

    y_true, y_pred, confidence = (np.asarray(fold[k])[mine] for k in ("y_true", "y_pred", "confidence"))
    r = reliability(y_true, y_pred, confidence, fold["not_sure_below"])
    answered = int(round(r.coverage * r.photos))
    return {**fold, "top1": r.top1, "confidently_wrong": r.confidently_wrong, "coverage": r.coverage,
            "answered_accuracy": r.answered_accuracy, "photos": r.photos, "answered": answered,
            "answered_right": int(round(answered * (r.answered_accuracy if answered else 0))),
            "no_hand": float(np.mean(y_pred < 0)), "y_true": y_true.tolist(), "y_pred": y_pred.tolist(),
            "confidence": confidence.tolist()}


def summarise(folds: dict[str, list[dict]], seeds: list[int]) -> dict[str, object]:
    """Per-signer means over seeds, mean over signers +- sd over seeds, the worst signer, pooled calibration."""
    names = sorted(folds)
    top1 = np.array([[f["top1"] for f in folds[s]] for s in names])  # signers x seeds
    photos = np.array([folds[s][0]["photos"] for s in names])
    wrong_sure = np.array([[f["confidently_wrong"] * f["photos"] for f in folds[s]] for s in names]).sum(axis=0)
    answered = np.array([[f["answered"] for f in folds[s]] for s in names]).sum(axis=0)
    answered_right = np.array([[f["answered_right"] for f in folds[s]] for s in names]).sum(axis=0)
    val = np.array([[f["val_accuracy"] for f in folds[s]] for s in names])
    worst = int(np.argmin(top1.mean(axis=1)))
    y_true = np.concatenate([f["y_true"] for s in names for f in folds[s]])
    y_pred = np.concatenate([f["y_pred"] for s in names for f in folds[s]])
    recall = {LETTERS[k]: float(np.mean(y_pred[y_true == k] == k)) for k in range(24) if np.any(y_true == k)}
    return {
        "letter_recall": recall, "worst_letter": min(recall, key=recall.get),
        "by_signer": {s: {"top1": float(top1[i].mean()), "top1_runs": top1[i].tolist(), "photos": int(photos[i])}
                      for i, s in enumerate(names)},
        "mean_top1": float(top1.mean()), "sd_over_seeds": float(top1.mean(axis=0).std()),
        "photo_weighted_top1": float((top1 * photos[:, None]).sum() / photos.sum() / 1),
        "worst_signer": names[worst], "worst_top1": float(top1[worst].mean()), "worst_run": float(top1.min()),
        "confidently_wrong": float(wrong_sure.mean() / photos.sum()),
        "coverage": float(answered.mean() / photos.sum()),
        "answered_accuracy": float(answered_right.sum() / max(answered.sum(), 1)),
        "val_accuracy_mean": float(val.mean()),
        "val_vs_new_people": {"val_accuracy": float(val.mean()), "held_out_top1": float(top1.mean()),
                              "correlation_over_folds": float(np.corrcoef(val.ravel(), top1.ravel())[0, 1])},
        "seeds": seeds,
    }


def merge(paths: list[Path], out: Path) -> None:
    """One result of several runs of this script that held out the same signers with other seeds."""
    import json

    from provenance import stamped, write_results

    parts = [json.loads(path.read_text()) for path in paths]
    results = {k: v for k, v in parts[0].items() if k not in ("variants", "provenance")}
    results["merged_from"] = [{"file": path.name, "seeds": part["seeds"],
                               **{k: part[k] for k in ("commit", "date", "command") if k in part}}
                              for path, part in zip(paths, parts)]
    results["seeds"] = [seed for part in parts for seed in part["seeds"]]
    results["variants"] = {}
    for variant in parts[0]["variants"]:
        folds = {s: [f for part in parts for f in part["variants"][variant]["folds"][s]]
                 for s in parts[0]["variants"][variant]["folds"]}
        summary = summarise(folds, results["seeds"])
        results["variants"][variant] = {**summary, "folds": folds,
                                        "seconds": sum(part["variants"][variant].get("seconds", 0) for part in parts)}
        print(f"== {variant}: mean top-1 {summary['mean_top1']:.3f} +- {summary['sd_over_seeds']:.3f}, worst "
              f"{summary['worst_signer']} {summary['worst_top1']:.3f}")
    write_results(out, stamped(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hands"), help="Photo folder naming signers.")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="Variants (default: all).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training and split seeds.")
    parser.add_argument("--signers", nargs="+", help="Hold out only these signers (default: every signer).")
    parser.add_argument("--groups", type=int, default=0,
                        help="Screening: hold out K groups of signers (dealt round-robin in a seeded order) instead "
                             "of one signer at a time (0 = leave one signer out).")
    parser.add_argument("--epochs", type=int, default=None, help="Training epochs (default: the shipped recipe's).")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="Hand detection cache.")
    parser.add_argument("--merge", type=Path, nargs="+",
                        help="Instead of training: merge these results (the same variants, other seeds) into --out.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hands-loso-signers.json"),
                        help="JSON to write (rewritten after each variant).")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: a few real photos of benchmarks/tiny.py's signers, variants before, "
                             "no-augment and logreg, seed 0, one epoch, a temporary cache.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        work = tiny.folder("hands")
        args.data, args.cache_dir = tiny.hands(work / "hands"), work / "cache"
        args.variant, args.seeds, args.epochs = ["before", "no-augment", "logreg"], [0], 1
    args.out = args.out.resolve()
    variants = args.variant or list(VARIANTS)
    if args.merge:
        merge(args.merge, args.out)
        return

    from asl_mlops.quiet_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    import mlflow
    from provenance import stamped, write_results
    from tqdm import tqdm

    from asl_mlops.config import TrainConfig
    from asl_mlops.data.photos import load_photo_folder
    from asl_mlops.hands.detector import RETRIES, detect_photos
    from asl_mlops.hands.landmarker import hand_model_path

    mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp(prefix='hands-bench-')}/mlflow.db")
    photos = load_photo_folder(args.data)
    signers = np.asarray(photos.signers)
    needed = {RETRIES_BEFORE if variant == "before" else tuple(RETRIES) for variant in variants}
    searches = {retries: detect_photos(photos, hand_model_path(), args.cache_dir, retries=retries,
                                       progress=lambda items: tqdm(items, desc="finding hands", unit="photo"))
                for retries in needed}
    config = TrainConfig(train_data=str(args.data), architecture="keypoints")
    if args.epochs:
        config = config.replace(epochs=args.epochs)
    names = args.signers or photos.named_signers
    if args.groups:  # each fold holds out a group; results are still kept per signer
        order = np.random.default_rng(0).permutation(names)
        group_of = {str(name): k % args.groups for k, name in enumerate(order)}
    results: dict[str, object] = {"data": str(args.data), "photos": len(photos), "signers": len(names),
                                  "folds": f"{args.groups} groups of signers" if args.groups else "one signer each",
                                  "epochs": config.epochs, "seeds": args.seeds, "variants": {}}
    for variant in variants:
        folds: dict[str, list[dict]] = {s: [] for s in names}
        start = time.perf_counter()
        hands = searches[RETRIES_BEFORE if variant == "before" else tuple(RETRIES)].hands
        for seed in args.seeds:
            held_outs = ([[s for s in names if group_of[s] == k] for k in range(args.groups)] if args.groups
                         else [[s] for s in names])
            for group in held_outs:
                with mlflow.start_run():
                    fold = run_fold(variant, photos, hands, np.isin(signers, group), seed, config)
                for signer in group:  # one fold's answers split by signer
                    mine = np.asarray(signers[np.isin(signers, group)] == signer)
                    folds[signer].append(per_signer(fold, mine))
                signer = ",".join(group)
                results["variants"][variant] = {"folds": folds, "partial": True}
                write_results(args.out, stamped(results))
                print(f"{variant:11s} seed {seed} {signer:18s} top1 {fold['top1']:.3f} coverage {fold['coverage']:.3f}"
                      f" answered {fold['answered_accuracy']:.3f} val {fold['val_accuracy']:.3f}", flush=True)
        summary = summarise(folds, args.seeds)
        summary["folds"] = folds
        summary["seconds"] = time.perf_counter() - start
        results["variants"][variant] = summary
        write_results(args.out, stamped(results))
        print(f"== {variant}: mean top-1 {summary['mean_top1']:.3f} +- {summary['sd_over_seeds']:.3f}, worst "
              f"{summary['worst_signer']} {summary['worst_top1']:.3f}, confidently wrong "
              f"{summary['confidently_wrong']:.3f}, coverage {summary['coverage']:.3f} at answered accuracy "
              f"{summary['answered_accuracy']:.3f}", flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
