"""Does validation pick the models that do best on new hands? Grouped vs random validation, and the
default recipe's spread over training seeds, judged on a stand-in test set.

    python benchmarks/selection.py --train-data ../shared/data/sign_mnist_train.csv.gz
    python benchmarks/selection.py --tiny --out /tmp/selection.json   # two 1-epoch models, synthetic rows (smoke test)

The real test CSV is withheld, so a stand-in is carved from the training CSV: a grouped holdout (whole
families of near-duplicates, asl_mlops.data.split) of `--standin-fraction`, fixed by `--standin-seed`, never
used for training or validation. From the rest:

- G, the grouped validation split (`grouped_split`, `--val-fraction`, default 0.2 as runs had before their default
  became 0.05 and as the published figures use; split_seed 0);
- R, a random 15% of the remaining rows (`random_split`): their near-twins stay in training, as with
  `--val-split random`;
- T, the rest, for training.

Every model is trained once on T with `train_and_evaluate` (a real MLflow run in a temporary store,
validated on G, tested on the stand-in: the logged model is the one scored) and scored on G, R and the
stand-in. Models: each recipe in RECIPES over its seeds. The report:

1. selection: for G and R, the spread of validation accuracy over all models, the Spearman rank
   correlation between validation and stand-in accuracy (`rho`; and `rho+loss`, of the order the sweep and the
   registry use: accuracy, ties broken by the lower validation loss), and the stand-in regret of picking the best
   model by validation (ties in validation accuracy broken by validation loss for G; for R, whose
   accuracies tie at the top, the mean stand-in accuracy over the tied models); the same two for validation
   log loss alone (`rho(loss)`, and the regret of the lowest-loss model);
2. seeds: stand-in errors per recipe, mean +- sd and worst over seeds.

Results are appended to the JSON after every model (`--out`), and a re-run skips models already there,
so an interrupted benchmark resumes. `--report-only` prints the tables from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Recipes as changes to TrainConfig's defaults, and the training seeds each is run with.
#: `default` is the recipe `mlflow run .` had when this benchmark was measured (the cnn at 75,50,25 for 12
#: epochs, one network; the default is now two networks of 32,64,32 for 12, chosen with benchmarks/levers.py);
#: the others each change what their name says. The width and the single network are pinned so the published
#: figures stay reproducible. (They predate the longer weight average with BatchNorm statistics recomputed for
#: it, the default since; `ema_momentum` 0.99 is the closest to the training they had.)
EARLIER_DEFAULT = {"cnn_filters": "75,50,25", "epochs": 12, "ensemble": "1"}
RECIPES: dict[str, tuple[dict[str, object], tuple[int, ...]]] = {
    "default": ({**EARLIER_DEFAULT, "rotation": 10.0, "zoom": 0.1, "translation": 0.1}, (0, 1, 2, 3, 4)),
    "aug15": ({**EARLIER_DEFAULT, "rotation": 15.0, "zoom": 0.15, "translation": 0.15}, (0, 1, 2, 3, 4)),
    "lr3e-4": ({**EARLIER_DEFAULT, "learning_rate": 3e-4}, (0,)),
    "no-augment": ({**EARLIER_DEFAULT, "augment": False}, (0,)),
    "20ep": ({**EARLIER_DEFAULT, "epochs": 20, "rotation": 10.0, "zoom": 0.1, "translation": 0.1}, (0,)),
}
RANDOM_VAL_FRACTION = 0.15


def carve(train_data: str, standin_fraction: float, standin_seed: int, val_fraction: float = 0.2,
          all_photos: bool = False):
    """The stand-in test set, and T / G / R from the rest (see the module docstring).

    `val_fraction`: G's share of the rest's families. `all_photos` (benchmarks/levers.py): T as many rows as
    usual, drawn at random from all of the rest's photos (G's included), so T holds every photo but fewer
    variants of each: whether more distinct hands, at the same rows, pay on the stand-in."""
    from asl_mlops.data.sign_mnist import load_csv
    from asl_mlops.data.split import Split, grouped_split, random_split

    csv = load_csv(train_data)
    standin = grouped_split(csv, standin_fraction, standin_seed, what="standin_fraction")
    pool = standin.train
    grouped = grouped_split(pool, val_fraction, 0)
    random = random_split(grouped.train, RANDOM_VAL_FRACTION, 0)
    if all_photos:  # R then overlaps G, whose photos T now holds too
        random = random_split(pool, (len(pool) - len(random.train)) / len(pool), 0)
    info = {"csv_rows": len(csv), "families": standin.families, "standin_rows": len(standin.held_out),
            "standin_families": standin.held_out_families, "train_rows": len(random.train),
            "grouped_val_rows": len(grouped.held_out), "grouped_val_families": grouped.held_out_families,
            "random_val_rows": len(random.held_out)}
    return csv, Split(random.train, grouped.held_out), random.held_out, standin.held_out, info


def recipe_changes(recipe: str, epochs: int | None = None, overrides: dict | None = None) -> dict[str, object]:
    """The TrainConfig changes of `recipe` in RECIPES, with `epochs` and `overrides` (TrainConfig fields) on top."""
    return {**RECIPES[recipe][0], **({"epochs": epochs} if epochs else {}), **(overrides or {})}


def train_one(recipe: str, seed: int, parts, cache_dir: str, epochs: int | None = None,
              overrides: dict | None = None) -> dict:
    """Train one model on T (validated on G, tested on the stand-in) and score it on R too; `epochs` and
    `overrides` (TrainConfig fields) change the recipe."""
    import keras
    import mlflow.pyfunc
    import numpy as np

    from asl_mlops.config import TrainConfig
    from asl_mlops.labels import labels_to_indices
    from asl_mlops.train import train_and_evaluate
    from asl_mlops.training.evaluate import (
        evaluate_probabilities,
        predict_probabilities,
    )
    from asl_mlops.training.inputs import split_data
    from asl_mlops.recognizers.preprocess import to_model_input

    csv, split, random_val, standin = parts
    changes = recipe_changes(recipe, epochs, overrides)
    config = TrainConfig(train_data="(benchmark T)", test_data="(benchmark stand-in)", cache_dir=cache_dir,
                         seed=seed, **changes)
    keras.backend.clear_session()
    data = split_data(csv, split, standin)
    start = time.perf_counter()
    result = train_and_evaluate(config, data, run_name=f"{recipe}-seed{seed}")
    seconds = time.perf_counter() - start
    model = mlflow.pyfunc.load_model(result.model_uri).unwrap_python_model().model  # raw pixels in
    on_random = evaluate_probabilities(labels_to_indices(random_val.labels),
                                       predict_probabilities(model, to_model_input(random_val.images)))
    return {"recipe": recipe, "seed": seed, "changes": changes, "seconds": seconds,
            "grouped_val_accuracy": result.val_accuracy, "grouped_val_loss": result.val_loss,
            "random_val_accuracy": on_random.accuracy, "random_val_loss": on_random.loss,
            "random_val_errors": on_random.errors,
            "standin_accuracy": result.test.accuracy, "standin_errors": result.test.errors,
            "standin_rows": int(len(standin)), "epochs_run": len(result.history.get("loss", [])),
            "final_train_accuracy": float(np.asarray(result.history["accuracy"])[-1]),
            "model_uri": result.model_uri}


def selection_stats(models: list[dict], signal: str) -> dict:
    """Spread, Spearman rho against the stand-in, and regret of picking by `signal` validation."""
    from scipy.stats import spearmanr

    val = [m[f"{signal}_val_accuracy"] for m in models]
    standin = [m["standin_accuracy"] for m in models]
    rho = float(spearmanr(val, standin).statistic) if len(set(val)) > 1 else float("nan")
    # The order the sweep and the registry use: accuracy, ties broken by the lower validation loss.
    order = sorted(range(len(models)), key=lambda i: (val[i], -models[i][f"{signal}_val_loss"]))
    rank = [order.index(i) for i in range(len(models))]
    rho_ordered = float(spearmanr(rank, standin).statistic)
    # Validation log loss alone (lower is better): one metric that never ties, the alternative issue 7 names.
    loss = [m[f"{signal}_val_loss"] for m in models]
    rho_loss = float(spearmanr([-v for v in loss], standin).statistic)
    by_loss = min(models, key=lambda m: m[f"{signal}_val_loss"])
    top = max(val)
    tied = [m for m in models if m[f"{signal}_val_accuracy"] == top]
    if signal == "grouped":  # the sweep's and the registry's order: accuracy, then lower loss
        low = min(m["grouped_val_loss"] for m in tied)
        tied = [m for m in tied if m["grouped_val_loss"] == low]
    picked = statistics.fmean(m["standin_accuracy"] for m in tied)
    return {"models": len(models), "val_min": min(val), "val_max": top,
            "val_sd": statistics.stdev(val) if len(val) > 1 else 0.0, "distinct_values": len(set(val)),
            "spearman_rho": rho, "spearman_rho_accuracy_then_loss": rho_ordered, "spearman_rho_loss": rho_loss,
            "picked": [f"{m['recipe']}/seed{m['seed']}" for m in tied],
            "picked_standin_accuracy": picked, "best_standin_accuracy": max(standin),
            "regret": max(standin) - picked, "picked_by_loss": f"{by_loss['recipe']}/seed{by_loss['seed']}",
            "regret_by_loss": max(standin) - by_loss["standin_accuracy"]}


def seed_stats(models: list[dict]) -> dict[str, dict]:
    """Stand-in errors per recipe over its seeds: mean, sd, best and worst."""
    out = {}
    for recipe in RECIPES:
        errors = [m["standin_errors"] for m in models if m["recipe"] == recipe]
        if errors:
            out[recipe] = {"seeds": len(errors), "errors": errors, "mean": statistics.fmean(errors),
                           "sd": statistics.stdev(errors) if len(errors) > 1 else 0.0, "best": min(errors),
                           "worst": max(errors), "rows": models[0]["standin_rows"],
                           "mean_seconds": statistics.fmean(m["seconds"] for m in models if m["recipe"] == recipe)}
    return out


def report(results: dict) -> str:
    models = results["models"]
    lines = [f"data: {json.dumps(results['data'])}", "",
             f"{'model':<22}{'grouped val':>12}{'random val':>12}{'stand-in':>10}{'errors':>8}{'s':>7}"]
    for m in models:
        lines.append(f"{m['recipe'] + '/seed' + str(m['seed']):<22}{m['grouped_val_accuracy']:>12.4f}"
                     f"{m['random_val_accuracy']:>12.4f}{m['standin_accuracy']:>10.4f}{m['standin_errors']:>8}"
                     f"{m['seconds']:>7.0f}")
    if len(models) >= 2:
        lines += ["", f"{'validation':<10}{'min':>8}{'max':>8}{'sd':>8}{'distinct':>9}{'rho':>7}{'rho+loss':>9}{'regret':>8}"
                      f"{'rho(loss)':>10}{'regret':>8}  picked; by loss alone"]
        for signal in ("grouped", "random"):
            s = selection_stats(models, signal)
            lines.append(f"{signal:<10}{s['val_min']:>8.4f}{s['val_max']:>8.4f}{s['val_sd']:>8.4f}"
                         f"{s['distinct_values']:>9}{s['spearman_rho']:>7.2f}"
                         f"{s['spearman_rho_accuracy_then_loss']:>9.2f}{s['regret']:>8.4f}"
                         f"{s['spearman_rho_loss']:>10.2f}{s['regret_by_loss']:>8.4f}  "
                         f"{', '.join(s['picked'])}; {s['picked_by_loss']}")
    lines += ["", f"{'recipe':<12}{'seeds':>6}{'stand-in errors mean +- sd':>28}{'worst':>7}{'of':>7}  errors"]
    for recipe, s in seed_stats(models).items():
        lines.append(f"{recipe:<12}{s['seeds']:>6}{s['mean']:>20.1f} +- {s['sd']:<5.1f}{s['worst']:>7}"
                     f"{s['rows']:>7}  {s['errors']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(ROOT / "data" / "sign_mnist_train.csv"),
                        help="Sign MNIST training CSV to carve everything from.")
    parser.add_argument("--standin-fraction", type=float, default=0.2, help="Share of families in the stand-in.")
    parser.add_argument("--standin-seed", type=int, default=2026, help="Seed of the stand-in holdout.")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="Grouped validation G's share of the non-stand-in families (0.2: the published figures; "
                             "runs default to 0.05).")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES),
                        help="Recipes to train (default: all).")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Override every recipe's epochs (a quick smoke run; not for the figures).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection.json",
                        help="JSON results file; models already in it are not trained again.")
    parser.add_argument("--report-only", action="store_true", help="Print the tables of --out and stop.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows, recipes default and no-augment on one seed each, one narrow "
                             "network for one epoch.")
    args = parser.parse_args()
    seeds_of = {recipe: seeds for recipe, (_, seeds) in RECIPES.items()}
    overrides = None
    if args.tiny:
        import tiny

        args.train_data = str(tiny.sign_mnist(tiny.folder("selection"))[0])
        args.recipes, seeds_of, overrides = ["default", "no-augment"], {"default": (0,), "no-augment": (0,)}, tiny.TRAIN

    results = json.loads(args.out.read_text()) if args.out.exists() and not args.tiny else {"models": []}
    if not args.report_only:
        import mlflow

        from asl_mlops.data.sign_mnist import load_csv

        csv, split, random_val, standin, info = carve(args.train_data, args.standin_fraction, args.standin_seed, args.val_fraction)
        info.update(train_data=args.train_data, train_data_hash=load_csv(args.train_data).content_hash,
                    standin_fraction=args.standin_fraction, standin_seed=args.standin_seed,
                    **({"val_fraction": args.val_fraction} if args.val_fraction != 0.2 else {}))
        if results.get("data") not in (None, info):
            sys.exit(f"{args.out} holds results for other data ({results['data']}); use another --out")
        results["data"] = info
        done = {(m["recipe"], m["seed"]) for m in results["models"]}
        with tempfile.TemporaryDirectory() as store:
            mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
            mlflow.set_experiment(experiment_id=mlflow.create_experiment("selection", artifact_location=f"{store}/artifacts"))
            for recipe in args.recipes:
                for seed in seeds_of[recipe]:
                    if (recipe, seed) in done:
                        continue
                    model = train_one(recipe, seed, (csv, split, random_val, standin), f"{store}/cache", args.epochs,
                                      overrides)
                    del model["model_uri"]  # in a temporary store
                    results["models"].append(model)
                    write_results(args.out, stamped(results))
                    print(f"{recipe}/seed{seed}: grouped val {model['grouped_val_accuracy']:.4f}, random val "
                          f"{model['random_val_accuracy']:.4f}, stand-in {model['standin_accuracy']:.4f} "
                          f"({model['standin_errors']} errors), {model['seconds']:.0f} s", flush=True)
    if results["models"]:
        results["selection"] = {s: selection_stats(results["models"], s) for s in ("grouped", "random")} \
            if len(results["models"]) >= 2 else {}
        results["seeds"] = seed_stats(results["models"])
        write_results(args.out, stamped(results))
    print(report(results))


if __name__ == "__main__":
    main()
