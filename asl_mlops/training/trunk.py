"""Trunk-feature training: train only the trainable tail of a partly frozen network on cached outputs of
its frozen trunk.

The original ResNet50 design fine-tunes from `conv5_block3_3_conv` on; everything before it is frozen
(BatchNorm in inference mode), so it is a fixed function of the input. `split_at_trainable` finds that
split from the graph: the tail is every layer with trainable weights plus everything downstream of one,
the trunk is the rest, and the boundary is the set of trunk outputs the tail consumes (at 32x32 input:
`conv5_block3_2_relu`, 1x1x512, and the residual `conv5_block2_out`, 1x1x2048). The tail model shares
its layers, hence its weights, with the full network: training it trains the full network, which is what
is logged, registered and served. tail(trunk(x)) is the full network's function exactly. The trunk starts at
the network's input, raw pixels, so it includes the preprocessing layers (resize, gray -> RGB, mean).

Augmentation acts on the input, before the trunk, so it cannot be applied to cached features. Instead
each training image gets `trunk_views` augmented views, drawn once with the run's seed by the same
augmentation layers and pushed through the trunk; each epoch trains on one randomly chosen view per
image (`ViewBatches`). Fresh per-step augmentation would show each image a new variant every epoch;
with K views the model sees at most K variants of each. Without augmentation there is one view, the
plain image, and the math is that of uncached training.

Features are cached under `cache_dir` as .npy files (one per boundary tensor and view) read by memory
map, so memory holds a batch, not the views. An entry is keyed by the input pixels' hash, the trunk's
identity (weights file hash, or 'imagenet', or 'none' with the seed that initialised it, and the Keras
version), the boundary, the augmentation settings, the seed and the view index. Files are streamed to a
temp file and renamed; the entry's manifest is written last, so a crash leaves nothing a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.files import atomic_write, give_umask_mode
from asl_mlops.training.augment import build_augmentation

logger = logging.getLogger(__name__)

#: Bumped whenever the features or their layout change, so old cache entries miss.
TRUNK_CACHE_VERSION = 2  # 2: the trunk starts at raw pixels (preprocessing inside the model)
EXTRACT_BATCH = 256


@dataclass(frozen=True)
class TrunkSplit:
    """A network split at its first trainable layer: full(x) == tail(trunk(x))."""

    trunk: keras.Model  # input -> boundary tensors; no trainable weights
    tail: keras.Model  # boundary tensors -> output; shares its layers with the full network
    boundary: tuple[str, ...]  # names of the trunk layers whose outputs the tail takes, in tail input order


def split_at_trainable(model: keras.Model) -> TrunkSplit:
    """Split a functional `model` into its frozen trunk and its trainable tail, from the graph.

    Goes through `model.layers` (a functional model's layers in graph order, each after the layers it takes
    inputs from), matching each layer's `input` tensors to the `output` tensors of the layers before it: a
    layer is in the tail if it has trainable weights or takes a tail layer's output; the boundary is every
    trunk output a tail layer takes. Each layer must be called once, inside `model` (as in the networks
    asl_mlops.training.models builds); one that takes a tensor from outside the model is an error."""
    producers = {id(t): t.name for t in model.inputs}  # id of a symbolic tensor -> name of the layer outputting it
    tail: set[str] = set()
    boundary: list = []  # trunk tensors that tail layers take, in the order the tail first takes them
    for layer in model.layers:
        inputs = [] if isinstance(layer, keras.layers.InputLayer) else keras.tree.flatten(layer.input)
        if any(id(t) not in producers for t in inputs):
            raise ValueError(f"model {model.name}: layer {layer.name} takes a tensor that no earlier layer of the "
                             "model outputs (is it called more than once?): cannot split the model")
        if layer.trainable_weights or any(producers[id(t)] in tail for t in inputs):
            tail.add(layer.name)
            for tensor in inputs:
                if producers[id(tensor)] not in tail and all(tensor is not b for b in boundary):
                    boundary.append(tensor)
        for tensor in keras.tree.flatten(layer.output):
            producers[id(tensor)] = layer.name
    if not tail:
        raise ValueError(f"model {model.name} has no trainable layer to split at")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a single tensor in, as callers pass it
    trunk = keras.Model(inputs, boundary, name=f"{model.name}_trunk")
    if trunk.trainable_weights:
        raise ValueError(f"{model.name}: layers before the split are trainable "
                         f"({[w.path for w in trunk.trainable_weights][:3]}...): cannot cache the trunk")
    tail_model = keras.Model(boundary, model.outputs, name=f"{model.name}_tail")
    return TrunkSplit(trunk, tail_model, tuple(producers[id(t)] for t in boundary))


def weights_identity(config: TrainConfig) -> str:
    """What fixes the trunk's weights: the ImageNet release, a local file's content, or the seed of a random
    initialisation; with the Keras version that builds the network."""
    weights = config.resolved_weights
    if weights == "imagenet":
        identity = "imagenet"
    elif weights == "none":
        identity = f"none(seed={config.seed})"
    else:
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        identity = f"file:{digest.hexdigest()}"
    return f"{identity};keras={keras.__version__}"


def augmentation_settings(config: TrainConfig) -> dict[str, object]:
    """The settings that change the augmented views (none when augmentation is off)."""
    if build_augmentation(config) is None:
        return {"augment": False}
    return {"augment": True, "flip_horizontal": config.flip_horizontal, "flip_vertical": config.flip_vertical,
            "brightness": config.brightness, "contrast": config.contrast, "rotation": config.rotation,
            "zoom": config.zoom, "translation": config.translation, "seed": config.seed}


def entry_key(x: np.ndarray, config: TrainConfig, boundary: tuple[str, ...], view: int | None) -> str:
    """The cache key of one view (None: the plain, unaugmented images) of the inputs `x`."""
    settings = {"version": TRUNK_CACHE_VERSION, "architecture": config.resolved_architecture,
                "weights": weights_identity(config), "boundary": list(boundary),
                "augmentation": augmentation_settings(config) if view is not None else {"augment": False},
                "view": view}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(str(x.shape).encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()[:32]


def _files(cache_dir: Path, key: str, count: int) -> tuple[Path, list[Path]]:
    return cache_dir / f"trunk-{key}.json", [cache_dir / f"trunk-{key}-{i}.npy" for i in range(count)]


def _load(cache_dir: Path, key: str, shapes: list[tuple[int, ...]]) -> list[np.ndarray] | None:
    manifest, files = _files(cache_dir, key, len(shapes))
    if not manifest.exists():
        return None
    try:
        arrays = [np.load(f, mmap_mode="r", allow_pickle=False) for f in files]
    except (ValueError, OSError, EOFError) as err:
        logger.warning("trunk cache: entry %s unreadable (%s); extracting again", key, err)
        return None
    if [a.shape for a in arrays] != shapes:
        logger.warning("trunk cache: entry %s has shapes %s, not %s; extracting again", key,
                       [a.shape for a in arrays], shapes)
        return None
    return arrays


def _extract(trunk: keras.Model, x: np.ndarray, augmentation: keras.Sequential | None, cache_dir: Path,
             key: str, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Run the trunk over `x` (augmented first, if given) in batches, streaming each output to a memory-mapped
    temp file; rename them into place, then write the manifest."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest, files = _files(cache_dir, key, len(shapes))
    manifest.unlink(missing_ok=True)  # an entry being rewritten is not trusted meanwhile
    temps = [Path(tempfile.mkstemp(dir=cache_dir, prefix=f.name + ".", suffix=".tmp")[1]) for f in files]
    try:
        outputs = [np.lib.format.open_memmap(t, mode="w+", dtype=np.float32, shape=s) for t, s in zip(temps, shapes)]
        for start in range(0, len(x), EXTRACT_BATCH):
            batch = x[start:start + EXTRACT_BATCH]
            if augmentation is not None:
                batch = augmentation(batch, training=True)
            features = trunk(batch, training=False)
            for out, feature in zip(outputs, features):
                out[start:start + len(batch)] = keras.ops.convert_to_numpy(feature)
        for out, temp, final in zip(outputs, temps, files):
            out.flush()
            del out
            give_umask_mode(temp)
            os.replace(temp, final)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    with atomic_write(manifest) as f:
        f.write(json.dumps({"key": key, "files": [p.name for p in files], "shapes": shapes}).encode())
    return [np.load(f, mmap_mode="r", allow_pickle=False) for f in files]


@dataclass(frozen=True)
class TrunkFeatures:
    """Cached trunk outputs: `views[k][i]` is boundary tensor i of training view k; `val[i]` the plain
    validation features."""

    views: list[list[np.ndarray]]
    val: list[np.ndarray]
    hits: int
    misses: int
    seconds: float


def trunk_cache_dir(config: TrainConfig) -> Path:
    """Where a run's trunk features go: `<cache_dir>/trunk`."""
    return Path(config.cache_dir) / "trunk"


def check_cache_dir(cache_dir: str | Path) -> None:
    """Make sure features can be written under `cache_dir` (creating it); InputError naming it otherwise.
    Called before a run starts, so a bad --cache-dir leaves no run behind."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".write-check-"):
            pass
    except OSError as err:
        raise unwritable(cache_dir, err) from None


def unwritable(cache_dir: Path, err: OSError) -> InputError:
    """The error for a cache folder that features cannot be written to."""
    return InputError(f"cache_dir {cache_dir}: cannot write the trunk-feature cache there ({err.strerror or err}); "
                      "pass a writable --cache-dir (MLproject: -P cache_dir=...)")


def trunk_features(split: TrunkSplit, x_train: np.ndarray, x_val: np.ndarray, config: TrainConfig,
                   cache_dir: str | Path) -> TrunkFeatures:
    """Training views and validation features of `split.trunk`, from the cache or extracted into it."""
    start = time.perf_counter()
    cache_dir = Path(cache_dir)
    out_shapes = [tuple(t.shape[1:]) for t in split.trunk.outputs]
    augmented = build_augmentation(config) is not None
    jobs = [(x_val, None)] + ([(x_train, k) for k in range(config.trunk_views)] if augmented else [(x_train, None)])
    hits = misses = 0
    results = []
    for x, view in jobs:
        key = entry_key(x, config, split.boundary, view)
        shapes = [(len(x), *s) for s in out_shapes]
        arrays = _load(cache_dir, key, shapes)
        if arrays is None:
            misses += 1
            # The view's own seed: views differ from each other and are the same in every run with this seed.
            augmentation = None
            if view is not None:
                augmentation = build_augmentation(config.replace(seed=config.seed * 1000 + view))
            logger.info("trunk cache miss: extracting %s (%d images)", "validation" if x is x_val else
                        f"training view {view}" if view is not None else "training images", len(x))
            try:
                arrays = _extract(split.trunk, x, augmentation, cache_dir, key, shapes)
            except OSError as err:
                raise unwritable(cache_dir, err) from None
        else:
            hits += 1
        results.append(arrays)
    seconds = time.perf_counter() - start
    logger.info("trunk features: %d cache hits, %d misses, %.1f s", hits, misses, seconds)
    return TrunkFeatures(results[1:], results[0], hits, misses, seconds)


class ViewBatches(keras.utils.PyDataset):
    """Shuffled training batches of cached trunk features, one randomly chosen view per image per epoch."""

    def __init__(self, views: list[list[np.ndarray]], y: np.ndarray, batch_size: int, seed: int) -> None:
        super().__init__()
        self.views, self.y, self.batch_size = views, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.y))
        self.choice = self.rng.integers(0, len(self.views), len(self.y))

    def __getitem__(self, index: int):
        ids = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        chosen = self.choice[ids]
        inputs = []
        for i in range(len(self.views[0])):
            batch = np.empty((len(ids), *self.views[0][i].shape[1:]), dtype=np.float32)
            for k in np.unique(chosen):
                mask = chosen == k
                batch[mask] = self.views[k][i][ids[mask]]
            inputs.append(batch)
        return tuple(inputs), self.y[ids]


def uses_trunk_cache(config: TrainConfig) -> bool:
    """Whether a run trains on cached trunk features (resnet50 with trunk_cache on)."""
    return config.resolved_architecture == "resnet50" and config.trunk_cache
