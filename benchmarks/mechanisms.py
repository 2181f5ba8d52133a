"""Do the hand-written training mechanisms earn their keep against stock Keras? (issue 26, point 4)

    python benchmarks/mechanisms.py --train-data ../shared/data/sign_mnist_train.csv.gz
    python benchmarks/mechanisms.py --train-data ... --parts errors --seeds 0 1   # in pieces
    python benchmarks/mechanisms.py --train-data ... --parts steps
    python benchmarks/mechanisms.py --tiny --out /tmp/mechanisms.json    # synthetic rows, a few steps (a smoke test)

Two mechanisms of the default recipe, each against its stock counterpart:

- weight average: `hand` is WarmupEMAAdam (momentum (1 + t) / (10 + t), capped at `ema_momentum`, through Keras'
  private `_update_model_variables_moving_average` hook); `stock` is `keras.optimizers.Adam(use_ema=True,
  ema_momentum=1 - 10 / steps)` with `steps` the run's optimizer steps (the average spans about the last tenth of
  the run and keeps ~e^-10 of the initial weights). SwapEMAWeights, the BatchNorm re-estimation and the rest of
  `asl_mlops.training.fit.fit` are unchanged.
- BatchNorm: `fused` (the patch to TensorFlow's FusedBatchNormV3 while training), `plain` (Keras' own
  BatchNormalization) and `xla` (plain, compiled with `jit_compile=True`).

The hand-written weight average is a LAB COPY below (`LabWarmupEMAAdam`): the package dropped it for Keras' own
(docs/decisions.md), and the copy keeps the comparison reproducible. The fused BatchNorm is the package's own
(`asl_mlops.training.fused_batchnorm`), which it keeps. They reach the package's training through two
module attributes of asl_mlops.training.fit, swapped for the run: `training_optimizer` and `fused_batchnorm`.

Parts (`--parts`):

1. `errors`: one 12-epoch cnn (today's default with `ensemble=1`: 32,64,32, TTA) trained per seed and weight
   average with `benchmarks/selection.py`'s `train_one` on its carve (stand-in seed 2026, 20% of the families;
   grouped validation `--val-fraction` 0.05 of the rest; the same data as levers-c32-12epochs-val05.json), a real
   MLflow run in a temporary store; stand-in errors (TTA, as the run's final metrics) per seed, mean +- sd, worst.
   Both weight averages train with the same BatchNorm path (`--error-bn`, default `fused` as shipped; the BN path
   changes speed only, not the math). Seeds alternate between the variants, and runs already in `--out` are skipped.
2. `steps`: ms per training step of each variant in `--step-variants` (BN path / weight average), one model each,
   all in this one process: after a warm-up (tracing, XLA compilation), `--rounds` rounds of `--chunk` steps each,
   variants in a rotated order every round, so machine load falls on all alike; each round's chunk is also
   compared with the baseline's chunk of the same round (`paired`), which cancels load that changes between rounds. A step is the time between two
   `on_train_batch_end` calls of `model.fit` on the training input pipeline (augmentation included), the first of
   each chunk left out. Reported: the median, p10/p90, the quietest chunk's median, and against `fused/hand` (the default) the ratio of
   medians and the median of the paired per-round ratios.

`--out` (default benchmarks/results/mechanisms.json) keeps every part's results with its provenance (commit, date,
machine, command); a part run again replaces its own entries only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from provenance import provenance, write_results  # noqa: E402  (a sibling script, benchmarks/ is on sys.path)

EMA_VARIANTS = ("hand", "stock")
BN_VARIANTS = ("fused", "plain", "xla")
DEFAULT_STEP_VARIANTS = ["fused/hand", "plain/hand", "xla/hand", "fused/stock", "plain/stock", "xla/stock"]
#: The recipe of part 1: selection.py's `default` (rotation/zoom/translation as today's defaults) at today's width,
#: 12 epochs, one network: every TrainConfig field at its default but `ensemble`.
RECIPE = {"cnn_filters": "32,64,32"}
EPOCHS = 12


# --- Lab copies of the hand-written mechanisms (as asl_mlops had them at commit da89023) ----------------------

WARMUP_OFFSET = 10.0


def lab_classes():
    """LabWarmupEMAAdam, defined on first use (keras is imported lazily)."""
    import keras
    from keras import ops

    class LabWarmupEMAAdam(keras.optimizers.Adam):
        """Copy of the former asl_mlops.optimizer.WarmupEMAAdam: Adam whose `use_ema` average has momentum 0 at step 0, then
        min(ema_momentum, (1 + step) / (10 + step)); overrides Keras' private per-step EMA hook."""

        def _update_model_variables_moving_average(self, trainable_variables):
            if not self.use_ema:
                return
            step = ops.cast(self.iterations, "float32")
            warmup = ops.minimum(self.ema_momentum, (1.0 + step) / (WARMUP_OFFSET + step))
            momentum = ops.where(ops.equal(step, 0.0), 0.0, warmup)
            for var, average in zip(trainable_variables, self._model_variables_moving_average):
                if average is not None:
                    m = ops.cast(momentum, var.dtype)
                    average.assign(ops.add(ops.multiply(m, average), ops.multiply(ops.subtract(1.0, m), var)))

    return LabWarmupEMAAdam


@contextlib.contextmanager
def plain_batchnorm(model):
    """Keras' own BatchNormalization: nothing patched."""
    yield []


# --- The variants -------------------------------------------------------------------------------------------------

def optimizer_factory(ema: str, total_steps: int):
    """`training_optimizer(config, steps)` for weight average `ema` in a run of `total_steps` optimizer steps."""
    import keras

    if ema == "hand":
        cls = lab_classes()
        return lambda config, steps=None: cls(config.learning_rate, use_ema=config.ema, ema_momentum=config.ema_momentum)
    if ema == "stock":
        momentum = stock_momentum(total_steps)
        return lambda config, steps=None: keras.optimizers.Adam(config.learning_rate, use_ema=config.ema,
                                                               ema_momentum=momentum)
    raise ValueError(ema)


def stock_momentum(total_steps: int) -> float:
    """1 - 10 / steps: the average spans about the last tenth of the run, initial weights ~e^-10 of it."""
    return 1.0 - 10.0 / total_steps


@contextlib.contextmanager
def injected(ema: str, bn: str, total_steps: int):
    """asl_mlops.training.fit trains with weight average `ema` and BatchNorm path `bn` ('fused' or 'plain') in the
    block."""
    import asl_mlops.training.fit as train
    from asl_mlops.training.fused_batchnorm import fused_batchnorm

    saved = train.training_optimizer, train.fused_batchnorm
    train.training_optimizer = optimizer_factory(ema, total_steps)
    train.fused_batchnorm = {"fused": fused_batchnorm, "plain": plain_batchnorm}[bn]
    try:
        yield
    finally:
        train.training_optimizer, train.fused_batchnorm = saved


def summary(errors: list[int]) -> dict:
    return {"errors": errors, "mean": statistics.fmean(errors), "sd": statistics.stdev(errors) if len(errors) > 1 else 0.0,
            "worst": max(errors), "best": min(errors)}


# --- Part 1: stand-in errors --------------------------------------------------------------------------------------

def run_errors(args, results: dict) -> None:
    import mlflow

    import selection

    csv, split, random_val, standin, info = selection.carve(args.train_data, 0.2, 2026, args.val_fraction)
    from asl_mlops.config import TrainConfig

    config = TrainConfig(**args.recipe, epochs=args.epochs, ensemble="1")
    total_steps = math.ceil(len(split.train) / config.batch_size) * config.epochs
    data = {**info, "val_fraction": args.val_fraction, "train_data": args.train_data, "epochs": args.epochs,
            "ensemble": 1, "steps_per_run": total_steps, "stock_ema_momentum": stock_momentum(total_steps),
            "hand_ema_momentum_cap": config.ema_momentum,
            "hand_ema_momentum_at_last_step": min(config.ema_momentum, (total_steps) / (WARMUP_OFFSET + total_steps - 1)),
            "batchnorm": args.error_bn}
    part = results.setdefault("errors", {})
    if part.get("data") not in (None, data):
        raise SystemExit(f"{args.out} holds error runs on other data or settings ({part['data']}); use another --out")
    part["data"] = data
    runs = part.setdefault("runs", {v: {} for v in EMA_VARIANTS})
    with tempfile.TemporaryDirectory() as store:
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("mechanisms", artifact_location=f"{store}/artifacts"))
        for seed in args.seeds:
            for ema in args.ema:
                if str(seed) in runs[ema]:
                    continue
                with injected(ema, args.error_bn, total_steps):
                    model = selection.train_one("default", seed, (csv, split, random_val, standin), f"{store}/cache",
                                                args.epochs, args.recipe)
                del model["model_uri"]  # in the temporary store
                model["provenance"] = provenance()
                runs[ema][str(seed)] = model
                part["summary"] = {v: summary([runs[v][s]["standin_errors"] for s in sorted(runs[v], key=int)])
                                   for v in EMA_VARIANTS if runs[v]}
                write_results(args.out, results)
                print(f"{ema} seed {seed}: {model['standin_errors']} stand-in errors (TTA) of {model['standin_rows']}, "
                      f"{model['seconds']:.0f} s", flush=True)


# --- Part 2: step time --------------------------------------------------------------------------------------------

class StepClock:
    """Times between consecutive training batch ends (the first batch of each fit call left out)."""

    def __init__(self):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_train_begin(inner, logs=None):
                inner.last = None

            def on_train_batch_end(inner, batch, logs=None):
                now = time.perf_counter()
                if inner.last is not None:
                    self.intervals.append(now - inner.last)
                inner.last = now

        self.intervals: list[float] = []
        self.callback = Clock()


def run_steps(args, results: dict) -> None:
    import keras
    import numpy as np

    import selection
    from asl_mlops.config import TrainConfig
    from asl_mlops.training.augment import build_augmentation, make_dataset
    from asl_mlops.training.fit import loss_and_metrics
    from asl_mlops.training.fused_batchnorm import fused_batchnorm
    from asl_mlops.training.inputs import split_data
    from asl_mlops.training.models import build_model

    csv, split, _, standin, info = selection.carve(args.train_data, 0.2, 2026, args.val_fraction)
    data = split_data(csv, split, standin)
    config = TrainConfig(**args.recipe, epochs=EPOCHS, ensemble="1", seed=0)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    models = {}
    clocks = {}
    load_at_start = os.getloadavg()  # 1, 5, 15 minutes: other work on the machine shares its cores
    with contextlib.ExitStack() as stack:
        for name in args.step_variants:
            bn, ema = name.split("/")
            keras.utils.set_random_seed(0)
            model = build_model(config)
            if bn == "fused":  # traced inside the block: the step keeps the fused op
                stack.enter_context(fused_batchnorm(model))
            model.compile(optimizer=optimizer_factory(ema, total_steps)(config), jit_compile=(bn == "xla"),
                          **loss_and_metrics(config))
            ds = make_dataset(data.x_train, data.y_train, config.batch_size, seed=0,
                              augmentation=build_augmentation(config), shuffle=True).repeat()
            start = time.perf_counter()
            model.fit(ds, epochs=1, steps_per_epoch=args.warmup, verbose=0)
            print(f"{name}: warm-up ({args.warmup} steps, tracing/compiling) {time.perf_counter() - start:.1f} s",
                  flush=True)
            models[name] = (model, ds)
            clocks[name] = StepClock()
        names = list(models)
        chunk_medians: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                model, ds = models[name]
                clock = clocks[name]
                before = len(clock.intervals)
                model.fit(ds, epochs=1, steps_per_epoch=args.chunk, verbose=0, callbacks=[clock.callback])
                chunk_medians[name].append(1000 * statistics.median(clock.intervals[before:]))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {chunk_medians[n][-1]:.1f}" for n in names)
                  + " ms/step", flush=True)
    base = "fused/hand" if "fused/hand" in names else names[0]
    medians = {n: 1000 * statistics.median(clocks[n].intervals) for n in names}
    variants = {}
    for n in names:
        ms = np.array(clocks[n].intervals) * 1000
        # Paired per round: each chunk against the baseline's chunk of the same round (adjacent in time), so load
        # that changes between rounds cancels; the median over rounds is the ratio reported.
        paired = [a / b for a, b in zip(chunk_medians[n], chunk_medians[base])]
        variants[n] = {"ms_per_step_median": medians[n], "ms_per_step_mean": float(ms.mean()),
                       "ms_per_step_p10": float(np.percentile(ms, 10)), "ms_per_step_p90": float(np.percentile(ms, 90)),
                       "ms_per_step_best_chunk": min(chunk_medians[n]),
                       "steps_timed": int(len(ms)), "chunk_medians_ms": chunk_medians[n],
                       f"ratio_to_{base.replace('/', '_')}": medians[n] / medians[base],
                       "paired_round_ratios": paired, "paired_ratio_median": statistics.median(paired),
                       "epoch_seconds_at_median": medians[n] * steps_per_epoch / 1000}
    results["steps"] = {**provenance(), "settings": {"rounds": args.rounds, "chunk": args.chunk, "warmup": args.warmup,
                                                      "batch_size": config.batch_size, "cnn_filters": config.cnn_filters,
                                                      "steps_per_epoch": steps_per_epoch, "baseline": base,
                                                      "stock_ema_momentum": stock_momentum(total_steps),
                                                      "load_average_at_start": load_at_start,
                                                      "load_average_at_end": os.getloadavg()},
                        "variants": variants}
    write_results(args.out, results)


# --- Report -------------------------------------------------------------------------------------------------------

def report(results: dict) -> str:
    lines = []
    errors = results.get("errors")
    if errors and errors.get("runs"):
        d = errors["data"]
        lines += [f"stand-in errors (TTA) of {d['standin_rows']}, one {d['epochs']}-epoch cnn, val_fraction "
                  f"{d['val_fraction']}, BN {d['batchnorm']}, {d['steps_per_run']} steps/run; stock ema_momentum "
                  f"{d['stock_ema_momentum']:.5f}",
                  f"{'EMA':<8}{'per seed':<34}{'mean +- sd':>14}{'worst':>7}{'s/run':>7}"]
        for v, runs in errors["runs"].items():
            if not runs:
                continue
            seeds = sorted(runs, key=int)
            e = [runs[s]["standin_errors"] for s in seeds]
            s = summary(e)
            per = ", ".join(f"{k}:{runs[k]['standin_errors']}" for k in seeds)
            lines.append(f"{v:<8}{per:<34}{s['mean']:>7.1f} +- {s['sd']:<4.1f}{s['worst']:>7}"
                         f"{statistics.fmean(runs[k]['seconds'] for k in seeds):>7.0f}")
        lines.append("")
    steps = results.get("steps")
    if steps:
        base = steps["settings"]["baseline"]
        key = f"ratio_to_{base.replace('/', '_')}"
        lines += [f"ms per training step (batch {steps['settings']['batch_size']}), {steps['settings']['rounds']} rounds "
                  f"x {steps['settings']['chunk']} steps, interleaved",
                  f"{'BN/EMA':<14}{'median':>8}{'p10':>8}{'p90':>8}{'best chunk':>11}{'ratio':>7}{'paired':>8}"
                  f"{'s/epoch':>9}   (ratio: of medians, paired: median of per-round ratios, both vs {base})"]
        for n, v in steps["variants"].items():
            lines.append(f"{n:<14}{v['ms_per_step_median']:>8.1f}{v['ms_per_step_p10']:>8.1f}{v['ms_per_step_p90']:>8.1f}"
                         f"{v.get('ms_per_step_best_chunk', float('nan')):>11.1f}{v[key]:>7.2f}"
                         f"{v.get('paired_ratio_median', float('nan')):>8.2f}{v['epoch_seconds_at_median']:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(ROOT / "data" / "sign_mnist_train.csv"),
                        help="Sign MNIST training CSV to carve everything from.")
    parser.add_argument("--parts", nargs="*", default=["errors", "steps"], choices=["errors", "steps"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="Training seeds (errors).")
    parser.add_argument("--ema", nargs="*", default=list(EMA_VARIANTS), choices=EMA_VARIANTS,
                        help="Weight averages to train (errors).")
    parser.add_argument("--error-bn", default="fused", choices=["fused", "plain"],
                        help="BatchNorm path of every error run (the same for both weight averages).")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="Epochs of each error run (12; less: a smoke test).")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="Grouped validation share (as runs default).")
    parser.add_argument("--step-variants", nargs="*", default=DEFAULT_STEP_VARIANTS,
                        help="BN/EMA pairs to time, BN in fused, plain, xla and EMA in hand, stock.")
    parser.add_argument("--rounds", type=int, default=15, help="Interleaved timing rounds (steps).")
    parser.add_argument("--chunk", type=int, default=20, help="Steps per variant per round (steps).")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed steps per variant first (steps).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mechanisms.json")
    parser.add_argument("--report-only", action="store_true", help="Print the tables of --out and stop.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: synthetic rows, a narrow network; errors: seed 0 for one epoch; steps: "
                             "fused/hand and plain/stock, 2 rounds of 3 steps.")
    args = parser.parse_args()
    args.recipe = RECIPE
    if args.tiny:
        import tiny

        args.train_data = str(tiny.sign_mnist(tiny.folder("mechanisms"))[0])
        # batches of 16: a run of at least 10 steps, so stock_momentum is a momentum
        args.recipe = {**RECIPE, **{k: v for k, v in tiny.TRAIN.items() if k not in ("epochs", "ensemble")},
                       "batch_size": 16}
        args.seeds, args.epochs, args.step_variants = [0], 1, ["fused/hand", "plain/stock"]
        args.rounds, args.chunk, args.warmup = 2, 3, 2
    for name in args.step_variants:
        bn, _, ema = name.partition("/")
        if bn not in BN_VARIANTS or ema not in EMA_VARIANTS:
            parser.error(f"--step-variants {name}: expected BN/EMA with BN in {BN_VARIANTS}, EMA in {EMA_VARIANTS}")

    results = json.loads(args.out.read_text()) if args.out.exists() and not args.tiny else {}
    if not args.report_only:
        results["provenance"] = provenance()  # of the latest part run; each part keeps its own too
        if "errors" in args.parts:
            run_errors(args, results)
        if "steps" in args.parts:
            run_steps(args, results)
        write_results(args.out, results)
    print(report(results))


if __name__ == "__main__":
    sys.exit(main())
