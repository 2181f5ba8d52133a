"""Teaching a person's hand: how well the recognizer reads a signer after `asl-mlops teach` with 5 photos a letter,
what it costs the other people, and how long one teach takes from the command to the served switch.

Two parts, both on ../shared/data/hands with some signers held out of the champion's training:

- `--part figures` (in process): train the recognizer on every signer but the held-out ones, then for each held-out
  signer retrain it as `teach` does (the same recipe, the signer's first 5 photos of each letter added, each
  weighing --weights average photos) and score the rest of that signer's photos (before and after) and the other
  held-out signers' photos (their change). A photo with no hand found is an error.
- `--part live` (the product, end to end): in a fresh SQLite store, `asl-mlops train --register` the champion
  (tested on the other held-out signers),
  `asl-mlops serve` it following models:/asl-recognizer@champion, then for one held-out signer time
  `asl-mlops teach` until the server answers with the new version, while a client keeps sending requests (their
  latencies before, during and after the switch are recorded).

    python benchmarks/teach.py --part figures --out benchmarks/results/teach-figures.json
    python benchmarks/teach.py --part live --out benchmarks/results/teach-live.json
    python benchmarks/teach.py --tiny --out /tmp/teach-tiny.json     # both parts on a few photos (a smoke test)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Signers held out of the champion's training: those with at least 6 photos of every letter, but the two that hold
#: most of the data (kaggleasl, massey-hand1), so 5 a letter are taught and at least one a letter is scored.
HELD_OUT = ("massey-hand2", "sherwin1201_group", "t32rahman", "longhongvo23")
TAUGHT_PER_LETTER = 5
#: Variants of how the person's photos are taught: "retrain" is what `asl-mlops teach` does (the champion's recipe
#: from scratch with the photos added); "finetune" starts from the champion's weights for FINETUNE_EPOCHS epochs at a
#: third of the learning rate; "copies20" retrains with 20 turned copies of each taught photo instead of 5.
VARIANTS = ("retrain", "finetune", "copies20")
FINETUNE_EPOCHS = 4


def split_folders(photos, held_out: tuple[str, ...], dest: Path, per_letter: int | None = None,
                  untested: tuple[str, ...] = ()) -> tuple[dict[str, Path], dict[str, str]]:
    """Copies of the photo set as folders: dest/train (signer folders of everyone else), dest/test (letter folders
    of the held-out signers' untaught photos), dest/people/<signer>/ (letter folders of what each one teaches),
    dest/rest/<signer>/ (the rest of theirs), and the signer of each copy's file name. `per_letter` keeps at most
    that many photos per signer and letter; `untested` signers' photos stay out of dest/test."""
    from asl_mlops.labels import label_to_letter

    kept: dict[tuple[str, int], int] = {}
    signer_of: dict[str, str] = {}
    for path, label, signer in zip(photos.paths, photos.labels.tolist(), photos.signers):
        letter = label_to_letter(label)
        n = kept.get((signer, label), 0)
        kept[(signer, label)] = n + 1
        if per_letter is not None and n >= per_letter:
            continue
        if signer not in held_out:
            target = dest / "train" / signer / letter
        elif n < TAUGHT_PER_LETTER:
            target = dest / "people" / signer / letter
        else:
            target = dest / "rest" / signer / letter
        target.mkdir(parents=True, exist_ok=True)
        name = f"{signer}-{Path(path).name}"
        signer_of[name] = signer
        shutil.copy2(path, target / name)
        if signer in held_out and n >= TAUGHT_PER_LETTER and signer not in untested:
            (dest / "test" / letter).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / "test" / letter / name)
    return ({"train": dest / "train", "test": dest / "test", "people": dest / "people", "rest": dest / "rest"},
            signer_of)


def figures(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """The in-process part: before/after per held-out signer, the others' change, for each teach weight."""
    import keras

    from asl_mlops.config import TrainConfig
    from asl_mlops.data.photos import load_photo_folder
    from asl_mlops.training import photo_inputs as photo_data
    from asl_mlops.hands.landmarker import hand_model_path
    from asl_mlops.training.evaluate import predict_probabilities
    from asl_mlops.training.fit import fit
    from asl_mlops.training.photo_inputs import photo_inputs
    from asl_mlops.training.models import build_model

    folders, signer_of = split_folders(load_photo_folder(args.data), args.held_out, work, args.per_letter)
    model_file, cache = hand_model_path(), args.cache_dir
    train_set, test_set = load_photo_folder(folders["train"]), load_photo_folder(folders["test"])
    train_hands = photo_data.detect(train_set, model_file, cache, "training photos").hands
    test_hands = photo_data.detect(test_set, model_file, cache, "test photos").hands
    test_signers = np.array([signer_of[Path(p).name] for p in test_set.paths])
    config = TrainConfig(train_data=str(folders["train"]), test_data=str(folders["test"]), architecture="keypoints",
                         cache_dir=str(cache), **({"epochs": args.epochs} if args.epochs else {}))

    base_weights: list = []

    def accuracy_by_signer(taught=None, variant: str = "retrain") -> tuple[dict[str, float], float]:
        data = photo_inputs(train_set, train_hands, test_set, test_hands, config, taught)
        if variant == "copies20" and taught is not None:  # the taught photos with 20 turned copies, not 5
            person, hands, weight = taught
            x_t, y_t, w_t = photo_data.augmented_training_features(
                tuple(hands), person.labels, config.split_seed + 1, copies=20,
                weights=np.full(len(person), weight * 6 / 21, dtype=np.float32))
            n = len(data.x_train) - int(sum(h is not None for h in hands)) * (photo_data.AUGMENT_COPIES + 1)
            data = data.__class__(**{**data.__dict__, "x_train": np.concatenate([data.x_train[:n], x_t]),
                                     "y_train": np.concatenate([data.y_train[:n], y_t]),
                                     "w_train": np.concatenate([data.w_train[:n], w_t])})
        keras.utils.set_random_seed(config.seed)
        model = build_model(config)
        start = time.perf_counter()
        if variant == "finetune" and taught is not None:  # from the champion's weights, a few epochs at a lower rate
            model.set_weights(base_weights)
            fit(model, data, config.replace(epochs=FINETUNE_EPOCHS, learning_rate=config.learning_rate / 3))
        else:
            fit(model, data, config)
        if taught is None:
            base_weights[:] = model.get_weights()
        seconds = time.perf_counter() - start
        predicted = np.full(len(test_set), -1)
        predicted[data.test_found] = predict_probabilities(model, data.x_test[data.test_found]).argmax(axis=1)
        right = predicted == data.y_test
        keras.backend.clear_session()
        return {s: float(right[test_signers == s].mean()) for s in args.held_out}, seconds

    before, base_seconds = accuracy_by_signer()
    print(f"champion: {before} ({base_seconds:.0f} s)", flush=True)
    results: dict[str, object] = {"held_out": list(args.held_out), "taught_per_letter": TAUGHT_PER_LETTER,
                                  "train_photos": len(train_set), "scored_photos": len(test_set),
                                  "scored_by_signer": {s: int((test_signers == s).sum()) for s in args.held_out},
                                  "epochs": config.epochs, "before": before, "base_fit_seconds": base_seconds,
                                  "weights": {}}
    for weight, variant in [(w, v) for v in args.variants for w in args.weights]:
        rows = {}
        for signer in args.held_out:
            person = load_photo_folder(folders["people"] / signer)
            hands = photo_data.detect(person, model_file, cache, f"{signer}'s taught photos").hands
            after, seconds = accuracy_by_signer((person, hands, weight), variant)
            others = [s for s in args.held_out if s != signer]
            change = float(np.mean([after[s] - before[s] for s in others]))
            rows[signer] = {"before": before[signer], "after": after[signer], "others_change": change,
                            "others_after": {s: after[s] for s in others}, "fit_seconds": seconds}
            print(f"{variant} weight {weight:g} {signer:18s} {before[signer]:.3f} -> {after[signer]:.3f}, others {change:+.4f}",
                  flush=True)
        results["weights"][str(weight) if variant == "retrain" else f"{variant}-{weight:g}"] = {
            "by_signer": rows, "mean_after": float(np.mean([r["after"] for r in rows.values()])),
            "worst_after": float(min(r["after"] for r in rows.values())),
            "mean_others_change": float(np.mean([r["others_change"] for r in rows.values()])),
            "worst_others_change": float(min(r["others_change"] for r in rows.values()))}
    return results


class Client(threading.Thread):
    """Posts one photo again and again, `pause` seconds apart: (time, milliseconds, status, x-model-version) of each
    answer."""

    def __init__(self, url: str, photo: Path, pause: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.answers, self.stop, self.pause = url, [], threading.Event(), pause
        self.body = {"dataframe_split": {"columns": ["image"],
                                         "data": [[base64.b64encode(photo.read_bytes()).decode()]]}}

    def run(self) -> None:
        import requests

        with requests.Session() as session:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    answer = session.post(f"{self.url}/invocations", json=self.body, timeout=60)
                    self.answers.append((time.time(), 1e3 * (time.perf_counter() - start), answer.status_code,
                                         answer.headers.get("x-model-version")))
                except requests.RequestException as err:
                    self.answers.append((time.time(), 1e3 * (time.perf_counter() - start), type(err).__name__, None))
                time.sleep(self.pause)


def latency_summary(answers: list) -> dict[str, object]:
    ms = sorted(a[1] for a in answers)
    if not ms:
        return {"requests": 0}
    return {"requests": len(ms), "p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "max_ms": ms[-1], "failed": sum(1 for a in answers if a[2] != 200)}


def live(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """The end-to-end part: train and register a champion, serve it, teach one signer, time until the switch."""
    import requests

    from asl_mlops.data.photos import load_photo_folder

    # The champion's test photos are the other people's: the taught signer's are scored apart (its report).
    folders, _ = split_folders(load_photo_folder(args.data), args.held_out, work, args.per_letter,
                               untested=args.held_out[:1])
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
           "MLFLOW_REGISTRY_URI": f"sqlite:///{work}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = [sys.executable, "-m", "asl_mlops"]
    train = [*cli, "train", "--train-data", str(folders["train"]), "--test-data", str(folders["test"]),
             "--cache-dir", str(args.cache_dir.resolve()), "--register", "true"]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    start = time.perf_counter()
    done = subprocess.run(train, env=env, cwd=work, capture_output=True, text=True)
    train_seconds = time.perf_counter() - start
    print(done.stdout[-1500:], flush=True)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_REGISTRY_URI"])
    if "champion" not in client.get_registered_model("asl-recognizer").aliases:
        subprocess.run([*cli, "registry", "promote", "1"], env=env, cwd=work, check=True, capture_output=True)
    port = 5000 + os.getpid() % 1000
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - closed with the server
    server = subprocess.Popen([*cli, "serve", "--port", str(port), "--poll-seconds", str(args.poll_seconds),
                               *(["--workers", "1"] if args.tiny else [])],
                              env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError((work / "serve.log").read_text()[-3000:])
            time.sleep(0.5)
        signer = args.held_out[0]
        photo = next((folders["rest"] / signer).rglob("*.jpg"), None) or next((folders["rest"] / signer).rglob("*.*"))
        client_thread = Client(url, photo, pause=0.25 if args.tiny else 0.05)
        client_thread.start()
        time.sleep(args.settle_seconds / 2)
        command = [*cli, "teach", str(folders["people"] / signer),
                   # a tiny model reads few photos right: the gate passes it anyway, so the switch is timed
                   *(["--min-taught-accuracy", "0", "--max-others-drop", "1"] if args.tiny else [])]
        start = time.time()
        taught = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        teach_done = time.time()
        print(taught.stdout[-2500:], taught.stderr[-1500:] if taught.returncode not in (0, 1) else "", flush=True)
        new_version = str(client.get_model_version_by_alias("asl-recognizer", "champion").version)
        switched = None
        deadline = time.monotonic() + 120
        while switched is None and time.monotonic() < deadline and taught.returncode == 0:
            switched = next((a[0] for a in client_thread.answers if a[3] == new_version), None)
            time.sleep(0.2)
        time.sleep(args.settle_seconds / 2)
        # Switches alone, with no training beside them: move the alias back and forth by hand, each time recording the
        # latencies from the move until --settle-seconds after it (the server checks every --poll-seconds).
        moves = []
        for version in ("1", new_version) * args.moves if taught.returncode == 0 else ():
            moved = time.time()
            subprocess.run([*cli, "registry", "promote", version], env=env, cwd=work, check=True, capture_output=True)
            time.sleep(args.poll_seconds + args.settle_seconds)
            window = [a for a in client_thread.answers if moved <= a[0] < time.time()]
            first = next((a[0] for a in window if a[3] == version), None)
            moves.append({"to_version": version, "seconds_to_switch": None if first is None else first - moved,
                          **latency_summary(window)})
        client_thread.stop.set()
        client_thread.join(timeout=60)
        answers = client_thread.answers
        switch_lines = [line for line in (work / "serve.log").read_text().splitlines() if "switched" in line]
        return {"signer": signer, "command": " ".join(command[2:]), "exit_code": taught.returncode,
                "report": taught.stdout.strip().splitlines()[-12:], "champion_train_seconds": train_seconds,
                "teach_command_seconds": teach_done - start,
                "command_to_served_switch_seconds": None if switched is None else switched - start,
                "switch_log": switch_lines,
                "latency_before_teach": latency_summary([a for a in answers if a[0] < start]),
                "latency_during_teach": latency_summary([a for a in answers if start <= a[0] < teach_done]),
                "latency_from_teach_end_to_switch_plus_5s": latency_summary(
                    [a for a in answers if teach_done <= a[0] < (switched or teach_done) + 5]),
                "switches_by_hand": moves,
                "load_average_at_end": os.getloadavg(),
                "failed_requests": sum(1 for a in answers if a[2] != 200), "requests": len(answers),
                "versions_seen": sorted({str(a[3]) for a in answers})}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hands"), help="Photo folder naming signers.")
    parser.add_argument("--part", choices=["figures", "live", "both"], default="both", help="Which part to run.")
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT), help="Signers held out of the champion.")
    parser.add_argument("--weights", type=float, nargs="+", default=[3.0, 10.0, 30.0],
                        help="Teach weights to compare (figures part).")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["retrain"],
                        help="How the photos are taught (figures part; see VARIANTS).")
    parser.add_argument("--epochs", type=int, default=None, help="Training epochs (default: the shipped recipe's).")
    parser.add_argument("--per-letter", type=int, default=None,
                        help="Keep at most this many photos per signer and letter.")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="The server's alias check interval (live).")
    parser.add_argument("--settle-seconds", type=float, default=10.0,
                        help="Seconds of requests recorded after each switch by hand (plus --poll-seconds), and "
                             "half of it before teach and after its switch (live).")
    parser.add_argument("--moves", type=int, default=2,
                        help="Times the alias is moved back to version 1 and forth again by hand (live).")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="Hand detection cache.")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke test: a few real photos of 4 signers (2 held out, 6 photos of each letter), one "
                             "epoch, one weight, the gate's floors at 0, one server worker, a request every 0.25 s, "
                             "one move back and forth, a temporary cache.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/teach.json"), help="JSON to write.")
    args = parser.parse_args()
    if args.tiny:
        import tiny

        work = tiny.folder("teach")
        args.held_out = ["massey-hand2", "t32rahman"]
        tiny.hands(work / "hands", ("massey-hand1", "muneeb"), per_letter=2)  # the champion's training photos
        args.data = tiny.hands(work / "hands", tuple(args.held_out), per_letter=TAUGHT_PER_LETTER + 1)
        args.cache_dir, args.per_letter, args.epochs, args.weights = work / "cache", None, 1, [10.0]
        args.poll_seconds, args.settle_seconds, args.moves = 1.0, 2.0, 1
    args.held_out = tuple(args.held_out)
    args.out = args.out.resolve()
    from provenance import stamped, write_results

    from asl_mlops.quiet_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    results: dict[str, object] = {"data": str(args.data), "tiny": args.tiny}
    with tempfile.TemporaryDirectory(prefix="teach-bench-") as tmp:
        if args.part in ("figures", "both"):
            results["figures"] = figures(args, Path(tmp) / "figures")
            write_results(args.out, stamped(results))
        if args.part in ("live", "both"):
            results["live"] = live(args, Path(tmp) / "live")
            write_results(args.out, stamped(results))
    print(json.dumps({k: v for k, v in results.get("live", {}).items() if k != "report"}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
