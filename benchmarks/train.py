"""Training benchmarks on the real Sign MNIST training CSV: input cost, default cnn run, ResNet50 epochs.

    python benchmarks/train.py --train-data ../shared/data/sign_mnist_train.csv.gz
    python benchmarks/train.py --tiny --out /tmp/train.json    # input and cnn on synthetic rows (a smoke test)

1. input: shaping the whole CSV into model inputs (raw pixels; the models preprocess in their own layers),
   against reading the same array back from a .npy file, the most a cache of it could save.
2. cnn: the default `mlflow run . --env-manager local` end to end (wall time, validation accuracy on
   the default grouped validation split, and a throughput / FLOP-rate estimate against the CPU's peak).
   cnn-previous (only when asked, `--only cnn --only cnn-previous`): the earlier default recipe, one network
   of 24 epochs (`-P ensemble=1 -P epochs=24`), run right after the default (two networks of 12 epochs), and
   the default's wall time as a ratio to it.
   cnn-val20 (only when asked, `--only cnn --only cnn-val20`): the default with `-P val_fraction=0.2` (the
   default before 0.05: more validation rows, fewer training rows), run right after the default, and the
   default's wall time as a ratio to it.
   cnn-eigen (only when asked, `--only cnn --only cnn-eigen`): the default run again with
   TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's Eigen kernels, its own choice on some x86-64 CPUs; asl_mlops/__init__.py),
   right after the default (oneDNN, which asl_mlops turns on), and the two walls as a ratio.
3. resnet50: the original design's settings with weights=none for 2 epochs (seconds per epoch).
4. widths (only when asked, `--only widths`): the cnn at cnn_filters 75,50,25 (the earlier default) and 32,64,32 (the default),
   side by side in one process, rounds interleaved, best of 3: CPU and wall milliseconds per training
   step (batch 128), and per served image through the recognizer's traced TTA forward pass (9 views) for
   one network and for ensembles of 2 and 3 members.
5. onednn (only when asked, `--only onednn`): the default cnn's training step (batch 128, augmented real rows,
   the weight-averaging optimizer, BatchNorm on the fused op as `fit` trains), median wall milliseconds over
   300 steps, in fresh processes with TF_ENABLE_ONEDNN_OPTS=1 and =0 in turn, 3 rounds each; the ratio of the
   medians.
6. batchnorm (only when asked, `--only batchnorm`): the same step with BatchNormalization on TensorFlow's fused
   op (asl_mlops.training.fused_batchnorm, as `fit` trains) and on Keras' own ops, in turn in one process, 3 rounds each.

The real test CSV is withheld, so the runs are given 7,172 rows of the training CSV (the real test set's
size, so the final evaluation costs what it would) as `test_data`: their test_* metrics measure nothing
and are not reported; validation accuracy is the figure. Prints a
table and writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from provenance import stamped, write_results

ROOT = Path(__file__).resolve().parents[1]
TEST_ROWS = 7172  # rows of the real (withheld) test CSV
#: The default recipe before two networks of 12 epochs: one of 24 (and before that, 75,50,25 at 12 epochs).
PREVIOUS_DEFAULT = {"ensemble": 1, "epochs": 24}
VAL20 = {"val_fraction": 0.2}  # the default split before 0.05: 20% of the photos held out of training
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bench_input(train_data: str, repeats: int = 5) -> dict:
    """Seconds to shape the whole training CSV into model inputs vs to load that array from a .npy file
    (best of `repeats`): what a cache of model inputs could save at most."""
    import numpy as np

    from asl_mlops.data.sign_mnist import load_csv
    from asl_mlops.recognizers.preprocess import to_model_input

    images = load_csv(train_data).images
    shape_s, load_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        for _ in range(repeats):
            start = time.perf_counter()
            x = to_model_input(images)
            shape_s.append(time.perf_counter() - start)
            np.save(path, x)
            start = time.perf_counter()
            np.load(path)
            load_s.append(time.perf_counter() - start)
    return {"rows": len(images), "to_model_input_s": min(shape_s), "npy_load_s": min(load_s),
            "most_a_cache_saves_s": max(0.0, min(shape_s) - min(load_s)), "array_mb": x.nbytes / 2**20}


def mlflow_run(params: dict[str, object], store: Path, env: dict[str, str] | None = None) -> dict:
    """Run `mlflow run . --env-manager local` with `params` (and `env` added to the environment); return
    wall time and the run's data."""
    import mlflow

    uri = f"sqlite:///{store / 'mlflow.db'}"
    args = [str(Path(sys.executable).with_name("mlflow")), "run", str(ROOT), "--env-manager", "local",
            "--experiment-name", "benchmark"]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    env = {**os.environ, **(env or {}), "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(args, env=env, cwd=store, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    run = mlflow.search_runs(experiment_names=["benchmark"], order_by=["start_time DESC"], output_format="list")[0]
    def per_epoch(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]

    return {"wall_s": wall, "run_id": run.info.run_id, "params": run.data.params, "metrics": run.data.metrics,
            "tags": run.data.tags, "val_accuracy_per_epoch": per_epoch("epoch_val_accuracy"),
            # this machine loses a core in bursts: an epoch's seconds vary more than the kernels' speed does
            "epoch_seconds": per_epoch("epoch_seconds")}


def cnn_flops_per_image() -> float:
    """Forward FLOPs of the cnn for one image (2 x multiply-adds of conv and dense layers)."""
    import keras

    from asl_mlops.training.models import build_cnn

    model = build_cnn()
    flops = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k_h, k_w, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * c_out * k_h * k_w * c_in
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return flops


def bench_widths(rounds: int = 3, steps: int = 15, images: int = 200) -> dict:
    """Training-step and served-image cost of the cnn's widths (and ensembles), measured side by side."""
    import keras
    import numpy as np

    from asl_mlops.labels import NUM_CLASSES
    from asl_mlops.recognizers.sign_mnist import traced_forward
    from asl_mlops.training.fit import LOSS_AND_METRICS
    from asl_mlops.training.models import average_ensemble, build_cnn

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (128, 28, 28, 1)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, NUM_CLASSES, 128), NUM_CLASSES)
    widths = {"75,50,25": (75, 50, 25), "32,64,32": (32, 64, 32)}
    trainers = {}
    for name, filters in widths.items():
        model = build_cnn(filters=filters)
        model.compile(optimizer="adam", **LOSS_AND_METRICS)
        model.train_on_batch(x, y)  # trace
        trainers[name] = model

    narrow = widths["32,64,32"]
    networks = {"75,50,25": build_cnn(filters=widths["75,50,25"]), "32,64,32": build_cnn(filters=narrow),
                **{f"32,64,32 x{k}": average_ensemble([build_cnn(filters=narrow) for _ in range(k)]) for k in (2, 3)}}
    forwards = {name: traced_forward(network, tta=True) for name, network in networks.items()}  # as served
    one = x[:1]
    for forward in forwards.values():
        forward(one)

    def timed(fn, n):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            fn()
        return (time.process_time() - cpu) / n * 1e3, (time.perf_counter() - wall) / n * 1e3

    train = {name: [] for name in trainers}
    serve = {name: [] for name in forwards}
    for _ in range(rounds):
        for name, model in trainers.items():
            train[name].append(timed(lambda: model.train_on_batch(x, y), steps))
        for name, forward in forwards.items():
            serve[name].append(timed(lambda: np.asarray(forward(one)), images))
    best = lambda samples: {"cpu_ms": min(c for c, _ in samples), "wall_ms": min(w for _, w in samples)}  # noqa: E731
    result = {"train_step_batch128": {k: best(v) for k, v in train.items()},
              "served_image_tta9": {k: best(v) for k, v in serve.items()}}
    base = result["train_step_batch128"]["75,50,25"]["cpu_ms"]
    result["train_step_cpu_ratio_32_64_32"] = result["train_step_batch128"]["32,64,32"]["cpu_ms"] / base
    return result


def step_ms(train_data: str, steps: int = 300, rows: int = 8192, fused: bool = True) -> dict:
    """Wall milliseconds of the default cnn's training steps in this process: `fit`'s model, optimizer and
    augmented input pipeline on the first `rows` training rows, BatchNormalization on the fused op as in `fit` or
    (`fused=False`) on Keras' own ops; median and mean over `steps` after 20 to warm up."""
    import contextlib
    import importlib

    importlib.import_module("asl_mlops")  # first: it picks TensorFlow's CPU kernels before keras loads TensorFlow
    import keras

    from asl_mlops.config import TrainConfig
    from asl_mlops.data.sign_mnist import load_csv
    from asl_mlops.tracking import training_device
    from asl_mlops.training.augment import build_augmentation, make_dataset
    from asl_mlops.training.fit import loss_and_metrics, training_optimizer
    from asl_mlops.training.fused_batchnorm import fused_batchnorm
    from asl_mlops.training.inputs import one_hot
    from asl_mlops.training.models import build_model
    from asl_mlops.recognizers.preprocess import to_model_input

    config = TrainConfig()
    csv = load_csv(train_data)
    x, y = to_model_input(csv.images[:rows]), one_hot(csv.labels[:rows])
    model = build_model(config)
    model.compile(optimizer=training_optimizer(config, steps=config.epochs * -(-rows // config.batch_size)),
                  **loss_and_metrics(config))
    data = make_dataset(x, y, config.batch_size, seed=0, augmentation=build_augmentation(config), shuffle=True).repeat()
    ends: list[float] = []

    class StepEnds(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    with fused_batchnorm(model) if fused else contextlib.nullcontext():
        model.fit(data, steps_per_epoch=20 + steps, epochs=1, verbose=0, callbacks=[StepEnds()], shuffle=False)
    import numpy as np

    took = np.diff(ends[19:]) * 1e3
    return {"median_ms": float(np.median(took)), "mean_ms": float(took.mean()), "device": training_device(),
            "fused_batchnorm": fused}


def alternate(samplers: dict[str, Callable[[], dict]], rounds: int = 3) -> dict:
    """`step_ms` samples from each of `samplers` in turn, `rounds` times; per sampler, the median of the samples'
    medians, and the ratio of the second's to the first's."""
    samples: dict[str, list[dict]] = {name: [] for name in samplers}
    for _ in range(rounds):
        for name, sample in samplers.items():
            samples[name].append(sample())
    median = {name: sorted(s["median_ms"] for s in runs)[len(runs) // 2] for name, runs in samples.items()}
    first, second = samplers
    return {"rounds": samples, "median_step_ms": median, f"{second}_over_{first}": median[second] / median[first]}


def bench_onednn(train_data: str) -> dict:
    """`step_ms` in fresh processes with oneDNN on and off (TensorFlow reads the switch at import), in turn."""
    def fresh_process_with(flag: str) -> dict:
        done = subprocess.run([sys.executable, __file__, "--train-data", train_data, "--step-ms"],
                              env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag}, check=True, capture_output=True,
                              text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    return alternate({"onednn": lambda: fresh_process_with("1"), "eigen": lambda: fresh_process_with("0")})


def bench_batchnorm(train_data: str) -> dict:
    """`step_ms` with BatchNormalization on the fused op and on Keras' own ops, in turn in this process."""
    return alternate({"fused": lambda: step_ms(train_data), "keras": lambda: step_ms(train_data, fused=False)})


def step_rows(result: dict, what: str, note: str) -> list[tuple[str, str, str]]:
    """Table rows of an `alternate` result: each sampler's step time, then the ratio."""
    median = result["median_step_ms"]
    first, second = median
    return [*((f"training step, {what.format(name)}", f"{ms:.1f} ms", note) for name, ms in median.items()),
            (f"{second} / {first} step time", f"{result[f'{second}_over_{first}']:.2f}x", "same machine, in turn")]


def cpu_peak_flops() -> float | None:
    """Rough fp32 peak of this CPU: cores x GHz x FLOPs/cycle (32 with AVX-512 FMA x2, 16 with AVX2 FMA x2)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    if not mhz:
        return None
    per_cycle = 32 if "avx512f" in info else 16 if "avx2" in info else 8
    return os.cpu_count() * (sum(mhz) / len(mhz)) * 1e6 * per_cycle


def run_summary(r: dict) -> dict:
    """Wall and fit seconds and grouped-validation errors of one `mlflow_run` result."""
    metrics = r["metrics"]
    accuracy = metrics.get("final_val_accuracy", metrics.get("val_accuracy"))  # final_ in runs before epoch_*
    val_rows = int(r["params"]["val_rows"])
    return {"wall_s": r["wall_s"], "run_id": r["run_id"], "device": r["tags"].get("device"),
            "train_seconds": r["metrics"]["train_seconds"], "fastest_epoch_s": min(r["epoch_seconds"]),
            "median_epoch_s": sorted(r["epoch_seconds"])[len(r["epoch_seconds"]) // 2],
            # the BatchNorm pass after weight averaging, part of train_seconds (its cost, side by side)
            "batchnorm_seconds": r["metrics"].get("batchnorm_seconds"),
            "final_val_accuracy": accuracy, "val_errors": round((1 - accuracy) * val_rows), "val_rows": val_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default=str(ROOT.parent / "shared/data/sign_mnist_train.csv.gz"),
                        help="real Sign MNIST training CSV")
    parser.add_argument("--only", choices=("input", "cnn", "cnn-previous", "cnn-val20", "cnn-eigen",
                                           "resnet50",
                                           "widths", "onednn", "batchnorm"), action="append",
                        help="run only these parts (repeatable); default input, cnn and resnet50")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/train.json"),
                        help="JSON output path; parts not run keep their earlier figures there")
    parser.add_argument("--step-ms", action="store_true", help=argparse.SUPPRESS)  # one `bench_onednn` sample
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: input and cnn (unless --only) on synthetic rows, one narrow network for "
                             "one epoch (resnet50: one epoch).")
    args = parser.parse_args()
    tiny_params: dict[str, object] = {}
    if args.tiny:
        import tiny

        args.train_data = str(tiny.sign_mnist(tiny.folder("train"))[0])
        tiny_params = tiny.TRAIN
        # resnet50's mlflow run costs a minute even so; benchmarks/trunk.py --tiny trains the same configuration
        args.only = args.only or ["input", "cnn"]
    if args.step_ms:
        print(json.dumps(step_ms(str(Path(args.train_data).resolve()))))
        return
    parts = args.only or ["input", "cnn", "resnet50"]
    train_data = str(Path(args.train_data).resolve())
    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if "input" in parts:
            results["input"] = r = bench_input(train_data)
            rows.append(("model inputs of the whole CSV", f"{r['to_model_input_s']:.3f} s",
                         f"a .npy cache: {r['npy_load_s']:.3f} s, saves at most {r['most_a_cache_saves_s']:.3f} s"))
        if "widths" in parts:
            results["widths"] = w = bench_widths()
            for name, t in w["train_step_batch128"].items():
                rows.append((f"cnn_filters {name}: training step", f"{t['cpu_ms']:.0f} ms CPU",
                             f"{t['wall_ms']:.0f} ms wall, batch 128"))
            rows.append(("32,64,32 / 75,50,25 training CPU", f"{w['train_step_cpu_ratio_32_64_32']:.2f}x", ""))
            for name, t in w["served_image_tta9"].items():
                rows.append((f"served image, TTA 9 views: {name}", f"{t['cpu_ms']:.2f} ms CPU",
                             f"{t['wall_ms']:.2f} ms wall"))
        from asl_mlops.data.sign_mnist import load_csv, write_csv

        full = load_csv(train_data)
        test_csv = write_csv((full.images[:TEST_ROWS], full.labels[:TEST_ROWS]), tmp_path / "test-sized.csv")
        common = {"train_data": train_data, "test_data": test_csv, "cache_dir": tmp_path / "cache", **tiny_params}
        if "cnn" in parts:
            r = mlflow_run(common, tmp_path)
            epochs = int(r["params"]["epochs"])
            members = int(r["params"]["ensemble_members"])
            train_rows = int(r["params"]["train_rows"])
            fit_s = r["metrics"]["train_seconds"]
            flops = cnn_flops_per_image() * 3 * train_rows * epochs * members  # forward + backward ~ 3x forward
            peak = cpu_peak_flops()
            results["cnn"] = {**run_summary(r), "val_accuracy_per_epoch": r["val_accuracy_per_epoch"],
                              "epochs": epochs, "ensemble_members": members,
                              "train_images_per_s": train_rows * epochs * members / fit_s,
                              "achieved_gflops": flops / fit_s / 1e9,
                              "cpu_peak_gflops": peak / 1e9 if peak else None}
            c = results["cnn"]
            rows.append(("cnn default mlflow run: wall", f"{c['wall_s']:.0f} s",
                         f"fit {fit_s:.0f} s, {members} network(s) x {epochs} epochs"))
            if c["batchnorm_seconds"] is not None:
                rows.append(("cnn BatchNorm pass after weight averaging", f"{c['batchnorm_seconds']:.1f} s",
                             f"{c['batchnorm_seconds'] / fit_s:.1%} of the fit"))
            rows.append(("cnn validation accuracy", f"{c['final_val_accuracy']:.4%}",
                         f"{c['val_errors']} errors of {c['val_rows']}"))
            if peak:
                rows.append(("cnn training FLOP rate", f"{c['achieved_gflops']:.1f} GFLOP/s",
                             f"{c['achieved_gflops'] / c['cpu_peak_gflops']:.1%} of ~{c['cpu_peak_gflops']:.0f} peak"))
        if "cnn-previous" in parts:  # the earlier default recipe, for a side-by-side ratio to the default run
            results["cnn_previous"] = p = {**run_summary(mlflow_run({**common, **PREVIOUS_DEFAULT}, tmp_path)),
                                           "params": PREVIOUS_DEFAULT}
            rows.append(("earlier default (1 network, 24 epochs): wall", f"{p['wall_s']:.0f} s",
                         f"fit {p['train_seconds']:.0f} s; {p['val_errors']} val errors of {p['val_rows']}"))
            if "cnn" in results:
                p["default_wall_ratio"] = results["cnn"]["wall_s"] / p["wall_s"]
                rows.append(("default / earlier default wall", f"{p['default_wall_ratio']:.2f}x", "same machine, in turn"))
        if "cnn-val20" in parts:  # validation holding out 20% of the photos, the default before 0.05
            results["cnn_val20"] = v = {**run_summary(mlflow_run({**common, **VAL20}, tmp_path)), "params": VAL20}
            rows.append(("default with val_fraction 0.2: wall", f"{v['wall_s']:.0f} s",
                         f"fit {v['train_seconds']:.0f} s; {v['val_errors']} val errors of {v['val_rows']}"))
            if "cnn" in results:
                v["default_wall_ratio"] = results["cnn"]["wall_s"] / v["wall_s"]
                rows.append(("default / val_fraction 0.2 wall", f"{v['default_wall_ratio']:.2f}x",
                             "same machine, in turn"))
        if "cnn-eigen" in parts:  # the default run on TensorFlow's Eigen kernels, beside the oneDNN one
            results["cnn_eigen"] = g = run_summary(mlflow_run(common, tmp_path, env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
            rows.append(("default run on Eigen kernels: wall", f"{g['wall_s']:.0f} s",
                         f"fit {g['train_seconds']:.0f} s; {g['val_errors']} val errors of {g['val_rows']}"))
            if "cnn" in results:
                g["onednn_wall_ratio"] = results["cnn"]["wall_s"] / g["wall_s"]
                rows.append(("oneDNN / Eigen wall", f"{g['onednn_wall_ratio']:.2f}x", "same machine, in turn"))
        if "onednn" in parts:
            results["onednn"] = bench_onednn(train_data)
            rows += step_rows(results["onednn"], "{} kernels", "median of 3 processes' medians over 300 steps")
        if "batchnorm" in parts:
            results["batchnorm"] = bench_batchnorm(train_data)
            rows += step_rows(results["batchnorm"], "BatchNorm on {} ops", "median of 3 rounds' medians over 300 steps")
        if "resnet50" in parts:
            epochs = 1 if args.tiny else 2
            params = {**common, "architecture": "resnet50", "weights": "none", "learning_rate": 1e-5,
                      "decay_rate": 1e-5 / 50, "l2": 1e-3, "epochs": epochs, "batch_size": 256,
                      "flip_horizontal": "true", "flip_vertical": "true", "rotation": 0, "zoom": 0, "translation": 0,
                      "ema": "false"}
            r = mlflow_run(params, tmp_path)
            results["resnet50"] = {**{k: r[k] for k in ("wall_s", "run_id", "val_accuracy_per_epoch")},
                                   "train_seconds": r["metrics"]["train_seconds"],
                                   "seconds_per_epoch": r["metrics"]["train_seconds"] / epochs,
                                   "trainable_params": int(r["params"]["trainable_params"]),
                                   "final_val_accuracy": r["metrics"].get("final_val_accuracy",
                                                                          r["metrics"].get("val_accuracy"))}
            c = results["resnet50"]
            rows.append((f"resnet50 (weights=none) {epochs} epochs", f"{c['seconds_per_epoch']:.0f} s/epoch",
                         f"val acc {c['final_val_accuracy']:.4f}, wall {c['wall_s']:.0f} s"))
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    out = Path(args.out)
    # Parts not run this time keep their earlier figures (each part records its own machine-independent facts).
    earlier = json.loads(out.read_text()) if out.exists() and not args.tiny else {}
    earlier.pop("cache", None)  # the preprocessed-array cache is gone (see the input part)
    write_results(out, stamped({**earlier, **results}), default=str)


if __name__ == "__main__":
    main()
