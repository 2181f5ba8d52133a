"""Teaching stage: `asl-mlops teach PHOTOS` adds one person's photos to the champion photo recognizer.

1. Reads the champion of the registered model, and from its run the training config and data it was trained on
   (the folders must be here, unchanged: their content hashes are compared).
2. Keeps the person's last `held_out_per_letter` photos of each letter out, for the gate; the rest are taught.
3. Trains a new recognizer exactly as the champion was trained, with the taught photos added to the training data,
   each weighing `teach_weight` average training photos: one MLflow run, with the person's photos as a dataset
   input (context `teaching`), its params `taught_signer` and `teach_*`.
4. Registers it (alias `challenger`) and runs the teach gate (`taught_checks`):
   - `taught_accuracy`: the new version, loaded as it is served, on the person's held-out photos;
   - `others_drop`: how far its accuracy on the champion's test photos (other people) fell below the champion's,
     both measured by their training runs on the same photos (the content hashes are compared);
   - `serving_latency`: it loads and answers its input example in a fresh process, as in `registry validate`.
5. Moves `champion` to it if every check passed and the champion did not move meanwhile. A server following
   `models:/NAME@champion` switches to it on its next check (`asl-mlops serve --poll-seconds`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from asl_mlops.config import GateConfig, TeachConfig, TrainConfig
from asl_mlops.data.photos import PhotoSet, load_photo_folder
from asl_mlops.errors import InputError
from asl_mlops.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    current_champion,
    no_version_with,
    only_model_name,
    register,
    registry_lock,
)
from asl_mlops.gate import (
    Check,
    Verdict,
    floor_check,
    latency_check,
    log_evaluation_run,
    predict_letters,
    serving_check,
    write_verdict,
)

logger = logging.getLogger(__name__)

#: The run param listing every person a taught recognizer was taught: JSON {folder: content hash of its photos}.
TAUGHT_PEOPLE_PARAM = "taught_people"
#: The longest param value MLflow stores.
MAX_PARAM_CHARS = 6000


@dataclass(frozen=True)
class TeachResult:
    """What `teach` did: the person, the run, the version and the gate's verdict, with the figures it printed."""

    signer: str
    run_id: str
    taught: int  # photos taught
    held_out: int  # photos kept for the gate
    verdict: Verdict
    champion_version: str  # the champion that was taught
    before: float | None  # the champion's accuracy on the held-out photos (None: none held out)
    earlier_people: int = 0  # people taught before, taught again with this one

    def report(self) -> str:
        """What `asl-mlops teach` prints."""
        before = f"; the champion v{self.champion_version} read {self.before:.1%} of them" if self.before is not None \
            else ""
        n = self.earlier_people
        earlier = f" (and {n} {'person' if n == 1 else 'people'} taught before)" if n else ""
        return (f"taught {self.signer}{earlier}: {self.taught} photos taught, {self.held_out} held out for the gate"
                f"{before}\n"
                f"run {self.run_id} -> {self.verdict.model_name} v{self.verdict.version}\n{self.verdict.report()}")


def person_split(photos: PhotoSet, held_out_per_letter: int) -> tuple[np.ndarray, np.ndarray]:
    """(taught, held-out) indices: the last `held_out_per_letter` photos of each letter by path (teach mode names
    them by time, so the last are the latest) are held out, unless that would leave the letter none to teach."""
    taught, held = [], []
    for label in np.unique(photos.labels):
        members = [i for i in np.flatnonzero(photos.labels == label)]
        members.sort(key=lambda i: str(photos.paths[i]))
        keep = held_out_per_letter if len(members) > held_out_per_letter else 0
        taught += members[:len(members) - keep]
        held += members[len(members) - keep:]
    return np.array(sorted(taught), dtype=np.int64), np.array(sorted(held), dtype=np.int64)


def champion_training(model_name: str, client: MlflowClient) -> tuple[mlflow.entities.model_registry.ModelVersion,
                                                                       mlflow.entities.Run, TrainConfig]:
    """The champion, its run and the config it was trained with; InputError saying what is missing."""
    champion = current_champion(model_name, client)
    if champion is None:
        raise InputError(f"nothing to teach: {no_version_with(model_name, CHAMPION, client, uri_option=False)}")
    if not champion.run_id:
        raise InputError(f"{model_name} v{champion.version} has no training run recorded: it cannot be retrained")
    run = client.get_run(champion.run_id)
    params = run.data.params
    if params.get("resolved_architecture") != "keypoints":
        raise InputError(f"{model_name} v{champion.version} is a Sign MNIST recognizer "
                         f"({params.get('resolved_architecture', '?')}): only a photo recognizer can be taught photos")
    config = TrainConfig.from_params(params)
    for what in ("train_data", "test_data"):
        path = getattr(config, what)
        if not Path(path).is_dir():
            raise InputError(f"{model_name} v{champion.version} was trained with {what} {path} (run {run.info.run_id}), "
                             "which is not a folder here: teaching retrains from the champion's own training data, "
                             "so run `asl-mlops teach` where that folder is (the same path, relative to this folder)")
    return champion, run, config


def taught_people(params: dict[str, str]) -> dict[str, str]:
    """The people a run's recognizer was taught (folder -> content hash of their photos), from its params."""
    try:
        people = json.loads(params.get(TAUGHT_PEOPLE_PARAM, "{}"))
    except json.JSONDecodeError:
        raise InputError(f"param {TAUGHT_PEOPLE_PARAM} of the champion's run is not the JSON teach writes") from None
    return {str(k): str(v) for k, v in people.items()}


def load_earlier(folder: str, model_name: str, version: str) -> PhotoSet:
    """One earlier taught person's photos, as the champion's run recorded their folder; InputError if gone."""
    if not Path(folder).is_dir():
        raise InputError(f"{model_name} v{version} was also taught the photos in {folder}, which is not a folder "
                         "here: teaching keeps what earlier teaching taught, so run `asl-mlops teach` where those "
                         "folders are")
    return load_photo_folder(folder)


def combined(sets: list[PhotoSet]) -> PhotoSet:
    """Several people's photo sets as one (each photo's signer is its folder's name)."""
    roots = [str(Path(s.root).resolve()) for s in sets]
    return PhotoSet(root=os.path.commonpath(roots), paths=tuple(Path(p).resolve() for s in sets for p in s.paths),
                    labels=np.concatenate([s.labels for s in sets]),
                    file_hashes=tuple(h for s in sets for h in s.file_hashes),
                    signers=tuple(Path(s.root).resolve().name for s in sets for _ in s.paths), layout="signers")


def teach(photos_dir: str | Path, settings: TeachConfig = TeachConfig(), gate: GateConfig = GateConfig()
          ) -> TeachResult | None:
    """Teach the champion of `settings.model_name` (empty: the only registered model) one person's photos (see the
    module docstring), keeping every person it was taught before (their folders, as its run recorded them). None
    when these very photos are already in the champion: nothing is trained."""
    person = load_photo_folder(photos_dir)  # bad photos fail here, before anything is trained or logged
    if person.layout != "letters":
        names = person.named_signers
        raise InputError(f"{photos_dir} holds the photos of {len(names)} people ({', '.join(names[:5])}"
                         f"{', ...' if len(names) > 5 else ''}): teach one person at a time, e.g. `asl-mlops teach "
                         f"{Path(photos_dir) / names[0]}` (one person's letter folders, PHOTOS/<LETTER>/*.jpg)")
    signer = Path(photos_dir).resolve().name
    settings = dataclasses.replace(settings, model_name=only_model_name(settings.model_name))
    client = MlflowClient()
    champion, run, config = champion_training(settings.model_name, client)
    folder = str(Path(photos_dir).resolve())
    earlier = taught_people(run.data.params)
    if earlier.get(folder) == person.content_hash:
        return None  # these very photos are already in the champion: nothing to teach
    earlier.pop(folder, None)
    earlier_sets = [load_earlier(path, settings.model_name, champion.version) for path in earlier]
    taught_index, held_index = person_split(person, settings.held_out_per_letter)
    taught, held = person.subset(taught_index), person.subset(held_index)
    earlier_taught, earlier_held = [], []
    for photos in earlier_sets:
        t, h = person_split(photos, settings.held_out_per_letter)
        earlier_taught.append(photos.subset(t))
        earlier_held.append(photos.subset(h))
    everyone = combined([*earlier_taught, taught])

    from asl_mlops.train import generate_run_name, train_and_evaluate
    from asl_mlops.training.inputs import Teaching, prepare_data

    data = prepare_data(config, Teaching(everyone, settings.teach_weight))
    for what in ("train_data_hash", "test_data_hash"):
        if data.params[what] != run.data.params.get(what):
            raise InputError(f"{getattr(config, what.removesuffix('_hash'))} has changed since {settings.model_name} "
                             f"v{champion.version} was trained on it ({what} {str(data.params[what])[:12]} here, "
                             f"{run.data.params.get(what, '?')[:12]} on run {run.info.run_id}): teaching retrains from "
                             "the champion's own data")
    people = json.dumps({**earlier, folder: person.content_hash})
    if len(people) > MAX_PARAM_CHARS:
        raise InputError(f"{settings.model_name} has been taught {len(earlier)} people: the list no longer fits in an "
                         "MLflow param; train it again with their photos as training data (signer folders)")
    params = {"taught_signer": signer, "teach_data": str(photos_dir), "taught_from_version": champion.version,
              "held_out_photos": len(held), "held_out_per_letter": settings.held_out_per_letter,
              "model_name": settings.model_name, TAUGHT_PEOPLE_PARAM: people,
              "taught_people_count": len(earlier) + 1}
    import pandas as pd

    from asl_mlops.labels import label_to_letter

    taught_frame = pd.DataFrame({"path": [str(p) for p in everyone.paths],
                                 "letter": [label_to_letter(label) for label in everyone.labels.tolist()],
                                 "signer": list(everyone.signers)})
    teaching_input = mlflow.data.from_pandas(taught_frame, source=folder, name=f"{signer}-taught",
                                             digest=everyone.content_hash[:16])
    result = train_and_evaluate(config, data, run_name=f"teach-{signer}-{generate_run_name()}",
                                tags={"source": "asl-mlops teach", "taught_signer": signer},
                                params=params, inputs={"teaching": teaching_input})
    registration = register(result.run_id, result.model_uri, settings.model_name,
                            tags={"source": "asl-mlops teach", "taught_signer": signer,
                                  "taught_from_version": champion.version},
                            description=f"v{champion.version} taught {len(taught)} photos of {signer} "
                                        f"(`asl-mlops teach {photos_dir}`), by MLflow run {result.run_id}.")
    verdict, before = validate_taught(registration.version, champion, held, settings, gate, client,
                                      combined(earlier_held) if earlier_held else None)
    return TeachResult(signer, result.run_id, len(taught), len(held), verdict, str(champion.version), before,
                       len(earlier))


def taught_checks(taught_accuracy: float | None, champion_test: float, test: float, latency_ms: float,
                  settings: TeachConfig, gate: GateConfig, serving_error: str = "",
                  earlier_accuracy: float | None = None) -> tuple[Check, ...]:
    """The teach gate's checks (pure): the person's held-out accuracy (None: no photo was held out), the people
    taught before on theirs (None: nobody was, and the check is left out), the drop on other people, the serving
    latency."""
    if taught_accuracy is None:
        person = Check("taught_accuracy", "no photo held out", f">= {settings.min_taught_accuracy:g}", False,
                       "no photo of the person was held out to check (give 2 or more photos of a letter)")
    else:
        person = floor_check("taught_accuracy", taught_accuracy, settings.min_taught_accuracy)
    earlier = () if earlier_accuracy is None else (
        floor_check("earlier_taught_accuracy", earlier_accuracy, settings.min_taught_accuracy),)
    drop = champion_test - test
    moved = f"fell {drop:.4f}" if drop > 0 else f"rose {-drop:.4f}" if drop < 0 else "same"
    others = Check("others_drop", f"{moved} ({champion_test:.4f} -> {test:.4f})",
                   f"<= {settings.max_others_drop:g}", drop <= settings.max_others_drop,
                   "" if drop <= settings.max_others_drop else
                   f"accuracy on other people fell {drop:.4f}, more than {settings.max_others_drop:g}")
    latency = latency_check(latency_ms, gate, serving_error)
    return (person, *earlier, others, latency)


def _letters_folder(photos: PhotoSet, dest: Path) -> Path:
    """Copies of `photos` as plain letter folders under `dest` (what the gate's evaluation reads)."""
    from asl_mlops.labels import label_to_letter

    for path, label in zip(photos.paths, photos.labels.tolist()):
        folder = dest / label_to_letter(label)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, folder / Path(path).name)
    return dest


def validate_taught(version: str, champion: "mlflow.entities.model_registry.ModelVersion", held: PhotoSet,
                    settings: TeachConfig, gate: GateConfig, client: MlflowClient,
                    earlier_held: PhotoSet | None = None) -> tuple[Verdict, float | None]:
    """Run the teach gate on `version`, record the verdict on it (tags, description, an evaluation run) and promote
    it if it passed and `champion` is still the champion; returns the verdict and the champion's accuracy on the
    held-out photos (the "before"). `earlier_held`: the held-out photos of the people taught before, which the
    new version must still read (`earlier_taught_accuracy`)."""
    name = settings.model_name
    target = client.get_model_version(name, version)
    uri = f"models:/{name}/{version}"
    champion_metrics = client.get_run(champion.run_id).data.metrics
    metrics = client.get_run(target.run_id).data.metrics
    extra: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="asl-mlops-teach-") as tmp:
        held_folder = _letters_folder(held, Path(tmp) / "held-out") if len(held) else None
        taught_accuracy = before = None
        y_true = y_pred = np.array([], dtype=object)
        if held_folder is not None:
            y_true, y_pred, _ = predict_letters(uri, str(held_folder))
            taught_accuracy = float(np.mean(y_true == y_pred))
            extra.update(taught_accuracy=taught_accuracy)
            try:  # the "before", for the record: a champion that no longer loads here does not stop the gate
                champ_true, champ_pred, _ = predict_letters(f"models:/{name}/{champion.version}", str(held_folder))
                before = float(np.mean(champ_true == champ_pred))
                extra.update(champion_taught_accuracy=before)
            except InputError as err:
                logger.warning("champion v%s not evaluated on the held-out photos: %s", champion.version, err)
        earlier_accuracy = None
        if earlier_held is not None and len(earlier_held):
            e_true, e_pred, _ = predict_letters(uri, str(_letters_folder(earlier_held, Path(tmp) / "earlier")))
            earlier_accuracy = float(np.mean(e_true == e_pred))
            extra.update(earlier_taught_accuracy=earlier_accuracy)
        serving_error = ""
        try:
            served = serving_check(uri)
        except InputError as err:
            serving_error, served = str(err), {"load_seconds": float("nan"), "latency_ms": float("inf")}
        checks = taught_checks(taught_accuracy, champion_metrics["test_accuracy"], metrics["test_accuracy"],
                               served["latency_ms"], settings, gate, serving_error, earlier_accuracy)
        extra.update(others_accuracy=metrics["test_accuracy"], champion_others_accuracy=champion_metrics["test_accuracy"],
                     **{k: v for k, v in served.items() if np.isfinite(v)})
        data = str(held.root) if held_folder is None else f"{held.root} (held-out photos)"
        verdict = Verdict(name, version, data, checks, None, False, "", served["load_seconds"], served["latency_ms"])
        run_id = (log_evaluation_run(target, data, y_true, y_pred, gate, extra) if held_folder is not None
                  else None)
    failed = ", ".join(f"{c.name} ({c.reason})" for c in checks if not c.passed)
    with registry_lock(name, client):
        now = current_champion(name, client)
        if failed:
            decision = f"not promoted: failed {failed}"
        elif now is None or str(now.version) != str(champion.version):
            decision = (f"not promoted: champion moved from v{champion.version} to "
                        f"{f'v{now.version}' if now else 'none'} while teaching; teach again")
        else:
            client.set_registered_model_alias(name, CHAMPION, version)
            if str((client.get_registered_model(name).aliases or {}).get(CHALLENGER)) == str(version):
                client.delete_registered_model_alias(name, CHALLENGER)
            decision = f"promoted: passed every check of the teach gate over champion v{champion.version}"
        client.set_model_version_tag(name, version, DECISION_TAG, decision)
        client.set_tag(target.run_id, DECISION_TAG, f"{name} v{version} {decision}")
    verdict = dataclasses.replace(verdict, evaluation_run_id=run_id, promoted=decision.startswith("promoted"),
                                  decision=decision)
    write_verdict(verdict, client)
    logger.info("%s version %s: teach gate %s; %s", name, version, verdict.status, decision)
    return verdict, before
